"""The seed's network: a multilayer perceptron, 784 -> hidden layers -> 10 (by default 784-256-10)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import torch
from torch import nn

from nncompress.nets.registry import IN_FEATURES, NUM_CLASSES, NetConfig, register
from nncompress.schema import Check, Number, between, fraction, one_of

_ACTIVATIONS: dict[str, type[nn.Module]] = {"sigmoid": nn.Sigmoid, "relu": nn.ReLU, "tanh": nn.Tanh}
ACTIVATIONS = tuple(_ACTIVATIONS)
MAX_HIDDEN = 65_536  # far beyond anything useful for MNIST; refuses typos like 2560000


class MLP(nn.Module):
    """784 -> [Linear(width) -> activation -> Dropout] per hidden layer -> Linear(10); returns logits.

    The layers are fc1 .. fc<n+1>. One activation and one dropout module serve every hidden layer
    (neither holds weights), so the one-hidden-layer network has the seed's modules and state_dict
    (fc1, act, dropout, fc2) and draws its initial weights in the same order.
    """

    def __init__(self, hidden_size: int | Sequence[int] = 256, activation: str = "sigmoid", dropout: float = 0.15):
        super().__init__()
        widths = [hidden_size] if isinstance(hidden_size, int) else list(hidden_size)
        sizes = [IN_FEATURES, *widths, NUM_CLASSES]
        self.layer_names = tuple(f"fc{i}" for i in range(1, len(sizes)))
        for i, name in enumerate(self.layer_names):
            setattr(self, name, nn.Linear(sizes[i], sizes[i + 1]))
            if i == 0:  # registered after fc1, as the seed's MLP registers them
                self.act = _ACTIVATIONS[activation]()
                self.dropout = nn.Dropout(dropout)

    @property
    def layers(self) -> list[nn.Linear]:
        """The Linear layers, input first."""
        return [getattr(self, name) for name in self.layer_names]

    @property
    def hidden_sizes(self) -> tuple[int, ...]:
        return tuple(layer.out_features for layer in self.layers[:-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(x, 1)
        *hidden, out = self.layers
        for layer in hidden:
            x = self.dropout(self.act(layer(x)))
        return out(x)


Width = Annotated[int, between(1, MAX_HIDDEN)]


@register("mlp")
class MLPConfig(NetConfig):
    """The `model` section of the MLP: `hidden: [256]` is the seed's 784-256-10 network."""

    hidden: Annotated[list[Width], Check(bool, "a non-empty list of layer widths", {"minItems": 1})]
    activation: Annotated[str, one_of(ACTIVATIONS)]
    dropout: Annotated[Number, fraction()]

    @property
    def hidden_size(self) -> int:
        """The width of the first hidden layer (the seed's MLP has only that one)."""
        return self.hidden[0]

    def build(self) -> MLP:
        return MLP(self.hidden, self.activation, self.dropout)
