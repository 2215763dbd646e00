"""Multiply-accumulates of one image through a network as pruned: the theoretical speedup beside the
compression (Blalock et al. 2020 ask for both).

Only nonzero weights count, as a sparse kernel would run them: a Linear layer costs its nonzero
weights, a Conv2d layer its nonzero weights times its output positions (each kernel weight meets
every position once). A structurally shrunk network is simply smaller. Biases, activations and
pooling are not multiply-accumulates of weights and are left out, as the pruning literature does.
"""

from __future__ import annotations

import torch
from torch import nn

from nncompress.nets import IN_FEATURES
from nncompress.prune.masks import prunable


@torch.no_grad()
def layer_macs(model: nn.Module) -> dict[str, int]:
    """MACs per prunable layer for one image, from one forward pass of a blank image (in eval mode:
    the model's mode and torch's RNG are left as they were)."""
    counts: dict[str, int] = {}

    def hook(name: str):
        def count(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            nonzero = int((module.weight != 0).sum())  # the masked weight, under a pruning mask
            # output positions each weight is used at: a conv map's pixels; one for a Linear on a vector
            positions = output[0, 0].numel() if isinstance(module, nn.Conv2d) else output.numel() // output.shape[-1]
            counts[name] = counts.get(name, 0) + nonzero * positions

        return count

    handles = [module.register_forward_hook(hook(name)) for name, module in prunable(model)]
    was_training = model.training
    try:
        model.eval()
        parameter = next(model.parameters())
        model(torch.zeros(1, IN_FEATURES, dtype=parameter.dtype, device=parameter.device))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return counts


def macs(model: nn.Module) -> int:
    """Multiply-accumulates of one image through `model`, counting nonzero weights only."""
    return sum(layer_macs(model).values())
