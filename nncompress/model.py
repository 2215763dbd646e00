"""The reference classifier, a 784-256-10 MLP, and safe checkpoint loading."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from nncompress.errors import CheckpointError
from nncompress.fileio import save_torch

if TYPE_CHECKING:
    from nncompress.config import ModelConfig

IN_FEATURES = 28 * 28
NUM_CLASSES = 10
_ACTIVATIONS: dict[str, type[nn.Module]] = {"sigmoid": nn.Sigmoid, "relu": nn.ReLU, "tanh": nn.Tanh}
ACTIVATIONS = tuple(_ACTIVATIONS)
MAX_HIDDEN = 65_536  # far beyond anything useful for MNIST; refuses typos like 2560000


class MLP(nn.Module):
    """784 -> Linear(hidden) -> activation -> Dropout -> Linear(10); returns logits."""

    def __init__(self, hidden_size: int = 256, activation: str = "sigmoid", dropout: float = 0.15):
        super().__init__()
        self.fc1 = nn.Linear(IN_FEATURES, hidden_size)
        self.act = _ACTIVATIONS[activation]()
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden_size, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(x, 1)
        return self.fc2(self.dropout(self.act(self.fc1(x))))


def build_model(params: ModelConfig) -> MLP:
    return MLP(params.hidden_size, params.activation, params.dropout)


def copier(params: ModelConfig, trained: nn.Module) -> Callable[[], MLP]:
    """A function that returns a new copy of `trained` at each call. Each copy is built before its
    weights are loaded, so it draws an initialisation from torch's RNG first, as sweep points always
    have (their results depend on it only through that RNG state)."""
    state = {k: v.detach().clone() for k, v in trained.state_dict().items()}

    def fresh() -> MLP:
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
