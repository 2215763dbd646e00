"""Unstructured pruning of every Linear layer's weights (biases untouched), via torch.nn.utils.prune."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn.utils import prune

PruneFn = Callable[[nn.Module, float], None]


def prunable(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    """The (name, module) pairs whose weights are pruned: every Linear layer."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]


def random_prune(model: nn.Module, rate: float) -> None:
    """Zero `rate` of each layer's weights chosen uniformly at random (torch's global RNG).

    Like the reference, each layer loses the same fraction: round(rate * n) weights.
    """
    for _, module in prunable(model):
        prune.random_unstructured(module, "weight", amount=rate)


def magnitude_prune(model: nn.Module, rate: float) -> None:
    """Layer-wise magnitude pruning: zero the `rate` fraction of each layer's smallest |w|."""
    for _, module in prunable(model):
        prune.l1_unstructured(module, "weight", amount=rate)


def make_permanent(model: nn.Module) -> None:
    """Fold masks into the weights and drop the pruning hooks, leaving a plain model."""
    for _, module in prunable(model):
        if prune.is_pruned(module):
            prune.remove(module, "weight")


@torch.no_grad()
def sparsity(model: nn.Module) -> dict[str, float]:
    """Measured fraction of zero weights per prunable layer and overall (key 'total')."""
    zeros, total, result = 0, 0, {}
    for name, module in prunable(model):
        w = module.weight
        z = int((w == 0).sum())
        result[name] = z / w.numel()
        zeros += z
        total += w.numel()
    result["total"] = zeros / total
    return result


def global_magnitude_prune(model: nn.Module, rate: float) -> None:
    """Global magnitude pruning: one threshold over all layers' |w|, so layers lose different fractions."""
    params = [(module, "weight") for _, module in prunable(model)]
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=rate)
