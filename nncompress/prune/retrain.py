"""The retraining budget: masked fine-tuning after (or during) pruning."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import nn

from nncompress.data import Split
from nncompress.training import fit

if TYPE_CHECKING:
    from nncompress.config import OptimiserConfig


@dataclasses.dataclass(frozen=True)
class Retrainer:
    """`epochs` passes over `train` with the optimiser block `opt` (its own epochs are not used)."""

    train: Split
    val: Split
    opt: OptimiserConfig
    epochs: int
    device: torch.device = torch.device("cpu")

    @property
    def iterations(self) -> int:
        return self.epochs * math.ceil(len(self.train[1]) / self.opt.batch_size)

    def __call__(self, model: nn.Module, before_step: Callable[[int], None] | None = None) -> None:
        """Pruning masks stay applied, so pruned weights stay zero. Shuffling is seeded from
        torch's RNG, which the sweep seeds per (seed, rate)."""
        fit(
            model,
            self.train,
            self.val,
            epochs=self.epochs,
            batch_size=self.opt.batch_size,
            lr=self.opt.lr,
            momentum=self.opt.momentum,
            shuffle=self.opt.shuffle,
            seed=torch.initial_seed(),
            desc="fine-tune",
            before_step=before_step,
            device=self.device,
        )
