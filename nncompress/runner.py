"""What every stage script runs through: one torch thread, one-line errors, and a quick exit."""

from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from nncompress.errors import PipelineError


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's main(); report a PipelineError as one line on stderr and exit 1.

    Anything else is a bug and keeps its traceback. Torch runs on one thread: for this small
    model it costs little, it keeps results independent of the machine's core count (thread
    count can change the order of float sums), and it does not collapse when the machine is busy.
    Denormal floats are flushed to zero (`flush_denormals`). The process ends with `quick_exit`.
    """
    import torch

    torch.set_num_threads(1)
    flush_denormals()
    try:
        main()
        code = 0
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        code = 130
    if _runs_alone(main):
        quick_exit(code)
    sys.exit(code)


def _runs_alone(main: Callable[[], None]) -> bool:
    """Whether the stage is the program itself, not run by a tool that works after it returns
    (`python -m cProfile`, `python -m trace`, tests/stage_driver.py): its __main__ module is then
    the tool."""
    program = getattr(sys.modules.get("__main__"), "__file__", None)
    script = main.__globals__.get("__file__")
    return program is not None and script is not None and os.path.realpath(program) == os.path.realpath(script)


def quick_exit(code: int, killed_by: signal.Signals | None = None) -> NoReturn:
    """End the process as the interpreter would, without tearing its modules down one by one.

    With PyTorch, pandas and matplotlib loaded that teardown takes 0.7 s here, in every stage. What a
    program can see of an exit still happens, in the interpreter's order: other (non-daemon) threads
    are joined, atexit handlers run (weakref finalizers, temporary folders), the standard streams
    are flushed. Files the stages write are closed before they return (fileio writes them whole).
    With `killed_by`, the process then ends killed by that signal, as Python ends on an uncaught
    KeyboardInterrupt (SIGINT), so that the shell or DVC above sees an interrupt (from the main
    thread only, where signal handlers can be set).
    """
    shutdown = getattr(threading, "_shutdown", None)  # what the interpreter calls first at exit
    if shutdown is not None:
        shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a full disk or a broken pipe: exit 120, as Python does
            code = 120
    with contextlib.suppress(OSError, AttributeError):  # C libraries' printf buffers, as exit() flushes them
        import ctypes

        ctypes.CDLL(None).fflush(None)
    if killed_by is not None:
        signal.signal(killed_by, signal.SIG_DFL)
        os.kill(os.getpid(), killed_by)
    os._exit(code)


def flush_denormals() -> None:
    """Treat denormal floats as zero in this thread and in the threads and processes it starts.

    A pruned weight's momentum decays by 0.9 a step and ends as the smallest denormal, which 0.9
    times itself rounds back to: such numbers stay, and every operation on them takes the CPU's
    slow path, which doubled the time of gradual pruning. Nothing the pipeline reports is that small.
    """
    import torch

    torch.set_flush_denormal(True)


def arguments(doc: str, *, checkpoint: bool = True, **outputs: str) -> argparse.ArgumentParser:
    """A stage's command line: --params, the trained checkpoint and splits (`checkpoint`), and one
    option per output (`csv="plots/x.csv"` gives --csv with that default)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    if checkpoint:
        parser.add_argument("--model", type=Path, default=Path("models/model.pt"))
        parser.add_argument("--split-dir", type=Path, default=Path("data/split"))
    for name, default in outputs.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=Path, default=Path(default) if default else None)
    return parser
