"""Gradual magnitude pruning (Zhu & Gupta 2017): during fine-tuning, sparsity rises from 0 to the
rate along a cubic schedule; the rest of the budget recovers accuracy at the target."""

from typing import Annotated

from nncompress.prune.masks import SCOPES, unstructured
from nncompress.prune.registry import Context, MethodConfig, register
from nncompress.prune.schedule import Method, gradual
from nncompress.schema import Number, Positive, Seeds, fraction, one_of


@register("gradual")
class GradualPruning(MethodConfig):
    seeds: Seeds
    steps: Positive  # pruning steps
    ramp: Annotated[Number, fraction("a fraction of the fine-tuning budget", low_open=True, high_open=False)]
    scope: Annotated[str, one_of(SCOPES)]

    def build(self, ctx: Context) -> Method:
        return gradual(unstructured("magnitude", self.scope), ctx.retrainer(), self.steps, self.ramp)
