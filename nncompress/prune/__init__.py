"""Pruning: masks (criterion x scope), schedules, retraining, and the registry of named methods."""

from nncompress.prune import methods as _methods  # noqa: F401  (registers every method)
from nncompress.prune.registry import METHODS, Context, MethodConfig, register

__all__ = ["METHODS", "Context", "MethodConfig", "register"]
