"""Random pruning, the reference's plain method: each layer loses the same fraction of its weights
at random, without retraining; repeated over seeds."""

from nncompress.prune.masks import unstructured
from nncompress.prune.registry import Context, MethodConfig, register
from nncompress.prune.schedule import Method, one_shot
from nncompress.schema import Seeds


@register("random")
class RandomPruning(MethodConfig):
    seeds: Seeds

    def build(self, ctx: Context) -> Method:
        return one_shot(unstructured("random", "layer"))

    def budget(self, ctx: Context) -> int:
        return 0
