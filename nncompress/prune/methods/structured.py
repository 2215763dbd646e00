"""Structured pruning: whole hidden units go (neurons and conv filters with the smallest |incoming
weights| x |weights they feed|), the network is rebuilt as a smaller dense one (Torch-Pruning's
dependency graph), which is fine-tuned for the shared budget."""

import torch

from nncompress.prune.registry import Context, MethodConfig, register
from nncompress.prune.schedule import Method, one_shot
from nncompress.prune.structured import Refused, check, neuron_prune, shrink
from nncompress.schema import Seeds


@register("structured")
class StructuredPruning(MethodConfig):
    seeds: Seeds

    def build(self, ctx: Context) -> Method:
        try:  # before any work: a network it cannot handle (built aside: the seeded runs stay as they were)
            with torch.random.fork_rng(devices=[]):
                check(ctx.params.model.build())
        except Refused as exc:
            raise Refused(f"params.yaml: model.arch {ctx.params.model.arch}: {exc}") from None
        return one_shot(neuron_prune, ctx.retrainer(), reshape=shrink)
