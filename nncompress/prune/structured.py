"""Structured pruning: whole hidden units (neurons of a Linear layer, filters of a Conv2d layer) are
masked, then removed, leaving a smaller dense network that computes what the masked one computes.

Works on any network of Linear and Conv2d layers in a chain: Torch-Pruning's dependency graph
finds, for every layer whose outputs feed another layer (not the logits), which inputs of that
next layer each unit feeds (one column, one input channel, or the block of columns a flatten gives
a channel), and removes a unit from both layers at once. A network it cannot handle (no hidden
units, a layer that feeds several) is a `Refused` (a ParamError) before any unit is masked.
"""

from __future__ import annotations

import copy
import dataclasses

import torch
import torch_pruning as tp
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import prune

from nncompress.errors import ParamError
from nncompress.nets.registry import IN_FEATURES
from nncompress.prune.masks import make_permanent, prunable

_OUT = {nn.Linear: tp.prune_linear_out_channels, nn.Conv2d: tp.prune_conv_out_channels}
_IN = (tp.prune_linear_in_channels, tp.prune_conv_in_channels)


class Refused(ParamError):
    """Structured pruning cannot handle the network (model.arch); the message says why."""


@dataclasses.dataclass
class Units:
    """A hidden layer's units and the next layer's inputs that each of them feeds."""

    layer: nn.Linear | nn.Conv2d
    consumer: nn.Linear | nn.Conv2d
    feeds: list[list[int]]  # per unit: indices of the consumer's inputs (columns or channels)


def _graph(model: nn.Module) -> tp.DependencyGraph:
    with torch.enable_grad():  # the graph is traced through autograd
        return tp.DependencyGraph().build_dependency(model, example_inputs=torch.zeros(1, IN_FEATURES))


def hidden_units(model: nn.Module) -> list[Units]:
    """Every layer whose outputs feed another layer, in order, with what each unit feeds."""
    graph = _graph(model)
    found = []
    for name, layer in prunable(model):
        n = layer.weight.shape[0]
        group = graph.get_pruning_group(layer, _OUT[type(layer)], idxs=list(range(n)))
        consumers = [(dep.target.module, list(idxs)) for dep, idxs in group if dep.handler in _IN]
        if not consumers:
            continue  # the logits
        if len(consumers) > 1:
            names = {id(module): path for path, module in model.named_modules()}
            fed = ", ".join(names.get(id(c), type(c).__name__) for c, _ in consumers)
            raise Refused(
                f"structured pruning handles chains of layers, but in {_network(model)} "
                f"layer {name} feeds several ({fed})"
            )
        consumer, idxs = consumers[0]
        per_unit = len(idxs) // n
        found.append(Units(layer, consumer, [idxs[j * per_unit : (j + 1) * per_unit] for j in range(n)]))
    return found


def _network(model: nn.Module) -> str:
    return f"the {type(model).__name__} network"


def _chain(model: nn.Module) -> list[Units]:
    chain = hidden_units(model)
    if not chain:
        raise Refused(
            "structured pruning needs hidden units (a Linear or Conv2d layer that feeds another), "
            f"and {_network(model)} has none"
        )
    return chain


def check(model: nn.Module) -> None:
    """A `Refused` (a ParamError) if structured pruning cannot handle `model`'s network, found before
    any work; `model` and torch's RNG (the graph is traced through a forward pass) are left as they were."""
    with torch.random.fork_rng(devices=[]):
        _chain(model)


def _input_norms(units: Units) -> torch.Tensor:
    """Per unit, the L2 norm of the consumer's weights that read it: how much it drives the rest."""
    weight = units.consumer.weight.detach()
    per_input = weight.norm(dim=0) if weight.dim() == 2 else weight.transpose(0, 1).flatten(1).norm(dim=1)
    if all(len(f) == 1 for f in units.feeds):
        return per_input[[f[0] for f in units.feeds]]
    return torch.stack([per_input[f].square().sum().sqrt() for f in units.feeds])


