"""The warm stage server (nncompress/warm.py): a served run is the cold run, only sooner.

Each test gives its server a private temporary folder (TMPDIR) and a short idle time, so servers
neither meet other tests' nor outlive the test for long.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nncompress import warm

SCRIPT = """\
from nncompress.warm import delegate

delegate(__name__)

import atexit
import os
import signal
import sys
import threading

import nncompress.warm
from nncompress.fileio import write_text

print("served" if nncompress.warm._SERVED else "cold", file=sys.stderr)
print(sys.argv, os.getcwd(), os.environ.get("CHOSEN"), sys.path[0] == os.path.dirname(os.path.realpath(__file__)))
print(type(__loader__).__name__, __spec__, signal.getsignal(signal.SIGHUP) == signal.SIG_IGN)
print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)
write_text("out.txt", "x")
print(oct(os.stat("out.txt").st_mode & 0o777), sys.stdout.line_buffering, sys.stderr.line_buffering, sys.stdout.name)
print("to stderr", file=sys.stderr)
atexit.register(lambda: print("atexit ran"))
threading.Thread(target=lambda: print("thread joined")).start()
sys.exit(int(sys.argv[1]))
"""


@pytest.fixture
def place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    # A socket's path has at most 107 bytes: pytest's tmp_path is too long to hold one.
    tmp = Path(tempfile.mkdtemp(prefix="w", dir="/tmp"))
    (tmp_path / "tmp").symlink_to(tmp)
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setenv("NNCOMPRESS_WARM_IDLE", "20")
    monkeypatch.delenv("NNCOMPRESS_WARM", raising=False)
    (tmp_path / "work").mkdir()
    (tmp_path / "script.py").write_text(SCRIPT)
    yield tmp_path
    shutil.rmtree(tmp, ignore_errors=True)


def run_script(
    place: Path, *args: str, umask: int = 0o027, nohup: bool = False, **env: str
) -> subprocess.CompletedProcess[str]:
    def prepare() -> None:
        os.umask(umask)
        if nohup:  # as `nohup cmd &` in a script: hang-ups and interrupts ignored
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        else:
            _default_signals()

    return subprocess.run(
        [sys.executable, "../script.py", *args],
        cwd=place / "work",
        env={**os.environ, "CHOSEN": "x", **env},
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=prepare,
    )


def start_script(place: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "CHOSEN": "x"}  # as run_script's: the same server
    args_ = [sys.executable, "../script.py", *args]
    return subprocess.Popen(
        args_, cwd=place / "work", env=env, stdout=subprocess.PIPE, text=True, preexec_fn=_default_signals
    )


def _default_signals() -> None:
    """Ctrl-C and hang-ups handled as in a terminal, even where pytest runs with them ignored (in a
    script's background job)."""
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def sockets(place: Path) -> list[Path]:
    return list((place / "tmp").glob("nncompress-warm-*/*.sock"))


def wait_for_server(place: Path, up: bool = True) -> None:
    """Until a server listens (or, with up=False, none does any more)."""
    deadline = time.monotonic() + 60
    while bool(sockets(place)) != up:
        assert time.monotonic() < deadline, "no server started" if up else "the server still listens"
        time.sleep(0.1)


def test_a_served_run_is_the_cold_run(place: Path) -> None:
    """The same output, exit status, argv (as typed), cwd, environment, __main__, file modes (the
    client's umask, not the server's), ignored signals (nohup), stream buffering, atexit, threads."""
    first = run_script(place, "3", umask=0o022, nohup=True)  # starts a server and runs cold meanwhile
    assert first.stderr.splitlines()[0] == "cold"
    wait_for_server(place)
    for umask, nohup in ((0o027, False), (0o077, True)):
        cold = run_script(place, "3", umask=umask, nohup=nohup, NNCOMPRESS_WARM="0")
        assert cold.stderr.splitlines()[0] == "cold"
        served = run_script(place, "3", umask=umask, nohup=nohup)
        assert served.stderr.splitlines()[0] == "served"
        assert served.returncode == cold.returncode == 3
        assert served.stdout == cold.stdout
        assert served.stderr.splitlines()[1:] == cold.stderr.splitlines()[1:]
        expected = f"['../script.py', '3'] {place / 'work'} x True\nSourceFileLoader None {nohup}\n{not nohup}\n"
        expected += f"{oct(0o666 & ~umask)} "
        assert cold.stdout.startswith(expected)
        assert "atexit ran" in cold.stdout and "thread joined" in cold.stdout


def test_the_export_stages_modules_are_imported_once_the_first_run_is_forked(place: Path) -> None:
    """The server is ready before it imports LATER; the runs after the first served one find them
    imported, and still start as a cold run does: torch's threads and the warning filters (and the
    server still serves: no import started a thread). (torch's initial seed is random in every
    process, served or cold: every stage seeds.)"""
    (place / "script.py").write_text(
        "from nncompress.warm import delegate\n"
        "delegate(__name__)\n"
        "import sys, warnings\n"
        "import torch\n"
        "from nncompress import warm\n"
        "print(warm._SERVED, all(m in sys.modules for m in warm.LATER))\n"
        "print(torch.get_num_threads(), warnings.filters)\n"
    )
    run_script(place)  # starts the server, runs cold
    wait_for_server(place)
    first = run_script(place)
    deadline = time.monotonic() + 60  # the server imports them one by one once it has forked `first`
    while (later := run_script(place)).stdout.startswith("True False") and time.monotonic() < deadline:
        time.sleep(0.2)
    cold = run_script(place, NNCOMPRESS_WARM="0")
    assert first.stdout.splitlines()[0] == "True False", first.stderr
    assert later.stdout.splitlines()[0] == "True True", later.stderr
    assert cold.stdout.splitlines()[0] == "False False"
    assert later.stdout.splitlines()[1] == cold.stdout.splitlines()[1]


def test_a_later_import_that_starts_a_thread_is_not_tried_again(place: Path) -> None:
    """The server stops taking runs (a fork would copy a thread's locks), leaves `.nolater`, and the
    next server serves without those imports."""
    shadow = place / "shadow"
    shadow.mkdir()
    thread = "threading.Thread(target=time.sleep, args=(60,), daemon=True).start()"
    (shadow / "onnx.py").write_text(f"import threading, time\n{thread}\n")
    (place / "script.py").write_text(
        "from nncompress.warm import delegate\n"
        "delegate(__name__)\n"
        "import sys\n"
        "from nncompress import warm\n"
        "print(warm._SERVED, 'onnx' in sys.modules)\n"
    )
    path = f"{shadow}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    run_script(place, PYTHONPATH=path)  # starts a server, runs cold
    wait_for_server(place)
    assert run_script(place, PYTHONPATH=path).stdout == "True False\n"  # then it imports the shadow onnx
    wait_for_server(place, up=False)  # it stops listening
    assert [f.read_text() for f in (place / "tmp").glob("nncompress-warm-*/*.nolater")] == ["onnx started a thread\n"]
    assert run_script(place, PYTHONPATH=path).stdout == "False False\n"  # cold; starts a new server
    wait_for_server(place)
    runs = [run_script(place, PYTHONPATH=path).stdout for _ in range(3)]
    assert runs == ["True False\n"] * 3  # served, and onnx never imported


def test_signals_reach_the_served_script_and_its_end_is_the_clients(place: Path) -> None:
    """Ctrl-C on the client interrupts the served script; a script killed by a signal (even
    SIGKILL, whose handler cannot be set) kills its client with it."""
    (place / "script.py").write_text(
        "from nncompress.warm import delegate\n\ndelegate(__name__)\n\n"
        "import os, signal, sys, time\n\n"
        "try:\n    print(os.getpid(), flush=True)\n"
        "    if sys.argv[1] == 'wait':\n        time.sleep(60)\n"
        "except KeyboardInterrupt:\n    sys.exit(7)\n"
        "os.kill(os.getpid(), getattr(signal, sys.argv[1]))\n"
    )
    run_script(place, "SIGTERM")
    wait_for_server(place)
    for name in ("SIGTERM", "SIGKILL"):
        client = start_script(place, name)
        assert client.stdout is not None and int(client.stdout.readline()) != client.pid, "served"
        assert client.wait(timeout=30) == -getattr(signal, name)
    client = start_script(place, "wait")
    assert client.stdout is not None and int(client.stdout.readline()) != client.pid, "served"
    client.send_signal(signal.SIGINT)
    assert client.wait(timeout=30) == 7


def test_an_uncaught_interrupt_ends_a_served_run_as_it_ends_a_cold_one(place: Path) -> None:
    """Traceback, exit handlers, then killed by SIGINT, as Python ends on a KeyboardInterrupt."""
    (place / "script.py").write_text(
        "from nncompress.warm import delegate\n\ndelegate(__name__)\n\n"
        "import atexit\n\nimport nncompress.warm\n\n"
        "print('served' if nncompress.warm._SERVED else 'cold')\n"
        "atexit.register(lambda: print('atexit ran'))\n"
        "raise KeyboardInterrupt\n"
    )
    run_script(place)
    wait_for_server(place)
    for mode, env in (("cold", {"NNCOMPRESS_WARM": "0"}), ("served", {})):
        run = run_script(place, **env)
        assert run.returncode == -signal.SIGINT
        assert run.stdout == f"{mode}\natexit ran\n"
        assert run.stderr.startswith("Traceback") and run.stderr.endswith("KeyboardInterrupt\n")


def test_nothing_starts_a_server_with_warm_off(place: Path) -> None:
    assert run_script(place, "0", NNCOMPRESS_WARM="0").stderr.splitlines()[0] == "cold"
    time.sleep(1)
    assert not sockets(place) and not list((place / "tmp").glob("*/*.starting"))


def test_a_run_whose_client_dies_dies_too(place: Path) -> None:
    """A client killed outright (SIGKILL: nothing forwarded) takes its served run with it, as a
    killed process group takes a cold stage: no orphan goes on writing outputs."""
    (place / "script.py").write_text(
        "from nncompress.warm import delegate\n\ndelegate(__name__)\n\n"
        "import os, sys, time\n\nif sys.argv[1] == 'wait':\n    print(os.getpid(), flush=True)\n    time.sleep(60)\n"
    )
    run_script(place, "start")  # cold, and starts the server
    wait_for_server(place)
    client = start_script(place, "wait")
    assert client.stdout is not None
    child = int(client.stdout.readline())
    assert child != client.pid, "served"
    client.kill()
    client.wait()
    deadline = time.monotonic() + 20
    while alive(child):
        assert time.monotonic() < deadline, "the served run outlived its client"
        time.sleep(0.1)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_server_exits_when_idle(place: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NNCOMPRESS_WARM_IDLE", "5")
    run_script(place, "0")
    wait_for_server(place)
    deadline = time.monotonic() + 30
    while sockets(place):
        assert time.monotonic() < deadline, "the server outlived its idle time"
        time.sleep(0.2)


def test_the_key_follows_the_sources_and_the_environment_but_not_the_stage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "a.py").write_text("x = 1\n")
    monkeypatch.setattr(warm, "_PACKAGE", package)
    key = warm._key()
    monkeypatch.setenv("DVC_STAGE", "prune@random")
    assert warm._key() == key
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert warm._key() != key
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert warm._key() == key
    os.utime(package / "a.py", ns=(0, 10**9))
    assert warm._key() != key
    key = warm._key()
    (package / "new_method.py").write_text("")
    assert warm._key() != key


def test_no_socket_in_a_folder_others_can_use_nor_at_too_long_a_path(
    place: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tempfile.tempdir", None)
    folder = place / "tmp" / f"nncompress-warm-{os.getuid()}"
    assert warm.socket_path() is not None and folder.is_dir()
    folder.chmod(0o777)
    assert warm.socket_path() is None
    folder.chmod(0o700)
    assert warm.socket_path() is not None
    long = tmp_path / ("x" * 80)
    long.mkdir()
    monkeypatch.setenv("TMPDIR", str(long))
    monkeypatch.setattr("tempfile.tempdir", None)  # gettempdir() keeps its first answer
    assert warm.socket_path() is None
    assert (long / f"nncompress-warm-{os.getuid()}").is_dir(), "the folder is fine: the path is too long"


def test_quick_exit_joins_threads_runs_atexit_and_flushes(tmp_path: Path) -> None:
    script = tmp_path / "s.py"
    script.write_text(
        "import atexit, sys, threading, time\n"
        "from nncompress.runner import quick_exit\n"
        "atexit.register(lambda: print('atexit'))\n"
        "threading.Thread(target=lambda: (time.sleep(0.2), print('thread'))).start()\n"
        "sys.stdout.write('unflushed ')\n"
        "quick_exit(5)\n"
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 5
    assert done.stdout == "unflushed thread\natexit\n"
