"""Global magnitude pruning: one threshold across all layers, so layers lose different fractions;
then masked fine-tuning for the shared budget."""

from nncompress.prune.masks import unstructured
from nncompress.prune.registry import Context, MethodConfig, register
from nncompress.prune.schedule import Method, one_shot
from nncompress.schema import Seeds


@register("global")
class GlobalPruning(MethodConfig):
    seeds: Seeds

    def build(self, ctx: Context) -> Method:
        return one_shot(unstructured("magnitude", "global"), ctx.retrainer())
