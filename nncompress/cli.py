"""The entry point every stage script runs through."""

from __future__ import annotations

import sys
from collections.abc import Callable

from nncompress.errors import PipelineError


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's main(); report a PipelineError as one line on stderr and exit 1.

    Anything else is a bug and keeps its traceback. Torch runs on one thread: for this small
    model it costs little, it keeps results independent of the machine's core count (thread
    count can change the order of float sums), and it does not collapse when the machine is busy.
    """
    import torch

    torch.set_num_threads(1)
    try:
        main()
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
