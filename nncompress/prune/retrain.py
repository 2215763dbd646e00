"""The retraining budget: masked fine-tuning after (or during) pruning."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import nn

from nncompress import lockstep
from nncompress.batched import Lane, batchable, drawing_from, fit_many
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
        torch's RNG, which the sweep seeds per (seed, rate). In a job of `lockstep.run`, the model
        trains together with the other jobs' (the same weights as alone)."""
        if lockstep.active():
            lockstep.retrain(self, model, torch.initial_seed(), before_step)
        else:  # one network: `fit` (a batch of one has the same arithmetic, but 15% more overhead)
            self._fit(model, torch.initial_seed(), before_step)

    def _batched(self, models: list[nn.Module]) -> bool:
        return self.device.type == "cpu" and batchable(models)

    def train_many(self, lanes: list[Lane]) -> None:
        """Train every lane's model as `__call__` would alone, with the lane's RNG as torch's:
        as one batched model when they allow it, else one after another."""
        if self._batched([lane.model for lane in lanes]):
            self._fit_many(lanes)
            return
        for lane in lanes:
            with drawing_from(lane.rng):
                self._fit(lane.model, lane.seed, lane.before_step)

    def _fit_many(self, lanes: list[Lane]) -> None:
        fit_many(lanes, *self.train, epochs=self.epochs, **self.opt.sgd())

    def _fit(self, model: nn.Module, seed: int, before_step: Callable[[int], None] | None) -> None:
        fit(
            model,
            self.train,
            self.val,
            epochs=self.epochs,
            seed=seed,
            desc="fine-tune",
            before_step=before_step,
            device=self.device,
            **self.opt.sgd(),
        )
