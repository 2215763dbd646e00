"""Stage scripts started warm: a server that has imported PyTorch and this package forks each run.

Every stage is a new Python process that imports PyTorch and the package before it does anything:
1.5 to 2.5 s on the 2-core machine, more than the work of many stages. As Gradle's daemon does for
the JVM, the first stage script starts a server in the background, which imports them once and
waits; each later stage script hands it its command line, working directory, environment, umask
and standard streams (passed as file descriptors), and the server forks a child that runs the
script as `python script.py` would. The child starts from the server's freshly imported state (no
torch operation has run there, so no threads or RNG draws), not from an earlier run's, and the
script's exit status, or the signal that ended it, becomes the client's own.

A server serves one Python (executable, flags, module path), one environment (but for what DVC and
pytest set per command) and one version of the package's sources: its socket's name is a hash of
them, so after an edit the next stage starts a new server. It exits after `IDLE` seconds without a
run (`NNCOMPRESS_WARM_IDLE` sets another time). With `NNCOMPRESS_WARM=0`, or where there is no
fork or Unix socket, every stage runs cold. Stage scripts' exit is quick either way
(`runner.quick_exit`). A client imports the standard library and nncompress.runner, no PyTorch.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import runpy
import select
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from nncompress.runner import quick_exit

IDLE = 60.0  # seconds a server waits for a run before it exits (NNCOMPRESS_WARM_IDLE overrides)
PRELOAD = ("pandas", "nncompress.config", "nncompress.plots", "nncompress.sweep", "nncompress.runner")
_PER_COMMAND = {"DVC_STAGE", "PYTEST_CURRENT_TEST", "PWD", "OLDPWD", "_"}  # not part of the key
_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
_SERVED = False  # true in a child the server forked: its script must not delegate again
_PACKAGE = Path(__file__).resolve().parent


def enabled() -> bool:
    return (
        os.environ.get("NNCOMPRESS_WARM", "1") != "0"
        and hasattr(os, "fork")
        and hasattr(socket, "AF_UNIX")
        and hasattr(socket, "send_fds")
    )


def delegate(name: str) -> None:
    """Called first by a stage script with its `__name__`: when it runs as `python script.py ...`,
    run it in a warm server and exit with its status; return (to run cold) when there is none yet,
    after starting one for the next stage. Imported as a module, or in a served child: return."""
    if name != "__main__" or _SERVED or not enabled():
        return
    main = sys.modules["__main__"]
    script = getattr(main, "__file__", None)
    if script is None:
        return
    path = socket_path()
    if path is None:
        return
    try:
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(str(path))
    except OSError:
        _start_server(path)
        return
    with client:
        request = {
            "script": os.path.abspath(script),
            "argv": sys.argv,
            "cwd": os.getcwd(),
            "env": dict(os.environ),
            "umask": _umask(),
        }
        try:
            socket.send_fds(client, [b"R"], [0, 1, 2])
            body = json.dumps(request).encode()
            client.sendall(len(body).to_bytes(8, "big") + body)
            reader = client.makefile("rb")
            started = reader.readline()
        except OSError:
            return  # the server went away before it took the run: run cold
        if not started:
            return
        pid = json.loads(started)["pid"]
        for signum in _FORWARDED:  # the child is not in this process's group: pass them on
            signal.signal(signum, lambda signum, _frame: _kill(pid, signum))
        try:
            ended = reader.readline()
        except OSError:
            ended = b""
    if not ended:
        print(
            "error: the warm stage server stopped before this run ended (NNCOMPRESS_WARM=0 runs cold)", file=sys.stderr
        )
        os._exit(1)
    status = json.loads(ended)
    if "signal" in status:
        signal.signal(status["signal"], signal.SIG_DFL)
        os.kill(os.getpid(), status["signal"])
    os._exit(status["exit"])


def _kill(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def socket_path() -> Path | None:
    """This Python's, environment's and sources' server socket, in a folder only this user can use
    (None if that folder is someone else's or open to others, or the path too long for a socket)."""
    folder = Path(tempfile.gettempdir()) / f"nncompress-warm-{os.getuid()}"
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        info = folder.lstat()
    except OSError:
        return None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        return None
    path = folder / f"{_key()}.sock"
    return path if len(os.fsencode(path)) < 96 else None  # a socket's path has at most 107 bytes


def _key() -> str:
    digest = hashlib.sha256()
    env = {k: v for k, v in os.environ.items() if k not in _PER_COMMAND}
    flags = subprocess._args_from_interpreter_flags()  # what multiprocessing passes its children
    digest.update(json.dumps([sys.executable, sys.version, flags, sys.path[1:], env], sort_keys=True).encode())
    for folder, dirs, files in os.walk(_PACKAGE):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            if name.endswith(".py"):
                info = os.stat(os.path.join(folder, name))
                digest.update(f"{folder}/{name}:{info.st_mtime_ns}:{info.st_size}".encode())
    return digest.hexdigest()[:20]


def _start_server(path: Path) -> None:
    """Start a server for `path` in the background, unless one is starting already."""
    starting = path.with_suffix(".starting")
    if path.with_suffix(".failed").exists():
        return
    try:
        if time.time() - starting.stat().st_mtime < 30:
            return
        starting.unlink()  # left by a server that died while starting
    except FileNotFoundError:
        pass
    try:
        os.close(os.open(starting, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        return
    code = "import sys; del sys.path[0]; from nncompress.warm import serve; serve(sys.argv[1])"
    subprocess.Popen(
        [sys.executable, *subprocess._args_from_interpreter_flags(), "-c", code, str(path)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # not stopped with the stage, nor by its Ctrl-C
        close_fds=True,
    )


def serve(path: str) -> None:
    """The server: import, listen, and fork a child per run until `IDLE` seconds pass without one."""
    sock_path = Path(path)
    starting = sock_path.with_suffix(".starting")
    try:
        try:
            for module in PRELOAD:
                __import__(module)
            # A Python thread could hold a lock the child would inherit held. (OpenBLAS's pool,
            # started by numpy's import, is stopped around a fork by its own handler.)
            usable = threading.active_count() == 1
        except Exception:  # noqa: BLE001 - the stages will say what is wrong, cold
            usable = False
        if not usable:  # no server for these sources and this environment: stages run cold
            sock_path.with_suffix(".failed").touch()
            return
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        temporary = sock_path.with_suffix(f".{os.getpid()}")
        listener.bind(str(temporary))
        listener.listen(16)
        os.replace(temporary, sock_path)  # appears ready, at once
        inode = sock_path.stat().st_ino
    finally:
        with contextlib.suppress(FileNotFoundError):
            starting.unlink()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a child's end wakes the loop (through wake_w)
    idle = float(os.environ.get("NNCOMPRESS_WARM_IDLE", IDLE))
    running: dict[int, socket.socket] = {}
    last = time.monotonic()
    while True:
        ready, _, _ = select.select([listener, wake_r], [], [], 1.0)
        if wake_r in ready:
            with contextlib.suppress(BlockingIOError):
                os.read(wake_r, 4096)
        _reap(running)
        if listener in ready:
            conn, _ = listener.accept()
            _fork_run(conn, listener, running, (wake_r, wake_w))  # a child does not return
            last = time.monotonic()
        if running:
            last = time.monotonic()
        elif time.monotonic() - last > idle or not _still_ours(sock_path, inode):
            with contextlib.suppress(FileNotFoundError):
                if _still_ours(sock_path, inode):
                    sock_path.unlink()
            return


def _still_ours(path: Path, inode: int) -> bool:
    """Whether `path` is still this server's socket (a newer server may have replaced it)."""
    try:
        return path.stat().st_ino == inode
    except OSError:
        return False


def _reap(running: dict[int, socket.socket]) -> None:
    """Tell the clients of finished children how each ended."""
    while running:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = running.pop(pid, None)
        if conn is None:
            continue
        code = os.waitstatus_to_exitcode(status)
        message = {"signal": -code} if code < 0 else {"exit": code}
        with conn, contextlib.suppress(OSError):
            conn.sendall(json.dumps(message).encode() + b"\n")


def _fork_run(conn: socket.socket, listener: socket.socket, running: dict[int, socket.socket], wake: tuple) -> None:
    """Read a request and fork its child, which runs it and exits with its status."""
    fds: list[int] = []
    try:
        conn.settimeout(10)
        _, fds, _, _ = socket.recv_fds(conn, 1, 3)
        size = int.from_bytes(_read(conn, 8), "big")
        request = json.loads(_read(conn, size))
        if len(fds) != 3:
            raise ValueError("three file descriptors expected")
    except (OSError, ValueError):
        for fd in fds:
            os.close(fd)
        conn.close()
        return
    pid = os.fork()
    if pid:
        for fd in fds:
            os.close(fd)
        running[pid] = conn
        with contextlib.suppress(OSError):
            conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
        return
    # The child: drop the server's sockets and handlers, take the client's process state, run.
    global _SERVED
    _SERVED = True
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for sock in (listener, conn, *running.values()):
        sock.close()
    for fd in wake:
        os.close(fd)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    _adopt(request)
    quick_exit(_run(request["script"]))  # threads joined, atexit run, streams flushed: as a cold exit


def _read(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ValueError("short request")
        data += chunk
    return data


def _adopt(request: dict) -> None:
    """The client's working directory, environment, umask, argv, module path and standard streams."""
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    os.umask(request["umask"])
    sys.argv = list(request["argv"])
    sys.path.insert(0, os.path.dirname(os.path.realpath(request["script"])))  # as `python script.py` does
    for name, fd in (("stdin", 0), ("stdout", 1), ("stderr", 2)):
        old = getattr(sys, name)
        new = _stream(fd, old, name)
        setattr(sys, name, new)
        setattr(sys, f"__{name}__", new)


def _stream(fd: int, like: io.TextIOWrapper, name: str) -> io.TextIOWrapper:
    """A standard stream over `fd`, buffered as Python buffers it at start-up for that file."""
    tty = os.isatty(fd)
    raw = io.FileIO(fd, "r" if name == "stdin" else "w", closefd=False)
    buffered = io.BufferedReader(raw) if name == "stdin" else io.BufferedWriter(raw)
    return io.TextIOWrapper(
        buffered,
        encoding=like.encoding,
        errors=like.errors,
        line_buffering=name == "stderr" or (tty and name == "stdout"),
        write_through=like.write_through,
    )


def _run(script: str) -> int:
    """`python script`'s exit status, the script run as __main__."""
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as exc:
        if exc.code is None:
            return 0
        if isinstance(exc.code, int):
            return exc.code
        print(exc.code, file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # as Python ends on one: the traceback, then killed by SIGINT
        sys.excepthook(*sys.exc_info())
        sys.stderr.flush()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
        return 128 + signal.SIGINT
    except BaseException:  # noqa: BLE001 - reported as Python reports an uncaught exception
        sys.excepthook(*sys.exc_info())
        return 1
    return 0
