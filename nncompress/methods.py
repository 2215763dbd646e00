"""The pruning methods a sweep can run, each as (fresh trained model, rate) -> pruned model."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch
from torch import nn

from nncompress.data import Split
from nncompress.gradual import GradualPruner
from nncompress.model import MLP
from nncompress.params import FinetuneParams
from nncompress.pruning import PruneFn, global_magnitude_prune, magnitude_prune
from nncompress.structured import neuron_prune, shrink
from nncompress.sweep import Method
from nncompress.training import fit


@dataclasses.dataclass(frozen=True)
class Retrainer:
    """Fine-tuning after pruning: `epochs` passes over `train` with the `finetune` optimiser."""

    train: Split
    val: Split
    opt: FinetuneParams
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


def magnitude_by_scope(scope: str) -> PruneFn:
    """Magnitude pruning with one threshold across layers ("global") or per layer ("layer")."""
    return global_magnitude_prune if scope == "global" else magnitude_prune


def one_shot(prune_fn: PruneFn, retrain: Retrainer | None = None) -> Method:
    """Prune once, then fine-tune if a retrainer is given."""

    def method(model: nn.Module, rate: float) -> nn.Module:
        prune_fn(model, rate)
        if retrain is not None and retrain.epochs > 0:
            retrain(model)
        return model

    return method


def gradual(prune_fn: PruneFn, retrain: Retrainer, steps: int, ramp: float) -> Method:
    """Zhu & Gupta: sparsity rises along the cubic schedule in `steps` pruning steps spread over the
    first `ramp` fraction of the fine-tuning budget; the rest recovers accuracy at the target."""

    def method(model: nn.Module, rate: float) -> nn.Module:
        every = max(int(ramp * retrain.iterations / steps), 1)
        pruner = GradualPruner(model, prune_fn, rate, steps, every)
        retrain(model, before_step=pruner)
        pruner.finish()
        return model

    return method


def structured(retrain: Retrainer) -> Method:
    """Remove whole hidden neurons, shrink to a smaller dense MLP, fine-tune it."""

    def method(model: nn.Module, rate: float) -> nn.Module:
        if not isinstance(model, MLP):
            raise TypeError("structured pruning needs the MLP")
        neuron_prune(model, rate)
        small = shrink(model)
        if retrain.epochs > 0:
            retrain(small)
        return small

    return method
