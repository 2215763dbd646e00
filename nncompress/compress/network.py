"""The network a .nnc file records: the layers it holds, the `model` section that rebuilds it, and
the rebuilding (through the registry, checked before it is allocated); and what a reader decodes a
file to (Decoded).

The layers are the network's Linear and Conv2d layers (nncompress.prune.masks.prunable), in its
order; their names and shapes are not stored, the loader takes them from the network its section
builds.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from nncompress.compress.layer_coding import Coded
from nncompress.compress.quantize import SharedLayer
from nncompress.nets import NETS, NetConfig
from nncompress.nets.mlp import MLP, MLPConfig
from nncompress.prune.masks import prunable

MAX_PARAMETERS = 2**28  # a file may describe a network of at most this many parameters (1 GiB as fp32)
KINDS = {2: "Linear", 4: "Conv2d"}  # a layer's kind by the number of dimensions of its weight


class Unregistered(ValueError):
    """The file's network is not in this process's registry: reported as such, not as a bad file."""


def state_key(name: str, param: str) -> str:
    """The state_dict key of a layer's parameter ("weight" or "bias")."""
    return f"{name}.{param}" if name else param


def layers_of(model: nn.Module) -> list[tuple[str, nn.Linear | nn.Conv2d]]:
    """The layers a file holds (every Linear and Conv2d); a ValueError unless they are all the
    network's state: the format stores their weights and biases, nothing else."""
    layers = prunable(model)
    held = {state_key(name, "weight") for name, _ in layers}
    held |= {state_key(name, "bias") for name, module in layers if module.bias is not None}
    other = [key for key in model.state_dict() if key not in held]
    if not layers or other:
        found = f"state besides their weights and biases: {', '.join(other[:3])}{', ...' if len(other) > 3 else ''}"
        raise ValueError(
            "the .nnc format holds networks of Linear and Conv2d layers only; this one has "
            + (found if layers else "no Linear or Conv2d layer")
        )
    for name, module in layers:
        if module.weight.dim() not in KINDS:
            raise ValueError(f"layer {name} has a {module.weight.dim()}-d weight")
    return layers


def shapes_of(model: nn.Module) -> list[tuple[str, tuple[int, ...], bool]]:
    """(name, weight shape, has a bias) of each layer a file holds, in the network's order."""
    return [(name, tuple(m.weight.shape), m.bias is not None) for name, m in layers_of(model)]


def build(net: NetConfig, device: str | None = None) -> nn.Module:
    """`net`'s network, without touching torch's global RNG; on the meta device (no memory, no
    initialisation cost) when `device` is "meta". What the network's own code raises is a ValueError."""
    try:
        with torch.random.fork_rng(devices=[]):
            if device is None:
                return net.build()
            with torch.device(device):
                return net.build()
    except Exception as exc:  # the network's code, maybe a user's: whatever it raises, one line
        raise ValueError(f"model.arch {net.arch}: building the network failed ({_one_line(exc)})") from None


def _probe(net: NetConfig) -> nn.Module | None:
    """`net`'s network on the meta device, to read its layers; None if its code cannot build there."""
    try:
        return build(net, "meta")
    except ValueError:
        return None


def check_size(net: NetConfig, model: nn.Module) -> None:
    parameters = sum(p.numel() for p in model.parameters())
    if parameters > MAX_PARAMETERS:
        raise ValueError(f"model.arch {net.arch}: {parameters:,} parameters, more than {MAX_PARAMETERS:,}")


def rebuild(net: NetConfig, check: Callable[[nn.Module], Any]) -> nn.Module:
    """The network of a file's section. When it builds on the meta device, `check` (a ValueError
    unless the file holds the network's layers) and its size are checked there, before it is allocated."""
    probe = _probe(net)
    if probe is not None:
        check(probe)
        check_size(net, probe)
    return build(net)


# --- the model section -----------------------------------------------------------------------------


def _mlp_section(model: MLP) -> MLPConfig:
    return MLPConfig(
        hidden=list(model.hidden_sizes), activation=type(model.act).__name__.lower(), dropout=float(model.dropout.p)
    )


def section(model: nn.Module, net: NetConfig | None = None) -> NetConfig:
    """The `model` section a file of `model` records: `net` (params.yaml's) when it builds a network
    with `model`'s layers; for an MLP, the mlp section of its own widths, activation and dropout
    (exact for the MLP, and right for one that structured pruning shrank). A ValueError if the
    format cannot hold `model` or no section describes it."""
    shapes = shapes_of(model)
    if net is not None and not (isinstance(net, MLPConfig) and isinstance(model, MLP)):
        built = _probe(net)
        if built is None:  # a network whose code cannot run on the meta device
            built = build(net)
        if shapes_of(built) == shapes:
            _check_json(net)
            return net
        if not isinstance(model, MLP):
            raise ValueError(
                f"model.arch {net.arch} builds layers {_describe_shapes(shapes_of(built))}, "
                f"the model has {_describe_shapes(shapes)}"
            )
    if isinstance(model, MLP):
        return _mlp_section(model)
    raise ValueError(f"a {type(model).__name__} needs its model section (net): only an MLP's is inferred")


def _describe_shapes(shapes: list[tuple[str, tuple[int, ...], bool]]) -> str:
    return ", ".join(f"{name} {list(shape)}" for name, shape, _ in shapes)


def _check_json(net: NetConfig) -> None:
    """A ValueError unless the section comes back from its JSON as itself (what the loader validates)."""
    try:
        back = NetConfig.model_validate(json.loads(json.dumps(net.model_dump(mode="json"))))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"model.arch {net.arch}: its section does not survive JSON ({_one_line(exc)})") from None
    if back != net:
        raise ValueError(f"model.arch {net.arch}: its section does not survive JSON ({back!r} != {net!r})")


def section_of(data: Any) -> NetConfig:
    """The file's model section, validated as params.yaml's is; an unregistered arch is Unregistered."""
    if not isinstance(data, dict):
        raise ValueError("the model section is not a mapping")
    arch = data.get("arch")
    if isinstance(arch, str) and arch not in NETS:
        raise Unregistered(
            f"holds a network of model.arch {arch!r}, which is not registered (registered: {', '.join(sorted(NETS))})"
        )
    try:
        return NetConfig.model_validate(data)
    except ValueError as exc:  # pydantic's ValidationError, in params.yaml's one-line words
        raise ValueError(_one_line(exc)) from None


def _one_line(exc: Exception) -> str:
    from pydantic import ValidationError

    from nncompress.schema import describe

    if isinstance(exc, ValidationError):
        return describe(exc, NetConfig, ("model",)).removeprefix("params.yaml: ")
    text = str(exc).splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# --- what a reader decodes a file to ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Decoded:
    version: int
    crc: int
    metadata: int  # bytes of the meta and its length
    net: NetConfig
    model: nn.Module  # eval mode, the decoded weights loaded
    state: dict[str, torch.Tensor]
    layers: dict[str, SharedLayer]
    tables: dict[str, int]  # versions 1 and 2, bytes per layer: shared values and biases
    coded: dict[str, Coded] = dataclasses.field(default_factory=dict)  # version 3: each layer as its stream holds it

    @classmethod
    def loading(cls, model: nn.Module, state: dict[str, torch.Tensor], **fields: Any) -> Decoded:
        """The network `model` with the decoded `state` loaded (eval mode, the state in its order)."""
        model.load_state_dict(state)
        state = {key: state[key] for key in model.state_dict()}  # in the network's order
        return cls(model=model.eval(), state=state, **fields)
