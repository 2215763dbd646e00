"""Gradual magnitude pruning with the cubic sparsity schedule of Zhu & Gupta (2017)."""

from __future__ import annotations

from torch import nn

from nncompress.pruning import PruneFn, make_permanent


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
