"""The errors a user can fix. Stage scripts report them as one line (nncompress.runner.run_stage)."""

from __future__ import annotations


class PipelineError(Exception):
    """A problem with the user's input (params, data files, checkpoints), not a bug."""


class ParamError(PipelineError):
    """A value in params.yaml is missing, mistyped or out of range."""


class DataError(PipelineError):
    """A data file is missing, corrupted or not what was expected."""


class CheckpointError(PipelineError):
    """A checkpoint is missing, unreadable or does not fit the model."""


class ExportError(PipelineError):
    """An exported model does not compute what the PyTorch model it came from computes."""
