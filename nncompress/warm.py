"""Stage scripts started warm: a server that has imported PyTorch and this package forks each run.

Every stage is a new Python process that imports PyTorch and the package before it does anything:
1.5 to 2.5 s on the 2-core machine, more than the work of many stages. As Gradle's daemon does for
the JVM, the first stage script starts a server in the background, which imports them once and
waits; each later stage script hands it its command line, working directory, environment, umask,
ignored signals and standard streams (passed as file descriptors), and the server forks a child
that runs the script as `python script.py` would. The child starts from the server's freshly
imported state (no torch operation has run there, so no threads or RNG draws), not from an earlier
run's. The script's exit status, or the signal that ended it, becomes the client's own; signals
the client gets go to the child's process group; if the client dies, the group is killed.

A server serves one Python (executable, flags, module path), one environment (but for what DVC and
pytest set per command), one set of process limits (CPU affinity, niceness, resource limits,
cgroup) and one version of the package's sources: its socket's name is a hash of them, so after an
edit the next stage starts a new server. A server whose loaded modules changed on disk (a library
upgraded) turns runs away and exits. It exits after `IDLE` seconds without a run
(`NNCOMPRESS_WARM_IDLE` sets another time). With `NNCOMPRESS_WARM=0`, or where there is no fork
or Unix socket, every stage runs cold. A client imports the standard library and
nncompress.runner (no PyTorch).
"""

from __future__ import annotations

import atexit
import builtins
import contextlib
import hashlib
import importlib.machinery
import io
import json
import os
import select
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import types
import warnings
from pathlib import Path
from typing import Any

from nncompress import fileio
from nncompress.runner import quick_exit

IDLE = 60.0  # seconds a server waits for a run before it exits (NNCOMPRESS_WARM_IDLE overrides)
PRELOAD = ("pandas", "nncompress.config", "nncompress.plots", "nncompress.sweep")
# The export stage's (0.9 s): imported once the first run is forked, while it works, one per pass
# of the loop (clients are served between them), so that the server is not ready later for the
# first stages. A server where they start a thread leaves `<hash>.nolater`: later ones skip them.
LATER = ("onnx", "onnxscript", "torch.onnx._internal.exporter._core")
FAILED_FOR = 600  # seconds after a server failed to start before another is tried
_PER_COMMAND = {"DVC_STAGE", "PYTEST_CURRENT_TEST", "PWD", "OLDPWD", "_"}  # not part of the key
_FORWARDED = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT") if hasattr(signal, n))
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
    script = getattr(sys.modules["__main__"], "__file__", None)
    path = socket_path() if script is not None else None
    if path is None:
        return
    try:
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(str(path))
    except OSError:
        _start_server(path)
        return
    ignored = [s for s in _FORWARDED if signal.getsignal(s) == signal.SIG_IGN]
    forward = _Forwarder([s for s in _FORWARDED if s not in ignored])
    with client:
        request = {
            "script": script if os.path.isabs(script) else os.path.abspath(script),  # __file__ as Python set it
            "argv": sys.argv,
            "cwd": os.getcwd(),
            "env": dict(os.environ),
            "umask": fileio._umask(),  # as the outputs' modes are made from it
            "ignored": [int(s) for s in ignored],
            "unbuffered": isinstance(getattr(sys.stdout, "buffer", None), io.FileIO),  # -u, PYTHONUNBUFFERED
        }
        try:
            socket.send_fds(client, [b"R"], [0, 1, 2])
            body = json.dumps(request).encode()
            client.sendall(len(body).to_bytes(8, "big") + body)
            reader = client.makefile("rb")
            started = json.loads(reader.readline() or b"{}")
        except (OSError, ValueError):
            started = {}
        if "pid" not in started:  # the server went away, or turned the run down: run cold
            forward.restore()
            if started.get("stale"):
                _start_server(path)
            return
        forward.to(started["pid"])
        try:
            ended = json.loads(reader.readline() or b"{}")
        except (OSError, ValueError):
            ended = {}
    if "signal" in ended:  # end as the run ended: killed by that signal (SIGKILL's cannot be set)
        with contextlib.suppress(OSError):
            signal.signal(ended["signal"], signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [ended["signal"]])
        os.kill(os.getpid(), ended["signal"])
        os._exit(128 + ended["signal"])  # if it could not kill this process, as a shell reports it
    if "exit" not in ended:
        print("error: the warm stage server stopped before this run ended (NNCOMPRESS_WARM=0: cold)", file=sys.stderr)
    os._exit(ended.get("exit", 1))


