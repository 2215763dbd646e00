"""Which weights a pruning step removes: an importance criterion applied per layer or globally.

A criterion is one of torch.nn.utils.prune's methods, whose `compute_mask` is the whole interface:
random (`RandomUnstructured`) or magnitude (`L1Unstructured`). The scope says where the rate
applies: to each layer (every layer loses the same fraction) or to all layers at once (one
threshold, so layers lose different fractions). Masks stay registered on the modules, so pruned
weights stay zero through fine-tuning, until `make_permanent` folds them in. Biases are never pruned.
Linear and Conv2d weights are pruned alike: each weight (a kernel's entries too) is one unit.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn.utils import prune

PruneFn = Callable[[nn.Module, float], None]  # masks `rate` of the model's weights, in place

CRITERIA: dict[str, type[prune.BasePruningMethod]] = {
    "random": prune.RandomUnstructured,  # uniformly at random (torch's global RNG)
    "magnitude": prune.L1Unstructured,  # smallest |w| first
}
SCOPES = ("layer", "global")


PRUNABLE = (nn.Linear, nn.Conv2d)  # the layers with weights to prune; a conv kernel's weights count one by one


def prunable(model: nn.Module) -> list[tuple[str, nn.Linear | nn.Conv2d]]:
    """The (name, module) pairs whose weights are pruned: every Linear and Conv2d layer."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, PRUNABLE)]


def unstructured(criterion: str, scope: str) -> PruneFn:
    """Zero the `rate` fraction of weights that `criterion` ranks lowest, per layer or globally.

    Per layer, each loses round(rate * n) weights, as the reference's random pruning did.
    """
    method = CRITERIA[criterion]
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")

    def prune_fn(model: nn.Module, rate: float) -> None:
        targets = [(module, "weight") for _, module in prunable(model)]
        if scope == "global":
            prune.global_unstructured(targets, pruning_method=method, amount=rate)
        else:
            for module, name in targets:
                method.apply(module, name, amount=rate)

    return prune_fn


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


def count_weights(model: nn.Module) -> tuple[int, int]:
    """(nonzero, total) weights of the prunable layers; biases are not counted."""
    nonzero = total = 0
    for _, module in prunable(model):
        nonzero += int((module.weight != 0).sum())
        total += module.weight.numel()
    return nonzero, total
