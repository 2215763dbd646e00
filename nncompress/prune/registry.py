"""Pruning methods by name: each is a params section (its schema) that builds a `Method`.

A method module under nncompress/prune/methods/ defines one `MethodConfig` subclass, decorated with
`@register("name")`; its fields are the keys of the `prune_<name>` section of params.yaml, and its
`build` composes the pieces (criterion and scope from `masks`, a schedule, a retraining budget).
Listing the name in `sweep.methods` adds the `prune@<name>` stage, its curve and its metrics.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from nncompress.data import Split
from nncompress.prune.retrain import Retrainer
from nncompress.prune.schedule import Method
from nncompress.schema import Section

if TYPE_CHECKING:
    from nncompress.config import Params

SECTION_PREFIX = "prune_"


@dataclasses.dataclass(frozen=True)
class Context:
    """What a method may build on: the whole validated params, the data, the device."""

    params: Params
    train: Split
    val: Split
    device: torch.device = torch.device("cpu")
    budget: int | None = None  # the shared budget's epochs here, if not finetune.epochs (compress.finetune_epochs)

    def retrainer(self, epochs: int | None = None) -> Retrainer:
        """The shared `finetune` optimiser, for `epochs` (default: the shared budget, finetune.epochs
        unless this context sets its own)."""
        opt = self.params.finetune
        if epochs is None:
            epochs = opt.epochs if self.budget is None else self.budget
        return Retrainer(self.train, self.val, opt, epochs, self.device)


class MethodConfig(Section):
    """A pruning method's params section and its recipe."""

    name: ClassVar[str]

    def build(self, ctx: Context) -> Method:
        """The method: (fresh copy of the trained model, rate) -> pruned model."""
        raise NotImplementedError

    def budget(self, ctx: Context) -> int:
        """Retraining epochs spent per rate (reported as finetune_epochs)."""
        return ctx.params.finetune.epochs if ctx.budget is None else ctx.budget

    def sweep_seeds(self) -> list[int]:
        """The seeds the sweep repeats each rate over (mean and spread reported)."""
        return list(getattr(self, "seeds", [0]))


METHODS: dict[str, type[MethodConfig]] = {}


def register(name: str) -> Any:
    """Class decorator: make a MethodConfig available as `name` (section prune_<name>)."""

    def decorate(cls: type[MethodConfig]) -> type[MethodConfig]:
        if name in METHODS:
            raise ValueError(f"pruning method {name!r} is registered twice")
        cls.name = name
        METHODS[name] = cls
        return cls

    return decorate


def section_name(method: str) -> str:
    return f"{SECTION_PREFIX}{method}"
