"""Structured pruning of hidden neurons and shrinking the result into a smaller dense MLP; every
layer keeps a unit at any rate; a network it cannot handle is a one-line ParamError."""

from __future__ import annotations

import pytest
import torch
import yaml
from conftest import ROOT, Branching, random_split
from torch import nn
from torch.nn.utils import prune

from nncompress import config
from nncompress.errors import ParamError
from nncompress.model import MLP
from nncompress.nets import NETS
from nncompress.prune import Context
from nncompress.prune.masks import prunable
from nncompress.prune.structured import check, hidden_units, kept, neuron_prune, shrink
from nncompress.schema import parse

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


@pytest.mark.parametrize("rate", [0.97, 0.99])
def test_every_layer_keeps_one_neuron_at_extreme_rates(rate):
    """round(rate * 16) = 16 would remove every neuron: one stays, the one of largest importance,
    and the shrunk model computes what the masked one computes."""
    model = make_model()
    with torch.no_grad():
        model.fc2.weight[:, 5].mul_(10.0)  # neuron 5 drives the logits the most
    neuron_prune(model, rate)
    assert kept(model.fc1).tolist() == [5]
    small = shrink(model)
    assert small.fc1.out_features == small.fc2.in_features == 1
    assert n_params(small) == 785 + 2 * 10
    model.eval()
    small.eval()
    with torch.no_grad():
        assert torch.allclose(small(inputs()), model(inputs()), atol=1e-5)


@pytest.mark.parametrize("size", [1, 7, 16, 20, 50, 256])
def test_below_the_cap_the_masks_are_ln_structureds_at_the_rate(size):
    """Only a layer that would be emptied loses one unit fewer: every other mask is the one
    ln_structured draws for the rate itself (so results from before the cap stay bit for bit)."""
    for rate in (0.0, 0.1, 0.37, 0.5, 0.9, 0.95, 0.96, 0.97, 0.975, 0.98, 0.99):
        model = make_model(hidden=size)
        reference = make_model(hidden=size)
        neuron_prune(model, rate)
        if round(rate * size) == size:
            assert len(kept(model.fc1)) == 1, (size, rate)
            continue
        scores = reference.fc1.weight.detach() * reference.fc2.weight.detach().norm(dim=0)[:, None]
        prune.ln_structured(reference.fc1, "weight", amount=rate, n=2, dim=0, importance_scores=scores)
        assert torch.equal(model.fc1.weight_mask, reference.fc1.weight_mask), (size, rate)


def net_params(model: dict):
    """The committed params.yaml with its model section replaced, one epoch of fine-tuning."""
    data = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    data["model"] = model
    data["finetune"].update(epochs=1, batch_size=8, device="cpu")
    return parse(config.Params, data)


NET_SECTIONS = {  # the MLP's second layer, of 32, would be emptied at 0.99 too (round(31.68) = 32)
    "lenet5": {"arch": "lenet5"},
    "lenet300": {"arch": "lenet300"},
    "mlp": {"arch": "mlp", "hidden": [256, 32], "activation": "sigmoid", "dropout": 0.15},
}


@pytest.mark.parametrize("arch", sorted(NET_SECTIONS))
def test_the_method_works_at_rate_099_on_every_registered_network(arch):
    """LeNet-5's conv1 has 20 filters and conv2 50: at 0.99 both would be emptied (round(19.8) = 20,
    round(49.5) = 50), which crashed the forward pass. Each now keeps one."""
    params = net_params(NET_SECTIONS[arch])
    g = torch.Generator().manual_seed(0)
    train, val = random_split(g, 16), random_split(g, 8)
    method = params.method("structured").build(Context(params, train, val))
    torch.manual_seed(0)
    dense = params.model.build()
    widths = [u.layer.weight.shape[0] for u in hidden_units(dense)]
    torch.manual_seed(1)
    small = method(dense, 0.99)
    assert [u.layer.weight.shape[0] for u in hidden_units(small)] == [max(n - round(0.99 * n), 1) for n in widths]
    small.eval()
    with torch.no_grad():
        logits = small(inputs(4))
    assert logits.shape == (4, 10) and torch.isfinite(logits).all()


@pytest.mark.parametrize("rate", [0.975, 0.99])
def test_lenet5_shrunk_at_extreme_rates_computes_what_the_masked_one_computes(rate):
    torch.manual_seed(0)
    model = NETS["lenet5"]().build()
    with torch.no_grad():  # biases large enough that a removed filter's constant output matters
        for _, layer in prunable(model):
            layer.bias.uniform_(-1.0, 1.0)
    neuron_prune(model, rate)
    assert len(kept(model.conv1)) == len(kept(model.conv2)) == 1
    small = shrink(model)
    assert small.conv1.out_channels == small.conv2.in_channels == small.conv2.out_channels == 1
    model.eval()
    small.eval()
    with torch.no_grad():
        assert torch.allclose(small(inputs(8)), model(inputs(8)), atol=1e-5)


# --- networks it cannot handle: a one-line ParamError before any work -----------------------------


REFUSED = {
    "branching": (
        Branching,
        "structured pruning handles chains of layers, but in the Branching network "
        "layer stem feeds several (left, right)",
    ),
    "no hidden units": (
        lambda: nn.Sequential(nn.Flatten(), nn.Linear(784, 10)),
        "structured pruning needs hidden units (a Linear or Conv2d layer that feeds another), "
        "and the Sequential network has none",
    ),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_a_network_it_cannot_handle_is_a_param_error_before_any_work(name):
    build, message = REFUSED[name]
    torch.manual_seed(0)
    model = build()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    with pytest.raises(ParamError) as checked:
        check(model)
    assert str(checked.value) == message
    assert torch.equal(torch.get_rng_state(), rng)  # the check leaves the seeded runs alone
    with pytest.raises(ParamError) as pruned:
        neuron_prune(model, 0.5)
    assert str(pruned.value) == message
    assert not any(prune.is_pruned(m) for m in model.modules())  # nothing masked
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("arch", sorted(NET_SECTIONS))
def test_the_registered_networks_pass_the_check(arch):
    check(net_params(NET_SECTIONS[arch]).model.build())


def test_a_removed_filter_that_cannot_fold_into_a_padded_conv_is_a_param_error():
    """A removed filter's constant output, seen through a padded convolution, varies near the border:
    it cannot go into a bias. Known only once the filters to remove are."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Unflatten(1, (1, 28, 28)),
        nn.Conv2d(1, 4, 3),
        nn.Conv2d(4, 2, 3, padding=1),
        nn.Flatten(),
        nn.Linear(2 * 26 * 26, 10),
    )
    with torch.no_grad():
        model[1].bias.fill_(1.0)
    check(model)
    neuron_prune(model, 0.5)
    with pytest.raises(ParamError, match=r"^structured pruning cannot fold the filters it removes .* padded Conv2d"):
        shrink(model)
