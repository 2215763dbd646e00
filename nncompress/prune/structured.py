"""Structured pruning of the MLP's hidden neurons, and shrinking the result into a smaller dense MLP."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import prune

from nncompress.model import MLP


def neuron_prune(model: nn.Module, rate: float) -> None:
    """Mask the incoming weights (rows of fc1) of round(rate * hidden) hidden neurons.

    A neuron's importance is |W1 row| x |W2 column| (L2 norms): how strongly it is driven and how
    much it drives the output. torch's ln_structured picks the rows with the smallest norm of the
    importance scores we give it.
    """
    if not isinstance(model, MLP) or len(model.hidden_sizes) != 1:
        raise TypeError("structured pruning needs the MLP with one hidden layer")
    out_norm = model.fc2.weight.detach().norm(dim=0)  # (hidden,)
    scores = model.fc1.weight.detach() * out_norm[:, None]
    prune.ln_structured(model.fc1, "weight", amount=rate, n=2, dim=0, importance_scores=scores)


def kept_neurons(model: MLP) -> torch.Tensor:
    """Indices of hidden neurons whose incoming weights are not masked."""
    mask = getattr(model.fc1, "weight_mask", None)
    if mask is None:
        return torch.arange(model.fc1.out_features)
    return torch.nonzero(mask.any(dim=1)).flatten()


@torch.no_grad()
def shrink(model: nn.Module) -> MLP:
    """A smaller dense MLP computing exactly what `model` (with its fc1 row masks) computes.

    A masked neuron's output is the constant act(bias); its contribution to the logits, W2[:, j] *
    act(b1[j]), is folded into fc2's bias, so nothing is lost by dropping it (in eval mode).
    """
    keep = kept_neurons(model)
    drop = torch.ones(model.fc1.out_features, dtype=torch.bool)
    drop[keep] = False
    small = MLP(len(keep), _activation_name(model), model.dropout.p)
    small.fc1.weight.copy_(model.fc1.weight[keep])
    small.fc1.bias.copy_(model.fc1.bias[keep])
    small.fc2.weight.copy_(model.fc2.weight[:, keep])
    constant = model.act(model.fc1.bias[drop])
    small.fc2.bias.copy_(model.fc2.bias + model.fc2.weight[:, drop] @ constant)
    return small


def _activation_name(model: MLP) -> str:
    return type(model.act).__name__.lower()
