"""LeNet-300-100 (LeCun et al. 1998), the fully connected network of the pruning literature
(Han et al. 2015, Frankle & Carbin 2019): 784-300-100-10, ReLU, no dropout; 266,610 parameters."""

from __future__ import annotations

from nncompress.nets.mlp import MLP
from nncompress.nets.registry import NetConfig, register

HIDDEN = (300, 100)


@register("lenet300")
class LeNet300Config(NetConfig):
    """A fixed network: the section is `arch: lenet300` alone."""

    def build(self) -> MLP:
        return MLP(HIDDEN, "relu", 0.0)
