"""What every stage script runs through: one torch thread, and one-line errors."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from nncompress.errors import PipelineError


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's main(); report a PipelineError as one line on stderr and exit 1.

    Anything else is a bug and keeps its traceback. Torch runs on one thread: for this small
    model it costs little, it keeps results independent of the machine's core count (thread
    count can change the order of float sums), and it does not collapse when the machine is busy.
    Denormal floats are flushed to zero (`flush_denormals`).
    """
    import torch

    torch.set_num_threads(1)
    flush_denormals()
    try:
        main()
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)


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
