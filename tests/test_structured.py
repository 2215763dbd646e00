"""Structured pruning of hidden neurons and shrinking the result into a smaller dense MLP."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from nncompress.model import MLP
from nncompress.prune.structured import kept, neuron_prune, shrink

HIDDEN = 16
RATES = (0.0, 0.1, 0.25, 0.37, 0.5, 0.9)  # round(rate * 16): 0, 2, 4, 6, 8, 14


def make_model(hidden=HIDDEN, activation="sigmoid", seed=0, dropout=0.15):
    torch.manual_seed(seed)
    model = MLP(hidden_size=hidden, activation=activation, dropout=dropout)
    with torch.no_grad():  # biases large enough that a dropped neuron's constant output matters
        model.fc1.bias.uniform_(-2.0, 2.0)
    return model


def inputs(n=32):
    return torch.rand(n, 784, generator=torch.Generator().manual_seed(1))


def n_params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("rate", RATES)
def test_shrunk_model_has_the_kept_neurons_and_the_parameter_count(rate):
    model = make_model()
    neuron_prune(model, rate)
    small = shrink(model)
    k = HIDDEN - round(rate * HIDDEN)
    assert small.fc1.out_features == k
    assert small.fc2.in_features == k
    assert small.fc1.weight.shape == (k, 784)
    assert small.fc2.weight.shape == (10, k)
    assert n_params(small) == (784 + 1) * k + (k + 1) * 10
    assert len(kept(model.fc1)) == k


def test_known_sizes_at_hidden_256():
    """round(0.37 * 256) = 95 neurons removed: 161 kept, 785 * 161 + 162 * 10 parameters."""
    model = make_model(hidden=256)
    neuron_prune(model, 0.37)
    small = shrink(model)
    assert small.fc1.out_features == 161
    assert n_params(small) == 128_005
    assert int((model.fc1.weight_mask.sum(dim=1) == 0).sum()) == 95  # whole rows masked


@pytest.mark.parametrize("activation", ["sigmoid", "relu", "tanh"])
@pytest.mark.parametrize("rate", [0.0, 0.25, 0.37, 0.5, 0.9])
def test_shrunk_model_computes_what_the_masked_model_computes(activation, rate):
    model = make_model(activation=activation)
    neuron_prune(model, rate)
    small = shrink(model)
    model.eval()
    small.eval()
    x = inputs()
    with torch.no_grad():
        expected, got = model(x), small(x)
    assert torch.allclose(got, expected, atol=1e-5)
    assert type(small.act) is type(model.act)
    if rate > 0:
        # the dropped neurons' constant act(b1) matters: dropping their columns alone is not enough
        with torch.no_grad():
            naive = nn.functional.linear(small.act(small.fc1(x)), small.fc2.weight, model.fc2.bias)
        assert not torch.allclose(naive, expected, atol=1e-3)


def test_masked_neurons_are_those_with_the_smallest_norm_product():
    model = make_model()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        # fc1 row norms and fc2 column norms both spread over two orders of magnitude, independently,
        # so ranking by |W1 row| alone, or by |W2 column| alone, differs from ranking by the product
        model.fc1.weight.mul_(torch.logspace(-1, 1, HIDDEN)[torch.randperm(HIDDEN, generator=g)][:, None])
        model.fc2.weight.mul_(torch.logspace(-1, 1, HIDDEN)[torch.randperm(HIDDEN, generator=g)])
    w1, w2 = model.fc1.weight.detach().clone(), model.fc2.weight.detach().clone()
    importance = w1.norm(dim=1) * w2.norm(dim=0)
    assert len(importance.unique()) == HIDDEN
    for rate in (0.25, 0.5, 0.9):
        trial = make_model()
        trial.load_state_dict(model.state_dict())
        neuron_prune(trial, rate)
        removed = round(rate * HIDDEN)
        order = importance.argsort()
        expected_keep = order[removed:].sort().values
        assert torch.equal(kept(trial.fc1), expected_keep)
        # not the same as ranking by either norm alone (else this test could not tell them apart)
        assert not torch.equal(w1.norm(dim=1).argsort()[removed:].sort().values, expected_keep)
        assert not torch.equal(w2.norm(dim=0).argsort()[removed:].sort().values, expected_keep)
        mask = trial.fc1.weight_mask
        assert torch.all(mask[order[:removed]] == 0)
        assert torch.all(mask[order[removed:]] == 1)
        small = shrink(trial)
        assert torch.equal(small.fc1.weight, w1[expected_keep])
        assert torch.equal(small.fc1.bias, model.fc1.bias.detach()[expected_keep])
        assert torch.equal(small.fc2.weight, w2[:, expected_keep])


def test_ranking_uses_the_product_not_the_incoming_norm():
    """Neuron 0 has the largest incoming weights but drives nothing: it goes first."""
    model = make_model()
    with torch.no_grad():
        model.fc1.weight[0].mul_(100.0)
        model.fc2.weight[:, 0].mul_(1e-6)
    neuron_prune(model, 1 / HIDDEN)
    assert 0 not in kept(model.fc1).tolist()
    assert len(kept(model.fc1)) == HIDDEN - 1


def test_importance_uses_l2_norms():
    """Neuron 0's incoming weights are one 2.0 (L2 norm 2, L1 norm 2); neuron 1's are 784 times
    0.05 (L2 norm 1.4, L1 norm 39.2). With equal outgoing norms, L2 ranks neuron 1 lowest."""
    model = make_model()
    with torch.no_grad():
        model.fc1.weight.mul_(100.0)  # every other neuron far more important
        model.fc1.weight[0] = 0.0
        model.fc1.weight[0, 123] = 2.0
        model.fc1.weight[1] = 0.05
        model.fc2.weight[:, 1] = model.fc2.weight[:, 0]
    neuron_prune(model, 1 / HIDDEN)
    assert kept(model.fc1).tolist() == [0, *range(2, HIDDEN)]


def test_rate_zero_keeps_every_neuron():
    model = make_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    neuron_prune(model, 0.0)
    assert torch.equal(kept(model.fc1), torch.arange(HIDDEN))
    small = shrink(model)
    assert small.fc1.out_features == HIDDEN
    assert n_params(small) == n_params(MLP(hidden_size=HIDDEN))
    for key, value in small.state_dict().items():
        assert torch.equal(value, before[key]), key
    model.eval()
    small.eval()
    with torch.no_grad():
        assert torch.equal(small(inputs()), model(inputs()))


def test_kept_neurons_of_an_unpruned_model_is_every_neuron():
    assert torch.equal(kept(MLP(hidden_size=5).fc1), torch.arange(5))


@pytest.mark.parametrize("activation", ["sigmoid", "relu", "tanh"])
def test_shrunk_model_is_a_plain_mlp(activation):
    model = make_model(activation=activation, dropout=0.4)  # not MLP's default dropout
    neuron_prune(model, 0.5)
    assert prune.is_pruned(model.fc1)
    small = shrink(model)
    assert type(small) is MLP
    assert type(small.act) is type(model.act)
    assert small.dropout.p == 0.4
    assert set(small.state_dict()) == {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}
    assert list(small.buffers()) == []
    for module in small.modules():
        assert not prune.is_pruned(module)
        assert len(module._forward_pre_hooks) == 0
    assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in small.parameters())
    # a real dense model: it trains and its state loads into a fresh MLP of its size
    fresh = MLP(hidden_size=small.fc1.out_features, activation=activation)
    fresh.load_state_dict(small.state_dict())


def test_shrink_leaves_the_masked_model_alone():
    model = make_model()
    neuron_prune(model, 0.5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    shrink(model)
    after = model.state_dict()
    assert set(after) == set(before)
    assert all(torch.equal(after[k], before[k]) for k in before)


def test_neuron_prune_masks_only_fc1_rows():
    model = make_model()
    neuron_prune(model, 0.5)
    assert not prune.is_pruned(model.fc2)
    mask = model.fc1.weight_mask
    rows = mask.sum(dim=1)
    assert set(rows.tolist()) == {0.0, 784.0}  # whole rows, nothing partial
    assert int((rows == 0).sum()) == 8


def test_removing_every_neuron_leaves_the_folded_bias():
    """round(0.99 * 16) = 16: nothing is left but the constant logits, which still match."""
    model = make_model()
    neuron_prune(model, 0.99)
    small = shrink(model)
    assert small.fc1.out_features == 0
    assert n_params(small) == 10
    model.eval()
    small.eval()
    with torch.no_grad():
        assert torch.allclose(small(inputs()), model(inputs()), atol=1e-5)
