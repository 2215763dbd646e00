"""The biases a network's output does not depend on, which a version-3 .nnc file leaves out (they
decode as 0): a unit with no path to the output, or a unit with no kept weight whose activation maps
its bias to what it maps 0 to (a ReLU unit with a negative bias). The decoded network computes what
the encoder's computes, checked on random inputs before any bias is left out."""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from nncompress.compress.layer_coding import matrix
from nncompress.compress.network import layers_of
from nncompress.compress.quantize import SharedLayer
from nncompress.nets.registry import IN_FEATURES

_ONE_BY_ONE = 2048  # units without kept weights tried one at a time, at most (one forward pass each)


def unused_biases(
    model: nn.Module, layers: dict[str, SharedLayer], biases: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Per layer with biases, per unit whether the network's output does not depend on its bias (True:
    not stored, decoded as 0), for the network the file decodes to (`layers`' weights, `biases` float16).

    Two kinds of unit, each found without assuming an order of layers or a kind of activation:
    - no path to the output: its bias gets no gradient in the "open" network (every kept weight and
      bias made positive, on positive inputs, where ReLU, sigmoid, tanh, max-pooling and layers with
      no activation pass every gradient on, so a zero means no chain of kept weights);
    - no kept weight, so its value is its activation at its bias whatever the input, and that value
      is its activation at 0 (a ReLU's below 0): zeroing its bias leaves every layer's input and the
      output bit-identical. Compared at every layer's input, not only at the output, so a unit whose
      later units happen to be off for the inputs tried still keeps its bias; tried on all such
      units at once, else one by one (at most _ONE_BY_ONE of them).
    The set is kept only if zeroing those biases leaves the network's outputs bit-identical on random
    inputs (uniform, normal and 10 x normal); otherwise only one kind, otherwise none: a network whose
    forward breaks this reasoning keeps every bias. So does one that cannot be copied or run in double.
    """
    if not biases:
        return {}
    try:
        return _find_unused(model, layers, biases)
    except Exception:  # the network's code, maybe a user's: whatever fails, every bias is stored
        return {}


def _find_unused(
    model: nn.Module, layers: dict[str, SharedLayer], biases: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    generator = torch.Generator().manual_seed(0)
    real = copy.deepcopy(model).cpu().float().eval()
    with torch.no_grad():
        for name, module in layers_of(real):
            module.weight.copy_(torch.from_numpy(layers[name].dense()))
            if module.bias is not None:
                module.bias.copy_(torch.from_numpy(biases[name].astype(np.float32)))
    inputs = torch.cat(
        [
            torch.rand(16, IN_FEATURES, generator=generator),
            torch.randn(16, IN_FEATURES, generator=generator),
            10 * torch.randn(16, IN_FEATURES, generator=generator),
        ]
    )
    kept_rows = {name: matrix(layers[name].mask).any(axis=1) for name, _ in layers_of(real)}
    positive = copy.deepcopy(real).double()
    with torch.no_grad():
        for name, module in layers_of(positive):
            kept = torch.from_numpy(layers[name].mask).double()
            fan_in = kept.reshape(len(kept), -1).sum(dim=1).clamp(min=1).reshape(-1, *[1] * (kept.dim() - 1))
            module.weight.copy_(kept / fan_in)
            if module.bias is not None:
                module.bias.fill_(1.0)
    positive_inputs = 0.5 + 0.5 * torch.rand(16, IN_FEATURES, generator=generator, dtype=torch.float64)
    cut = {name: gradient == 0 for name, gradient in _bias_gradients(positive, positive_inputs).items()}
    empty = {name: ~kept_rows[name] & ~cut[name] for name in cut}  # no kept weight, a path to the output
    flat = {name: np.zeros_like(units) for name, units in empty.items()}
    base = _traces(real, inputs)
    if _traces(real, inputs, empty) == base:
        flat = empty
    elif sum(int(units.sum()) for units in empty.values()) <= _ONE_BY_ONE:
        for name, units in empty.items():
            for unit in np.flatnonzero(units):
                flat[name][unit] = _traces(real, inputs, {name: np.arange(len(units)) == unit}) == base
    for unused in ({name: flat[name] | cut[name] for name in flat}, cut, flat):
        if any(units.any() for units in unused.values()) and _same_outputs(real, unused, inputs):
            return unused
    return {}


def _bias_gradients(model: nn.Module, inputs: torch.Tensor) -> dict[str, np.ndarray]:
    """Per layer with biases, the gradient of the sum of the outputs with respect to them."""
    with_bias = [(name, module) for name, module in layers_of(model) if module.bias is not None]
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    for _, module in with_bias:
        module.bias.requires_grad_(True)
    with torch.enable_grad():
        outputs = model(inputs)
        gradients = torch.autograd.grad(outputs.sum(), [m.bias for _, m in with_bias], allow_unused=True)
    return {
        name: np.zeros(module.bias.shape) if g is None else g.detach().numpy().astype(np.float64)
        for (name, module), g in zip(with_bias, gradients, strict=True)
    }


def _traces(model: nn.Module, inputs: torch.Tensor, zeroed: dict[str, np.ndarray] | None = None) -> list[bytes]:
    """Every prunable layer's input and the outputs of `model` on `inputs`, as bytes, with the
    `zeroed` biases set to 0 for the run (restored after)."""
    seen: list[torch.Tensor] = []
    hooks = [m.register_forward_pre_hook(lambda _, args: seen.append(args[0].clone())) for _, m in layers_of(model)]
    saved = {}
    try:
        with torch.no_grad():
            for name, module in layers_of(model):
                if zeroed and name in zeroed:
                    saved[name] = module.bias.detach().clone()
                    module.bias[torch.from_numpy(zeroed[name])] = 0.0
            seen.append(model(inputs))
    finally:
        for hook in hooks:
            hook.remove()
        with torch.no_grad():
            for name, module in layers_of(model):
                if name in saved:
                    module.bias.copy_(saved[name])
    return [t.numpy().tobytes() for t in seen]


def _same_outputs(model: nn.Module, unused: dict[str, np.ndarray], inputs: torch.Tensor) -> bool:
    """Whether `model` with the `unused` biases zeroed gives bit-identical outputs on `inputs`."""
    zeroed = copy.deepcopy(model)
    with torch.no_grad():
        for name, module in layers_of(zeroed):
            if name in unused:
                module.bias[torch.from_numpy(unused[name])] = 0.0
        return torch.equal(model(inputs), zeroed(inputs))
