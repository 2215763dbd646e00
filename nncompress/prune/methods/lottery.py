"""Lottery-ticket pruning (Frankle & Carbin 2019), with rewinding (Frankle et al. 2020).

Iterative magnitude pruning: in each of `rounds` rounds the weights that survive are the largest
of the current network, the survivors are rewound to their values at `rewind_iteration` of the
original training run, and the sparser network is retrained for `epochs`. The sparsity after round
i of n is 1 - (1 - rate)^(i/n), so each round removes the same fraction of what is left. The first
round ranks the trained network's weights, as the paper's first round does after full training.

The early-training weights are not stored by the train stage: the first `rewind_iteration` steps
of that run are replayed from the `train` section, which reproduces them exactly.
"""

from __future__ import annotations

from typing import Annotated

import torch
from torch import nn

from nncompress.prune.masks import SCOPES, make_permanent, unstructured
from nncompress.prune.registry import Context, MethodConfig, register
from nncompress.prune.schedule import Method
from nncompress.schema import Epochs, Positive, Seeds, one_of
from nncompress.training import resolve_device, train_model


def round_sparsity(round_: int, rounds: int, rate: float) -> float:
    """Sparsity after round `round_` (1-based) of `rounds`: equal fractions of what is left go each round.
    The last round is exactly `rate` (the power can miss it by a rounding error)."""
    return rate if round_ == rounds else 1 - (1 - rate) ** (round_ / rounds)


@torch.no_grad()
def rewind(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Set every weight and bias to its value in `state`; registered masks keep pruned weights at zero."""
    for key, param in model.named_parameters():  # a pruned weight is held as weight_orig
        param.copy_(state[key.removesuffix("_orig")])


@register("lottery")
class LotteryPruning(MethodConfig):
    seeds: Seeds
    rounds: Positive  # prune-rewind-retrain rounds per rate
    epochs: Epochs  # retraining per round: the budget per rate is rounds x epochs
    rewind_iteration: Epochs  # training step whose weights the survivors are rewound to
    scope: Annotated[str, one_of(SCOPES)]

    def build(self, ctx: Context) -> Method:
        # Replayed here, once, before the sweep seeds torch per rate: replaying inside the method
        # would reseed torch from train.seed and give every rate the same shuffling and dropout.
        with torch.random.fork_rng(devices=[]):  # the CPU RNG only: CUDA is not started here
            early, _ = train_model(
                ctx.params.model,
                ctx.params.train,
                ctx.train,
                ctx.val,
                device=resolve_device(ctx.params.train.device, "train.device"),
                iterations=self.rewind_iteration,
                log_every=0,
            )
        state = {k: v.detach().cpu().clone() for k, v in early.state_dict().items()}
        prune_fn = unstructured("magnitude", self.scope)
        retrain = ctx.retrainer(self.epochs)

        def method(model: nn.Module, rate: float) -> nn.Module:
            for round_ in range(1, self.rounds + 1):
                make_permanent(model)  # pruned weights are zeros, the smallest magnitudes next round
                prune_fn(model, round_sparsity(round_, self.rounds, rate))
                rewind(model, state)
                retrain(model)
            return model

        return method

    def budget(self, ctx: Context) -> int:
        return self.rounds * self.epochs