class _Forwarder:
    """Signals the client gets, passed on to the child's process group (kept until it is known)."""

    def __init__(self, signals: list[signal.Signals]):
        self.pid: int | None = None
        self.held: list[int] = []
        self.before = {s: signal.signal(s, self._handle) for s in signals}

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.pid is None:
            self.held.append(signum)
        else:
            _kill_group(self.pid, signum)

    def to(self, pid: int) -> None:
        self.pid = pid
        for signum in self.held:
            _kill_group(pid, signum)

    def restore(self) -> None:
        for signum, handler in self.before.items():
            signal.signal(signum, handler)
        for signum in self.held:  # what arrived meanwhile, now for the cold run
            os.kill(os.getpid(), signum)


def _kill_group(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        try:
            os.killpg(pid, signum)
        except ProcessLookupError:  # not yet a group of its own
            os.kill(pid, signum)


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
    flags = [repr(sys.flags), sys.warnoptions, sys._xoptions]
    digest.update(json.dumps([sys.executable, sys.version, flags, sys.path[1:], env], sort_keys=True).encode())
    digest.update(repr(_process_limits()).encode())
    for folder, dirs, files in os.walk(_PACKAGE):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            if name.endswith(".py"):
                info = os.stat(os.path.join(folder, name))
                digest.update(f"{folder}/{name}:{info.st_mtime_ns}:{info.st_size}".encode())
    return digest.hexdigest()[:20]


def _process_limits() -> tuple:
    """What a child inherits from the server rather than from its client: the cores it may use,
    its niceness, its resource limits and its cgroup."""
    import resource  # Unix only, as the server is

    affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    limits = [resource.getrlimit(getattr(resource, n)) for n in sorted(dir(resource)) if n.startswith("RLIMIT_")]
    try:
        cgroup = Path("/proc/self/cgroup").read_text()
    except OSError:
        cgroup = ""
    return affinity, os.getpriority(os.PRIO_PROCESS, 0), limits, cgroup


def _start_server(path: Path) -> None:
    """Start a server for `path` in the background, unless one is starting already or one failed
    to start lately."""
    starting, failed = path.with_suffix(".starting"), path.with_suffix(".failed")
    try:
        if time.time() - failed.stat().st_mtime < FAILED_FOR:
            return
    except FileNotFoundError:
        pass
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
    """The server: import, listen, and fork a child per run until `IDLE` seconds pass without one.
    If it cannot start, it leaves a `.failed` file saying why, and stages run cold for a while."""
    sock_path = Path(path)
    try:
        idle = float(os.environ.get("NNCOMPRESS_WARM_IDLE", IDLE))
        for module in PRELOAD:
            __import__(module)
        # A Python thread could hold a lock the child would inherit held. (OpenBLAS's pool,
        # started by numpy's import, is stopped around a fork by its own handler.)
        if threading.active_count() != 1:
            raise RuntimeError(f"{threading.active_count()} threads after the imports")
        loaded = _loaded_files()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        temporary = sock_path.with_suffix(f".{os.getpid()}")
        listener.bind(str(temporary))
        listener.listen(16)
        os.replace(temporary, sock_path)  # appears ready, at once
        inode = sock_path.stat().st_ino
    except BaseException as exc:  # noqa: BLE001 - the stages run cold and say what is wrong themselves
        sock_path.with_suffix(".failed").write_text(f"{type(exc).__name__}: {exc}\n")
        return
    finally:
        with contextlib.suppress(FileNotFoundError):
            sock_path.with_suffix(".starting").unlink()
    _Server(listener, sock_path, inode, idle, loaded).loop()


def _loaded_files() -> dict[str, int]:
    """The modification times of the source files of every module loaded."""
    times = {}
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if file:
            with contextlib.suppress(OSError):
                times[file] = os.stat(file).st_mtime_ns
    return times


class _Server:
    def __init__(self, listener: socket.socket, path: Path, inode: int, idle: float, loaded: dict[str, int]):
        self.listener, self.path, self.inode, self.idle, self.loaded = listener, path, inode, idle, loaded
        self.running: dict[int, socket.socket] = {}  # child pid: its client's connection
        self.later = [] if path.with_suffix(".nolater").exists() else list(LATER)
        self.forked = False
        self.killed: set[int] = set()
        self.wake = os.pipe()
        os.set_blocking(self.wake[1], False)
        signal.set_wakeup_fd(self.wake[1])
        signal.signal(signal.SIGCHLD, lambda *_: None)  # a child's end wakes the loop (through the pipe)

    def loop(self) -> None:
        """Serve until idle, replaced or stale; then take no more runs, and wait for the running ones."""
        last = time.monotonic()
        listening = True
        while listening or self.running:
            alive = [conn for pid, conn in self.running.items() if pid not in self.killed]
            watched = [self.wake[0], *alive, *([self.listener] if listening else [])]
            pending = bool(self.later) and self.forked and listening
            ready, _, _ = select.select(watched, [], [], 0 if pending else 1.0)
            if self.wake[0] in ready:
                with contextlib.suppress(BlockingIOError):
                    os.read(self.wake[0], 4096)
            self._reap()
            for pid, conn in list(self.running.items()):
                if conn in ready and pid not in self.killed and _closed(conn):  # the client died: its run too
                    _kill_group(pid, signal.SIGKILL)
                    self.killed.add(pid)
            if listening and self.listener in ready:
                try:
                    conn, _ = self.listener.accept()
                except OSError:  # out of file descriptors, say: that client runs cold
                    continue
                if _loaded_files() != self.loaded:  # a library changed on disk: a new server will load it
                    with conn, contextlib.suppress(OSError):
                        conn.sendall(b'{"stale": true}\n')
                    listening = self._stop_listening()
                    continue
                self._fork_run(conn)
                self.forked = True
                last = time.monotonic()
            elif pending and not self._import_next():
                listening = self._stop_listening()
            if self.running:
                last = time.monotonic()
            elif listening and (time.monotonic() - last > self.idle or not self._still_ours()):
                listening = self._stop_listening()

    def _import_next(self) -> bool:
        """Import the next of LATER (what cannot be imported is left to the runs); whether the server
        can still fork: no thread started. The new modules' files join those watched for changes."""
        module = self.later.pop(0)
        # Warning filters as they were: onnxscript's import (sympy's) adds one, which a stage that
        # does not import it would not have cold.
        with contextlib.suppress(BaseException), warnings.catch_warnings():  # the runs say what is wrong
            __import__(module)
        for file, mtime in _loaded_files().items():
            self.loaded.setdefault(file, mtime)
        if threading.active_count() == 1:
            return True
        with contextlib.suppress(OSError):
            self.path.with_suffix(".nolater").write_text(f"{module} started a thread\n")
        return False

    def _stop_listening(self) -> bool:
        if self._still_ours():
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        self.listener.close()
        return False

    def _still_ours(self) -> bool:
        """Whether the socket's path is still this server's (a newer server may have replaced it)."""
        try:
            return self.path.stat().st_ino == self.inode
        except OSError:
            return False

    def _reap(self) -> None:
        """Tell the clients of finished children how each ended."""
        while self.running:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn = self.running.pop(pid, None)
            self.killed.discard(pid)
            if conn is None:
                continue
            code = os.waitstatus_to_exitcode(status)
            message = {"signal": -code} if code < 0 else {"exit": code}
            with conn, contextlib.suppress(OSError):
                conn.sendall(json.dumps(message).encode() + b"\n")

    def _fork_run(self, conn: socket.socket) -> None:
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
        try:
            pid = os.fork()
        except OSError:  # out of memory or processes: that client runs cold
            for fd in fds:
                os.close(fd)
            conn.close()
            return
        if pid == 0:
            self._child(conn, fds, request)
        with contextlib.suppress(OSError):
            os.setpgid(pid, pid)  # as the child does: whichever runs first, the group exists before signals
        for fd in fds:
            os.close(fd)
        self.running[pid] = conn
        with contextlib.suppress(OSError):
            conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")

    def _child(self, conn: socket.socket, fds: list[int], request: dict[str, Any]) -> None:
        """In the forked child: drop the server's sockets and handlers, take the client's state, run."""
        global _SERVED
        _SERVED = True
        with contextlib.suppress(OSError):
            os.setpgid(0, 0)
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for signum in _FORWARDED:  # the client's dispositions, not those of whoever started the server
            if signum in request["ignored"]:
                signal.signal(signum, signal.SIG_IGN)
            else:
                signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)
        for sock in (self.listener, conn, *self.running.values()):  # only the server talks to clients
            sock.close()
        for fd in self.wake:
            os.close(fd)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        # Modules may hold the server's stream objects, now over the same fds: flushed after the
        # script's own atexit handlers (which run first: last in, first out).
        atexit.register(_flush, _adopt(request))
        quick_exit(_run(request["script"]))  # threads joined, atexit run, streams flushed: as a cold exit


