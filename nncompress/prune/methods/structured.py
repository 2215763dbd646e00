"""Structured pruning: whole hidden neurons go (smallest |W1 row| x |W2 column|), the network is
rebuilt as a smaller dense one, which is fine-tuned for the shared budget. For the MLP with one
hidden layer only (model.arch mlp, one width in model.hidden)."""

from nncompress.nets.mlp import require_one_hidden_layer
from nncompress.prune.registry import Context, MethodConfig, register
from nncompress.prune.schedule import Method, one_shot
from nncompress.prune.structured import neuron_prune, shrink
from nncompress.schema import Seeds


@register("structured")
class StructuredPruning(MethodConfig):
    seeds: Seeds

    def build(self, ctx: Context) -> Method:
        require_one_hidden_layer(ctx.params.model, "the structured method")
        return one_shot(neuron_prune, ctx.retrainer(), reshape=shrink)
