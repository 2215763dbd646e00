"""Structured pruning: whole hidden units go (neurons and conv filters with the smallest |incoming
weights| x |weights they feed|), the network is rebuilt as a smaller dense one (Torch-Pruning's
dependency graph), which is fine-tuned for the shared budget."""

from nncompress.prune.registry import Context, MethodConfig, register
from nncompress.prune.schedule import Method, one_shot
from nncompress.prune.structured import neuron_prune, shrink
from nncompress.schema import Seeds


@register("structured")
class StructuredPruning(MethodConfig):
    seeds: Seeds

    def build(self, ctx: Context) -> Method:
        return one_shot(neuron_prune, ctx.retrainer(), reshape=shrink)