def _flush(streams: list[io.TextIOWrapper]) -> None:
    for stream in streams:
        with contextlib.suppress(OSError, ValueError):
            stream.flush()


def _closed(conn: socket.socket) -> bool:
    """Whether the client's end of a readable connection is closed (it sends nothing after its request)."""
    try:
        return not conn.recv(1, socket.MSG_PEEK)
    except OSError:
        return True


def _read(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ValueError("short request")
        data += chunk
    return data


def _adopt(request: dict[str, Any]) -> list[io.TextIOWrapper]:
    """The client's working directory, environment, umask, argv, module path and standard streams;
    returns the server's streams it replaced."""
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    os.umask(request["umask"])
    sys.argv = list(request["argv"])
    sys.path.insert(0, os.path.dirname(os.path.realpath(request["script"])))  # as `python script.py` does
    old = [sys.stdin, sys.stdout, sys.stderr]
    for name, fd in (("stdin", 0), ("stdout", 1), ("stderr", 2)):
        new = _stream(fd, getattr(sys, name), name, request["unbuffered"])
        setattr(sys, name, new)
        setattr(sys, f"__{name}__", new)
    return old


def _stream(fd: int, like: io.TextIOWrapper, name: str, unbuffered: bool) -> io.TextIOWrapper:
    """A standard stream over `fd`, as Python makes it at start-up (stdin always buffered; -u: the
    others unbuffered; the buffer sized by the file; named <stdout> and so on)."""
    reading = name == "stdin"
    binary = open(fd, "rb" if reading else "wb", buffering=0 if unbuffered and not reading else -1, closefd=False)  # noqa: SIM115 - the stream outlives this function
    raw = binary if isinstance(binary, io.FileIO) else binary.raw
    raw.name = f"<{name}>"
    text = io.TextIOWrapper(
        binary,
        encoding=like.encoding,
        errors=like.errors,
        newline="\n",
        line_buffering=not unbuffered and not reading and (name == "stderr" or os.isatty(fd)),
        write_through=unbuffered and not reading,
    )
    text.mode = "r" if reading else "w"
    return text


def _run(script: str) -> int:
    """`python script`'s exit status: the script's code run in a new __main__ module, as there."""
    main = types.ModuleType("__main__")
    main.__file__ = script
    main.__cached__ = None
    main.__builtins__ = builtins
    main.__loader__ = importlib.machinery.SourceFileLoader("__main__", script)
    sys.modules["__main__"] = main
    try:
        with open(script, "rb") as file:
            code = compile(file.read(), script, "exec", dont_inherit=True)
        exec(code, main.__dict__)
    except SystemExit as exc:
        if exc.code is None:
            return 0
        if isinstance(exc.code, int):
            return exc.code
        print(exc.code, file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:  # as Python ends on one: traceback, exit handlers, killed by SIGINT
        _report(exc)
        quick_exit(128 + signal.SIGINT, killed_by=signal.SIGINT)
    except BaseException as exc:  # noqa: BLE001 - reported as Python reports an uncaught exception
        _report(exc)
        return 1
    return 0


def _report(exc: BaseException) -> None:
    """The traceback Python prints, from the script's frames (not this module's)."""
    tb = exc.__traceback__
    if tb is not None and tb.tb_frame.f_code is _run.__code__:
        tb = tb.tb_next
    sys.excepthook(type(exc), exc, tb)
