"""Networks by name: each is a params section (the `model` section's schema) that builds an nn.Module.

A network module under nncompress/nets/ defines one `NetConfig` subclass, decorated with
`@register("name")`; its fields are the keys of the `model` section besides `arch`, and its `build`
returns a freshly initialised network. `model.arch` in params.yaml picks it. Every network maps a
batch of flat images (N, 784), as the splits hold them, to logits (N, 10).
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import ValidationError, model_validator
from pydantic_core import InitErrorDetails
from torch import nn

from nncompress.schema import Invalid, Section

IMAGE_SHAPE = (1, 28, 28)  # channels, height, width of one MNIST image
IN_FEATURES = 28 * 28  # what a network gets per image: the splits hold flat images
NUM_CLASSES = 10

NETS: dict[str, type[NetConfig]] = {}


def _arch_error(arch: Any, expected: str | None) -> ValidationError:
    """The error pydantic would report for the field `arch`: missing (`expected` None), or not `expected`."""
    if expected is None:
        detail = InitErrorDetails(type="missing", loc=("arch",), input={})
    else:
        detail = InitErrorDetails(type="value_error", loc=("arch",), input=arch, ctx={"error": Invalid(expected, arch)})
    return ValidationError.from_exception_data("model", [detail])


class NetConfig(Section):
    """The `model` section: `arch` names a registered network, the other keys are that network's.

    Validating NetConfig itself dispatches on `arch` to the registered class, whose instance it
    returns (so a network registered after this module loads is found too); a registered class
    validates its own keys, and fills in `arch` when built in code (`MLPConfig(hidden=[256], ...)`).
    """

    name: ClassVar[str]
    arch: str

    def __init__(self, **data: Any) -> None:
        if type(self) is NetConfig:  # pydantic cannot hand back another class's instance from __init__
            raise TypeError("NetConfig(...) has no network: use NetConfig.model_validate, or the network's class")
        super().__init__(**data)

    @model_validator(mode="wrap")
    @classmethod
    def _dispatch(cls, data: Any, handler: Any) -> Any:
        if not isinstance(data, dict):
            return handler(data)
        if cls is NetConfig:
            if "arch" not in data:
                raise _arch_error(None, None)
            arch = data["arch"]
            if not isinstance(arch, str) or arch not in NETS:
                raise _arch_error(arch, f"one of {', '.join(sorted(NETS))}")
            return NETS[arch].model_validate(data)
        if "arch" not in data:
            data = {"arch": cls.name, **data}
        elif data["arch"] != cls.name:
            raise _arch_error(data["arch"], cls.name)
        return handler(data)

    def build(self) -> nn.Module:
        """A freshly initialised network (its initial weights drawn from torch's global RNG)."""
        raise NotImplementedError

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: Any, handler: Any) -> Any:
        if cls is not NetConfig:
            return handler(core_schema)
        # The section: exactly one of the registered networks, told apart by their constant arch.
        options = []
        for name in sorted(NETS):
            option = dict(handler.resolve_ref_schema(handler(NETS[name].__pydantic_core_schema__)))
            option["properties"] = {**option["properties"], "arch": {"const": name, "title": "Arch"}}
            options.append(option)
        return {"description": "The network: `arch` chooses it, the other keys are its own.", "oneOf": options}


def register(name: str) -> Any:
    """Class decorator: make a NetConfig available as `model.arch: name`."""

    def decorate(cls: type[NetConfig]) -> type[NetConfig]:
        if name in NETS:
            raise ValueError(f"network {name!r} is registered twice")
        cls.name = name
        NETS[name] = cls
        return cls

    return decorate
