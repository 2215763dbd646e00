"""Unstructured pruning, layer-wise and global: exact counts, the right weights, permanent masks, training."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn.utils import prune

from nncompress.model import MLP
from nncompress.prune.masks import CRITERIA, SCOPES, make_permanent, prunable, sparsity, unstructured
from nncompress.training import fit

# The old pruning module's functions, as the criterion x scope pairs that replace them.
random_prune = unstructured("random", "layer")
magnitude_prune = unstructured("magnitude", "layer")
global_magnitude_prune = unstructured("magnitude", "global")

RATES = (0.0, 0.1, 0.37, 0.5, 0.9, 0.99)
METHODS = {"random": random_prune, "magnitude": magnitude_prune}
SMALL_HIDDEN = 16  # fc1: 12544 weights, fc2: 160
SMALL_TOTAL = 784 * SMALL_HIDDEN + SMALL_HIDDEN * 10


def make_model(hidden):
    torch.manual_seed(0)
    return MLP(hidden_size=hidden)


def zeros(tensor):
    return int((tensor == 0).sum())


def test_prunable_layers_are_the_linear_layers():
    model = MLP(hidden_size=4)
    assert prunable(model) == [("fc1", model.fc1), ("fc2", model.fc2)]


def test_known_counts_at_rate_037():
    """round(0.37 * n) per layer, written out: 4641 of 12544 and 59 of 160."""
    for prune_fn in METHODS.values():
        model = make_model(SMALL_HIDDEN)
        prune_fn(model, 0.37)
        make_permanent(model)
        assert zeros(model.fc1.weight) == 4641
        assert zeros(model.fc2.weight) == 59


@pytest.mark.parametrize("hidden", [SMALL_HIDDEN, 256])
@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("method", sorted(METHODS))
def test_each_layer_loses_round_rate_n_weights(method, rate, hidden):
    model = make_model(hidden)
    biases = {name: m.bias.detach().clone() for name, m in prunable(model)}
    assert sparsity(model)["total"] == 0.0  # a fresh model has no exact zeros
    METHODS[method](model, rate)

    expected = {name: round(rate * m.weight.numel()) for name, m in prunable(model)}
    measured = sparsity(model)
    sizes = {name: m.weight.numel() for name, m in prunable(model)}
    for name in sizes:
        assert measured[name] == expected[name] / sizes[name]
    assert measured["total"] == sum(expected.values()) / sum(sizes.values())
    assert set(measured) == {"fc1", "fc2", "total"}

    make_permanent(model)
    for name, module in prunable(model):
        assert zeros(module.weight) == expected[name]
        assert torch.equal(module.bias, biases[name])  # biases never pruned


@pytest.mark.parametrize("rate", [0.1, 0.37, 0.5, 0.9])
def test_magnitude_prune_removes_exactly_the_smallest_weights(rate):
    torch.manual_seed(0)
    model = MLP(hidden_size=SMALL_HIDDEN)
    originals = {}
    for name, module in prunable(model):
        n = module.weight.numel()
        # distinct magnitudes in random order and with random signs: no ties at the threshold
        magnitudes = (torch.randperm(n).float() + 1) / n
        signs = torch.where(torch.rand(n) < 0.5, -1.0, 1.0)
        with torch.no_grad():
            module.weight.copy_((magnitudes * signs).reshape(module.weight.shape))
        originals[name] = module.weight.detach().clone()
    magnitude_prune(model, rate)
    make_permanent(model)
    for name, module in prunable(model):
        w = originals[name]
        k = round(rate * w.numel())
        threshold = w.abs().flatten().sort().values[k - 1]  # the k-th smallest magnitude
        removed = w.abs() <= threshold
        assert int(removed.sum()) == k
        assert torch.equal(module.weight == 0, removed)
        assert torch.equal(module.weight[~removed], w[~removed])  # survivors keep their values


def test_random_prune_keeps_surviving_values():
    model = make_model(SMALL_HIDDEN)
    before = model.fc1.weight.detach().clone()
    random_prune(model, 0.5)
    make_permanent(model)
    kept = model.fc1.weight != 0
    assert torch.equal(model.fc1.weight[kept], before[kept])


@pytest.mark.parametrize("method", sorted(METHODS))
def test_make_permanent_leaves_a_plain_model(method):
    model = make_model(SMALL_HIDDEN)
    METHODS[method](model, 0.5)
    assert all(prune.is_pruned(m) for _, m in prunable(model))
    assert "fc1.weight_orig" in model.state_dict()
    make_permanent(model)
    for _, module in prunable(model):
        assert not prune.is_pruned(module)
        assert not hasattr(module, "weight_orig")
        assert not hasattr(module, "weight_mask")
        assert len(module._forward_pre_hooks) == 0
        assert isinstance(module.weight, torch.nn.Parameter)
    assert set(model.state_dict()) == {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}
    assert set(model.state_dict()) == set(MLP(SMALL_HIDDEN).state_dict())
    assert sparsity(model)["fc1"] == round(0.5 * 12544) / 12544


def test_make_permanent_on_an_unpruned_model_is_a_no_op():
    model = make_model(SMALL_HIDDEN)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    make_permanent(model)
    after = model.state_dict()
    assert set(after) == set(before)
    assert all(torch.equal(after[k], before[k]) for k in before)


def random_masks(seed, rate=0.5):
    model = make_model(SMALL_HIDDEN)
    torch.manual_seed(seed)
    random_prune(model, rate)
    return [m.weight_mask.clone() for _, m in prunable(model)]


def test_random_prune_is_deterministic_for_a_seed():
    first, again, other = random_masks(7), random_masks(7), random_masks(8)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0], other[0])
    assert not torch.equal(first[1], other[1])


def test_magnitude_prune_ignores_the_rng():
    masks = []
    for seed in (1, 2):
        model = make_model(SMALL_HIDDEN)
        torch.manual_seed(seed)
        magnitude_prune(model, 0.5)
        masks.append(model.fc1.weight_mask.clone())
    assert torch.equal(masks[0], masks[1])


@pytest.mark.parametrize("method", [*sorted(METHODS), "global"])
def test_fit_keeps_pruned_weights_at_zero(method):
    model = make_model(SMALL_HIDDEN)
    {**METHODS, "global": global_magnitude_prune}[method](model, 0.6)
    masks = {name: m.weight_mask.clone() for name, m in prunable(model)}
    before = {name: m.weight.detach().clone() for name, m in prunable(model)}
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(64, 784, generator=generator)
    labels = torch.randint(0, 10, (64,), generator=generator)
    log = fit(
        model,
        (images, labels),
        (images[:16], labels[:16]),
        epochs=2,
        batch_size=16,
        lr=0.5,
        momentum=0.9,
        shuffle=True,
        seed=0,
    )
    assert log == []  # log_every=0: fine-tuning logs and evaluates nothing
    for name, module in prunable(model):
        pruned = masks[name] == 0
        assert prune.is_pruned(module)  # masks still attached
        assert torch.equal(module.weight_mask, masks[name])
        assert torch.all(module.weight[pruned] == 0)
        assert not torch.equal(module.weight[~pruned], before[name][~pruned])  # training did happen
    make_permanent(model)
    for name, module in prunable(model):
        assert zeros(module.weight) == int((masks[name] == 0).sum())
        assert torch.all(module.weight[masks[name] == 0] == 0)


# --- global magnitude pruning -------------------------------------------------------------------


def distinct_weights(model, scales=None):
    """Give the model's weights distinct magnitudes (one global random order, random signs), so
    there are no ties at any threshold; layer `name` is multiplied by scales[name]. Returns them."""
    layers = prunable(model)
    total = sum(m.weight.numel() for _, m in layers)
    g = torch.Generator().manual_seed(1)
    magnitudes = (torch.randperm(total, generator=g).double() + 1) / total
    signs = torch.where(torch.rand(total, generator=g) < 0.5, -1.0, 1.0).double()
    values, start = {}, 0
    for name, module in layers:
        n = module.weight.numel()
        w = (magnitudes[start : start + n] * signs[start : start + n]).reshape(module.weight.shape)
        w = (w * (scales or {}).get(name, 1.0)).float()
        with torch.no_grad():
            module.weight.copy_(w)
        values[name] = module.weight.detach().clone()
        start += n
    return values


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.37, 0.5, 0.9, 0.99])
def test_global_prune_removes_round_rate_total_weights(rate):
    model = make_model(SMALL_HIDDEN)
    biases = {name: m.bias.detach().clone() for name, m in prunable(model)}
    global_magnitude_prune(model, rate)
    expected = round(rate * SMALL_TOTAL)
    assert sparsity(model)["total"] == expected / SMALL_TOTAL
    make_permanent(model)
    assert sum(zeros(m.weight) for _, m in prunable(model)) == expected
    for name, module in prunable(model):
        assert torch.equal(module.bias, biases[name])  # biases never pruned


def test_global_prune_known_count_at_rate_037():
    """round(0.37 * 12704) = 4700 weights over both layers."""
    model = make_model(SMALL_HIDDEN)
    global_magnitude_prune(model, 0.37)
    make_permanent(model)
    assert zeros(model.fc1.weight) + zeros(model.fc2.weight) == 4700


@pytest.mark.parametrize("rate", [0.1, 0.37, 0.5, 0.9, 0.99])
def test_global_prune_removes_exactly_the_globally_smallest_weights(rate):
    model = make_model(SMALL_HIDDEN)
    originals = distinct_weights(model, scales={"fc2": math.pi})  # still distinct
    global_magnitude_prune(model, rate)
    make_permanent(model)
    everything = torch.cat([w.abs().flatten() for w in originals.values()])
    assert len(everything.unique()) == SMALL_TOTAL  # distinct: the threshold is unambiguous
    k = round(rate * SMALL_TOTAL)
    threshold = everything.sort().values[k - 1]  # the k-th smallest magnitude over all layers
    removed_total = 0
    for name, module in prunable(model):
        w = originals[name]
        removed = w.abs() <= threshold
        removed_total += int(removed.sum())
        assert torch.equal(module.weight == 0, removed), name
        assert torch.equal(module.weight[~removed], w[~removed])  # survivors keep their values
    assert removed_total == k


def test_global_prune_takes_more_from_the_layer_with_smaller_weights():
    model = make_model(SMALL_HIDDEN)
    distinct_weights(model, scales={"fc1": 0.1})  # fc1's magnitudes are a tenth of fc2's
    global_magnitude_prune(model, 0.5)
    measured = sparsity(model)
    assert measured["total"] == round(0.5 * SMALL_TOTAL) / SMALL_TOTAL
    assert measured["fc1"] > 0.5 > measured["fc2"]
    # layer-wise pruning of the same weights gives each layer the same fraction instead
    layer_wise = make_model(SMALL_HIDDEN)
    distinct_weights(layer_wise, scales={"fc1": 0.1})
    magnitude_prune(layer_wise, 0.5)
    assert sparsity(layer_wise)["fc1"] == sparsity(layer_wise)["fc2"] == 0.5


def test_global_prune_fractions_follow_the_weight_scales():
    """Scaling one layer up protects it; scaling it down sacrifices it, at the same global rate."""
    fractions = {}
    for scale in (0.2, 5.0):
        model = make_model(SMALL_HIDDEN)
        distinct_weights(model, scales={"fc2": scale})
        global_magnitude_prune(model, 0.9)
        fractions[scale] = sparsity(model)
        assert fractions[scale]["total"] == round(0.9 * SMALL_TOTAL) / SMALL_TOTAL
    assert fractions[0.2]["fc2"] > 0.9 > fractions[5.0]["fc2"]
    assert fractions[0.2]["fc1"] < fractions[5.0]["fc1"]


def test_global_prune_is_permanent_like_the_others():
    model = make_model(SMALL_HIDDEN)
    global_magnitude_prune(model, 0.5)
    assert all(prune.is_pruned(m) for _, m in prunable(model))
    make_permanent(model)
    assert set(model.state_dict()) == {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}
    assert not any(prune.is_pruned(m) for _, m in prunable(model))


# --- criterion x scope --------------------------------------------------------------------------


def test_criteria_are_torch_pruning_methods_and_scopes_are_layer_and_global():
    assert {"random": prune.RandomUnstructured, "magnitude": prune.L1Unstructured} == CRITERIA
    assert SCOPES == ("layer", "global")


def test_unknown_scope_or_criterion_is_refused():
    with pytest.raises(ValueError, match=r"^scope must be one of \('layer', 'global'\), got 'model'$"):
        unstructured("magnitude", "model")
    with pytest.raises(KeyError):
        unstructured("smallest", "layer")


def torch_masks(criterion, scope, seed, rate):
    """The masks torch.nn.utils.prune's own functions give, under torch seed `seed`."""
    model = make_model(SMALL_HIDDEN)
    targets = [(m, "weight") for _, m in prunable(model)]
    torch.manual_seed(seed)
    if scope == "global":
        method = {"random": prune.RandomUnstructured, "magnitude": prune.L1Unstructured}[criterion]
        prune.global_unstructured(targets, pruning_method=method, amount=rate)
    else:
        layer_fn = {"random": prune.random_unstructured, "magnitude": prune.l1_unstructured}[criterion]
        for module, name in targets:
            layer_fn(module, name, amount=rate)
    return [m.weight_mask.clone() for m, _ in targets]


@pytest.mark.parametrize("scope", ["layer", "global"])
@pytest.mark.parametrize("criterion", ["random", "magnitude"])
def test_each_pair_gives_the_masks_of_the_torch_calls(criterion, scope):
    """Same RNG state, same masks as torch's functions: the redesign changed no result."""
    for rate in (0.37, 0.9):
        model = make_model(SMALL_HIDDEN)
        torch.manual_seed(5)
        unstructured(criterion, scope)(model, rate)
        ours = [m.weight_mask.clone() for _, m in prunable(model)]
        assert all(torch.equal(a, b) for a, b in zip(ours, torch_masks(criterion, scope, 5, rate), strict=True))
        if criterion == "random":  # another seed, other masks: the seed is really used
            other = torch_masks(criterion, scope, 6, rate)
            assert not torch.equal(ours[0], other[0])


def test_random_global_prunes_the_rate_over_all_layers():
    model = make_model(SMALL_HIDDEN)
    torch.manual_seed(0)
    unstructured("random", "global")(model, 0.37)
    make_permanent(model)
    assert zeros(model.fc1.weight) + zeros(model.fc2.weight) == round(0.37 * SMALL_TOTAL)
