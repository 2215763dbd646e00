"""Errors a user can fix, and the entry-point wrapper that prints them on one line."""

from __future__ import annotations

import sys
from collections.abc import Callable


class PipelineError(Exception):
    """A problem with the user's input (params, data files, checkpoints), not a bug."""


class ParamError(PipelineError):
    """A value in params.yaml is missing, mistyped or out of range."""


class DataError(PipelineError):
    """A data file is missing, corrupted or not what was expected."""


class CheckpointError(PipelineError):
    """A checkpoint is missing, unreadable or does not fit the model."""


def run_cli(main: Callable[[], None]) -> None:
    """Run a stage's main(); report a PipelineError as one line on stderr and exit 1.

    Anything else is a bug and keeps its traceback.
    """
    try:
        main()
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