def neuron_prune(model: nn.Module, rate: float) -> None:
    """Mask round(rate * units) of every hidden layer's units, but never all of them: their incoming
    weights. Every layer keeps at least one unit (an emptied layer breaks the forward pass, e.g.
    LeNet-5's 20 filters of conv1 from rate 0.975), so at extreme rates, where round(rate * units)
    would be every unit, a layer loses one unit fewer and the rate reached is below the one asked.

    A unit's importance is |its incoming weights| x |the next layer's weights it feeds| (L2 norms):
    how strongly it is driven and how much it drives the rest. torch's ln_structured picks the
    units with the smallest norm of the importance scores it is given. Every importance is
    measured on the unpruned network, before any layer is masked. A network it cannot handle is a
    `Refused` (a ParamError), before any layer is masked.
    """
    chain = _chain(model)
    scored = []
    for units in chain:
        weight = units.layer.weight.detach()
        scale = _input_norms(units).reshape(-1, *[1] * (weight.dim() - 1))
        scored.append((units.layer, weight * scale))
    for layer, scores in scored:
        size = layer.weight.shape[0]
        amount = min(int(round(rate * size)), size - 1)  # ln_structured's own rounding, capped
        prune.ln_structured(layer, "weight", amount=amount, n=2, dim=0, importance_scores=scores)


def removed(layer: nn.Module) -> torch.Tensor:
    """Indices of the layer's units whose incoming weights are all masked."""
    mask = getattr(layer, "weight_mask", None)
    if mask is None:
        return torch.zeros(0, dtype=torch.long)
    return torch.nonzero(~mask.flatten(1).any(dim=1)).flatten()


def kept(layer: nn.Module) -> torch.Tensor:
    """Indices of the layer's units that are not masked."""
    mask = getattr(layer, "weight_mask", None)
    if mask is None:
        return torch.arange(layer.weight.shape[0])
    return torch.nonzero(mask.flatten(1).any(dim=1)).flatten()


@torch.no_grad()
def shrink(masked: nn.Module) -> nn.Module:
    """A smaller dense copy of `masked` without its masked units, computing what it computes (in
    eval mode); `masked` is left as it is.

    A masked unit's output is a constant (its activated bias, pooled); what it adds to the next
    layer, that next layer's weights on it times the constant, is folded into the next layer's
    bias before the unit goes.
    """
    for _, layer in prunable(masked):
        if prune.is_pruned(layer):  # the hook's last product is no graph leaf, which deepcopy refuses;
            layer.weight = layer.weight.detach()  # the hook recomputes it at the next forward anyway
    model = copy.deepcopy(masked)
    gone = {id(layer): removed(layer) for _, layer in prunable(model)}
    make_permanent(model)
    chain = hidden_units(model)
    inputs = _consumer_inputs(model, [u.consumer for u in chain])
    for units in chain:  # every constant is measured before any bias changes
        drop = gone[id(units.layer)]
        if len(drop):
            units.consumer.bias += _contribution(units, drop, inputs[id(units.consumer)])
    graph = _graph(model)
    for units in chain:
        drop = gone[id(units.layer)]
        if len(drop):
            graph.get_pruning_group(units.layer, _OUT[type(units.layer)], idxs=drop.tolist()).prune()
    return model


def _consumer_inputs(model: nn.Module, consumers: list[nn.Module]) -> dict[int, torch.Tensor]:
    """What each consumer receives for a blank image in eval mode (a masked unit's part is a constant)."""
    seen: dict[int, torch.Tensor] = {}
    hooks = [c.register_forward_pre_hook(lambda m, args: seen.setdefault(id(m), args[0])) for c in consumers]
    was_training = model.training
    model.eval()
    try:
        model(torch.zeros(1, IN_FEATURES))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return seen


def _contribution(units: Units, drop: torch.Tensor, received: torch.Tensor) -> torch.Tensor:
    """What the dropped units add to each of the consumer's outputs."""
    consumer = units.consumer
    reads = [i for j in drop.tolist() for i in units.feeds[j]]
    if isinstance(consumer, nn.Linear):
        return consumer.weight[:, reads] @ received.flatten(1)[0, reads]
    only = torch.zeros_like(received)
    only[:, reads] = received[:, reads]
    out = F.conv2d(only, consumer.weight, None, consumer.stride, consumer.padding, consumer.dilation, consumer.groups)
    if not torch.allclose(out, out[:, :, :1, :1].expand_as(out), rtol=0, atol=1e-6 * (1 + out.abs().max())):
        raise Refused(  # known only once the units to remove are: a zero constant folds into any bias
            "structured pruning cannot fold the filters it removes into "
            f"the bias of the padded Conv2d they feed (padding {consumer.padding}): near the border, "
            "their constant output adds a varying amount"
        )
    return out[0, :, 0, 0]
