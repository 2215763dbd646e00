"""Layer-wise magnitude pruning, then masked fine-tuning for the shared budget (finetune.epochs)."""

from nncompress.prune.masks import unstructured
from nncompress.prune.registry import Context, MethodConfig, register
from nncompress.prune.schedule import Method, one_shot
from nncompress.schema import Seeds


@register("finetune")
class FinetunePruning(MethodConfig):
    seeds: Seeds

    def build(self, ctx: Context) -> Method:
        return one_shot(unstructured("magnitude", "layer"), ctx.retrainer())
