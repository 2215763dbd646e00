"""When pruning happens relative to retraining: once before it, or gradually during it.

A schedule combines a pruning step (`masks.PruneFn`) and a retraining budget (`Retrainer`) into a
`Method`: (fresh copy of the trained model, rate) -> pruned model.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from nncompress.prune.masks import PruneFn, make_permanent
from nncompress.prune.retrain import Retrainer

Method = Callable[[nn.Module, float], nn.Module]


def one_shot(
    prune_fn: PruneFn,
    retrain: Retrainer | None = None,
    reshape: Callable[[nn.Module], nn.Module] | None = None,
) -> Method:
    """Prune once to the rate, optionally `reshape` (e.g. shrink to a smaller network), then retrain."""

    def method(model: nn.Module, rate: float) -> nn.Module:
        prune_fn(model, rate)
        if reshape is not None:
            model = reshape(model)
        if retrain is not None and retrain.epochs > 0:
            retrain(model)
        return model

    return method


def cubic_sparsity(step: int, steps: int, final: float, initial: float = 0.0) -> float:
    """Sparsity after pruning step `step` of `steps` (1-based): s_f + (s_i - s_f)(1 - step/steps)^3."""
    if not 0 <= step <= steps:
        raise ValueError(f"step {step} outside 0..{steps}")
    return final + (initial - final) * (1 - step / steps) ** 3


class GradualPruner:
    """Called before every training iteration; prunes to the scheduled sparsity at each step.

    Pruning steps fall at iterations 0, every, 2 * every, ... ((steps - 1) * every); the last one
    reaches `final`. Pruned weights stay pruned: the masks are folded into the weights before each
    step, so the zeros are the smallest magnitudes when the next, larger mask is drawn.
    """

    def __init__(self, model: nn.Module, prune_fn: PruneFn, final: float, steps: int, every: int):
        self.model, self.prune_fn, self.final = model, prune_fn, final
        self.steps, self.every = steps, max(every, 1)
        self.done = 0  # pruning steps applied so far

    def __call__(self, iteration: int) -> None:
        if iteration % self.every or iteration // self.every >= self.steps:
            return
        self._prune_to(iteration // self.every + 1)

    def finish(self) -> None:
        """Reach the final sparsity if training ended before the last step (tiny budgets)."""
        if self.done < self.steps:
            self._prune_to(self.steps)

    def _prune_to(self, step: int) -> None:
        make_permanent(self.model)
        self.prune_fn(self.model, cubic_sparsity(step, self.steps, self.final))
        self.done = step


def gradual(prune_fn: PruneFn, retrain: Retrainer, steps: int, ramp: float) -> Method:
    """Zhu & Gupta (2017): sparsity rises along the cubic schedule in `steps` pruning steps spread
    over the first `ramp` fraction of the retraining budget; the rest recovers accuracy."""

    def method(model: nn.Module, rate: float) -> nn.Module:
        every = max(int(ramp * retrain.iterations / steps), 1)
        pruner = GradualPruner(model, prune_fn, rate, steps, every)
        retrain(model, before_step=pruner)
        pruner.finish()
        return model

    return method
