"""Magnitude pruning, the reference's improved method: each layer loses its smallest |w|; masked
fine-tuning for its own `finetune_epochs` (0 by default, as in the reference's code)."""

from nncompress.prune.masks import unstructured
from nncompress.prune.registry import Context, MethodConfig, register
from nncompress.prune.schedule import Method, one_shot
from nncompress.schema import Epochs


@register("magnitude")
class MagnitudePruning(MethodConfig):
    finetune_epochs: Epochs

    def build(self, ctx: Context) -> Method:
        return one_shot(unstructured("magnitude", "layer"), ctx.retrainer(self.finetune_epochs))

    def budget(self, ctx: Context) -> int:
        return self.finetune_epochs
