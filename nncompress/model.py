"""The network params.yaml chooses (nncompress.nets: the seed's MLP, LeNet-300-100, LeNet-5, or one
of your own), and safe checkpoint loading."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from nncompress.errors import CheckpointError
from nncompress.fileio import save_torch
from nncompress.nets import IN_FEATURES, NUM_CLASSES
from nncompress.nets.mlp import ACTIVATIONS, MAX_HIDDEN, MLP

if TYPE_CHECKING:
    from nncompress.config import ModelConfig

__all__ = [
    "ACTIVATIONS",
    "IN_FEATURES",
    "MAX_HIDDEN",
    "MLP",
    "NUM_CLASSES",
    "build_model",
    "copier",
    "load_checkpoint",
    "save_checkpoint",
]


def build_model(params: ModelConfig) -> nn.Module:
    """A freshly initialised network of the `model` section (its arch's class builds it)."""
    return params.build()


def copier(params: ModelConfig, trained: nn.Module) -> Callable[[], nn.Module]:
    """A function that returns a new copy of `trained` at each call. Each copy is built before its
    weights are loaded, so it draws an initialisation from torch's RNG first, as sweep points always
    have (their results depend on it only through that RNG state)."""
    state = {k: v.detach().clone() for k, v in trained.state_dict().items()}

    def fresh() -> nn.Module:
        model = build_model(params)
        model.load_state_dict(state)
        return model

    return fresh


def save_checkpoint(model: nn.Module, path: Path) -> None:
    save_torch(path, model.state_dict())


def load_checkpoint(model: nn.Module, path: Path) -> nn.Module:
    """Load a state_dict into `model` without unpickling arbitrary objects (weights_only=True)."""
    if not path.is_file():
        raise CheckpointError(f"{path}: missing (run the train stage first: dvc repro train)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated, foreign or hostile file: refuse it, whatever the cause
        raise CheckpointError(f"{path}: not a loadable weights-only checkpoint ({type(exc).__name__})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a state_dict, got {type(state).__name__}")
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: does not match the model: missing {missing or 'nothing'}, unexpected {unexpected or 'nothing'}"
        )
    for key, tensor in expected.items():
        if not isinstance(state[key], torch.Tensor):
            raise CheckpointError(f"{path}: {key} is a {type(state[key]).__name__}, expected a tensor")
        if state[key].shape != tensor.shape:
            raise CheckpointError(
                f"{path}: {key} has shape {list(state[key].shape)}, the model in params.yaml "
                f"expects {list(tensor.shape)}"
            )
    model.load_state_dict(state)
    return model
