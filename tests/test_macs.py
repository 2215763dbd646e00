"""Multiply-accumulates per image (nncompress.macs): nonzero weights of a Linear, nonzero weights x
output positions of a Conv2d, the smaller dense layers of a shrunk MLP."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from nncompress.macs import layer_macs, macs
from nncompress.model import MLP
from nncompress.nets import NETS
from nncompress.prune.masks import make_permanent, unstructured
from nncompress.prune.structured import neuron_prune, shrink

LENET5 = {"conv1": 20 * 25 * 24 * 24, "conv2": 50 * 500 * 8 * 8, "fc1": 800 * 500, "fc2": 500 * 10}


def test_the_dense_seed_mlp():
    assert macs(MLP()) == 784 * 256 + 256 * 10 == 203_264
    assert layer_macs(MLP()) == {"fc1": 784 * 256, "fc2": 256 * 10}


def test_the_dense_lenet5():
    model = NETS["lenet5"]().build()
    assert layer_macs(model) == LENET5
    assert macs(model) == sum(LENET5.values()) == 2_293_000


def test_the_dense_lenet300():
    assert layer_macs(NETS["lenet300"]().build()) == {"fc1": 784 * 300, "fc2": 300 * 100, "fc3": 100 * 10}
    assert macs(NETS["lenet300"]().build()) == 266_200


@pytest.mark.parametrize("layer", ["conv1", "conv2", "fc1", "fc2"])
def test_a_half_pruned_layer_halves_its_share(layer):
    torch.manual_seed(0)
    model = NETS["lenet5"]().build()
    prune.random_unstructured(getattr(model, layer), "weight", amount=0.5)  # a mask, not yet permanent
    counts = layer_macs(model)
    assert counts == {**LENET5, layer: LENET5[layer] // 2}
    make_permanent(model)
    assert layer_macs(model) == counts


def test_pruned_weights_count_nothing_and_survivors_count_their_positions():
    torch.manual_seed(1)
    model = NETS["lenet5"]().build()
    unstructured("magnitude", "global")(model, 0.9)
    nonzero = {name: int((getattr(model, name).weight != 0).sum()) for name in LENET5}
    positions = {"conv1": 24 * 24, "conv2": 8 * 8, "fc1": 1, "fc2": 1}
    assert layer_macs(model) == {name: nonzero[name] * positions[name] for name in LENET5}


def test_a_shrunk_mlp_counts_its_smaller_dense_layers():
    torch.manual_seed(2)
    model = MLP(16)
    neuron_prune(model, 0.75)
    small = shrink(model)
    assert small.fc1.out_features == 4
    assert macs(small) == 784 * 4 + 4 * 10


def test_counting_leaves_the_model_and_the_rng_as_they_were():
    torch.manual_seed(3)
    model = MLP(8, dropout=0.5).train()
    state = torch.get_rng_state()
    macs(model)
    assert model.training
    assert torch.equal(torch.get_rng_state(), state)  # no dropout draws: counted in eval mode
    assert all(not module._forward_hooks for module in model.modules())


def test_a_network_of_your_own():
    """Any module mapping flat images to logits: a strided conv's output positions are what it computes."""
    model = nn.Sequential(
        nn.Unflatten(1, (1, 28, 28)), nn.Conv2d(1, 3, 4, stride=2), nn.Flatten(), nn.Linear(3 * 13 * 13, 10)
    )
    assert layer_macs(model) == {"1": 3 * 16 * 13 * 13, "3": 3 * 13 * 13 * 10}
