"""Gradual magnitude pruning: the cubic schedule of Zhu & Gupta (2017), and GradualPruner driven by
training.fit's before_step hook on a tiny model."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils import prune

from nncompress.model import MLP
from nncompress.prune.masks import make_permanent, prunable, unstructured
from nncompress.prune.schedule import GradualPruner, cubic_sparsity
from nncompress.training import fit

HIDDEN = 16
SIZES = {"fc1": 784 * HIDDEN, "fc2": HIDDEN * 10}
TOTAL = sum(SIZES.values())
N_TRAIN, BATCH = 64, 8  # 8 iterations per epoch
SCOPES = {"layer": unstructured("magnitude", "layer"), "global": unstructured("magnitude", "global")}


# --- the schedule -------------------------------------------------------------------------------


def zhu_gupta(t, n, s_f, s_i=0.0):
    """s_t = s_f + (s_i - s_f)(1 - t/n)^3, written out independently of the package."""
    return s_f + (s_i - s_f) * (1.0 - t / n) ** 3


@pytest.mark.parametrize("steps", [1, 2, 3, 10, 100])
@pytest.mark.parametrize("final", [0.0, 0.37, 0.9, 0.99])
def test_cubic_sparsity_follows_the_formula_at_every_step(steps, final):
    values = [cubic_sparsity(t, steps, final) for t in range(steps + 1)]
    for t, value in enumerate(values):
        assert value == pytest.approx(zhu_gupta(t, steps, final), abs=1e-12)
    assert values[0] == 0.0
    assert values[-1] == final  # exactly: the last step reaches the target
    assert all(b >= a for a, b in zip(values, values[1:], strict=False))  # non-decreasing


def test_cubic_sparsity_hand_computed_values():
    # s_f = 0.9, n = 10: 0.9 * (1 - (1 - t/10)^3)
    assert cubic_sparsity(1, 10, 0.9) == pytest.approx(0.9 * (1 - 0.729), abs=1e-12)  # 0.2439
    assert cubic_sparsity(5, 10, 0.9) == pytest.approx(0.7875, abs=1e-12)
    assert cubic_sparsity(9, 10, 0.9) == pytest.approx(0.8991, abs=1e-12)
    assert cubic_sparsity(1, 2, 0.8) == pytest.approx(0.7, abs=1e-12)


def test_cubic_sparsity_front_loads_the_pruning():
    """The cubic prunes fastest at first: each step removes less than the one before."""
    increments = [cubic_sparsity(t + 1, 10, 0.9) - cubic_sparsity(t, 10, 0.9) for t in range(10)]
    assert all(b < a for a, b in zip(increments, increments[1:], strict=False))


@pytest.mark.parametrize("initial", [0.2, 0.5])
def test_cubic_sparsity_from_a_non_zero_start(initial):
    assert cubic_sparsity(0, 4, 0.9, initial) == pytest.approx(initial, abs=1e-12)
    assert cubic_sparsity(4, 4, 0.9, initial) == 0.9
    for t in range(5):
        assert cubic_sparsity(t, 4, 0.9, initial) == pytest.approx(zhu_gupta(t, 4, 0.9, initial), abs=1e-12)


@pytest.mark.parametrize(("step", "steps"), [(-1, 10), (11, 10), (2, 1), (-1, 0), (1, 0)])
def test_cubic_sparsity_outside_the_schedule_raises(step, steps):
    with pytest.raises(ValueError, match=rf"^step {step} outside 0\.\.{steps}$"):
        cubic_sparsity(step, steps, 0.9)


# --- GradualPruner inside fit -------------------------------------------------------------------


def effective_weights(model):
    """The weights the forward pass uses now (weight_orig * mask while masks are attached)."""
    result = {}
    for name, module in prunable(model):
        if prune.is_pruned(module):
            result[name] = (module.weight_orig * module.weight_mask).detach().clone()
        else:
            result[name] = module.weight.detach().clone()
    return result


def expected_zeros(scope, sparsity_level):
    """Zeroed weights per layer ('layer' scope) or overall ('global' scope) at a sparsity level."""
    if scope == "layer":
        return {name: round(sparsity_level * n) for name, n in SIZES.items()}
    return {"total": round(sparsity_level * TOTAL)}


def zero_counts(scope, weights):
    counts = {name: int((w == 0).sum()) for name, w in weights.items()}
    return counts if scope == "layer" else {"total": sum(counts.values())}


def run_gradual(scope, rate, steps, every, epochs=2, finish=False):
    """Train a tiny MLP with a GradualPruner as before_step. Returns the model and a record of each
    pruning call: (iteration, requested sparsity, weights just after the call), and the zero masks
    seen before every iteration."""
    torch.manual_seed(0)
    model = MLP(hidden_size=HIDDEN)
    g = torch.Generator().manual_seed(0)
    images, labels = torch.rand(N_TRAIN, 784, generator=g), torch.randint(0, 10, (N_TRAIN,), generator=g)
    calls, per_iteration, current = [], [], []

    def recording_prune(m, amount):
        SCOPES[scope](m, amount)
        calls.append((current[-1], amount, effective_weights(m)))

    pruner = GradualPruner(model, recording_prune, rate, steps, every)

    def before_step(iteration):
        current.append(iteration)
        pruner(iteration)
        per_iteration.append({name: w == 0 for name, w in effective_weights(model).items()})

    fit(
        model,
        (images, labels),
        (images[:16], labels[:16]),
        epochs=epochs,
        batch_size=BATCH,
        lr=0.5,
        momentum=0.9,
        shuffle=True,
        seed=0,
        before_step=before_step,
    )
    assert current == list(range(epochs * N_TRAIN // BATCH))  # fit called the hook before every step
    if finish:
        pruner.finish()
    return model, calls, per_iteration


@pytest.mark.parametrize("scope", sorted(SCOPES))
@pytest.mark.parametrize(("rate", "steps", "every"), [(0.9, 4, 3), (0.5, 3, 5), (0.99, 16, 1), (0.37, 1, 4)])
def test_pruning_steps_follow_the_schedule(scope, rate, steps, every):
    _, calls, _ = run_gradual(scope, rate, steps, every)
    assert [c[0] for c in calls] == [k * every for k in range(steps)]  # iterations 0, every, 2 * every, ...
    for k, (_, amount, weights) in enumerate(calls, start=1):
        assert amount == cubic_sparsity(k, steps, rate)
        assert zero_counts(scope, weights) == expected_zeros(scope, cubic_sparsity(k, steps, rate))
    assert calls[-1][1] == rate


@pytest.mark.parametrize("scope", sorted(SCOPES))
@pytest.mark.parametrize("rate", [0.37, 0.9, 0.99])
def test_sparsity_after_training_is_exactly_the_rate(scope, rate):
    model, _, _ = run_gradual(scope, rate, steps=4, every=3)
    make_permanent(model)
    assert not any(prune.is_pruned(m) for _, m in prunable(model))
    final = {name: m.weight.detach() for name, m in prunable(model)}
    assert zero_counts(scope, final) == expected_zeros(scope, rate)


@pytest.mark.parametrize("scope", sorted(SCOPES))
def test_pruned_weights_never_come_back(scope):
    model, calls, per_iteration = run_gradual(scope, 0.9, steps=4, every=3)
    # after every pruning step the zeros include all earlier ones ...
    for (_, _, before), (_, _, after) in zip(calls, calls[1:], strict=False):
        for name in before:
            assert torch.all(after[name][before[name] == 0] == 0), name
    # ... and at no iteration does a zero weight become non-zero again, though training goes on
    for before, after in zip(per_iteration, per_iteration[1:], strict=False):
        for name in before:
            assert torch.all(after[name][before[name]]), name
    make_permanent(model)
    for name, module in prunable(model):
        assert torch.all(module.weight[per_iteration[-1][name]] == 0)
    # training did change the surviving weights after the last pruning step
    last = calls[-1][2]
    for name, module in prunable(model):
        kept = last[name] != 0
        assert not torch.equal(module.weight.detach()[kept], last[name][kept]), name


def test_layer_scope_prunes_each_layer_to_the_same_fraction_and_global_does_not():
    layer, _, _ = run_gradual("layer", 0.9, steps=2, every=4)
    glob, _, _ = run_gradual("global", 0.9, steps=2, every=4)
    make_permanent(layer)
    make_permanent(glob)
    frac = {name: float((m.weight == 0).float().mean()) for name, m in prunable(layer)}
    assert frac["fc1"] == pytest.approx(0.9, abs=1 / SIZES["fc1"])
    assert frac["fc2"] == pytest.approx(0.9, abs=1 / SIZES["fc2"])
    glob_frac = {name: float((m.weight == 0).float().mean()) for name, m in prunable(glob)}
    assert glob_frac["fc1"] != pytest.approx(glob_frac["fc2"], abs=0.01)  # fc2's weights are larger at init


def test_no_pruning_outside_the_scheduled_iterations():
    calls = []
    pruner = GradualPruner(MLP(hidden_size=4), lambda m, amount: calls.append(amount), 0.8, steps=3, every=5)
    for iteration in range(40):
        pruner(iteration)
    assert calls == [cubic_sparsity(k, 3, 0.8) for k in (1, 2, 3)]


def test_every_below_one_is_one():
    seen = []
    pruner = GradualPruner(MLP(hidden_size=4), lambda m, amount: seen.append(amount), 0.5, steps=2, every=0)
    for iteration in range(4):
        pruner(iteration)
    assert seen == [cubic_sparsity(1, 2, 0.5), 0.5]


# --- finish: reaching the target when training ends early ---------------------------------------


def recording_pruner(steps, every, final=0.8):
    calls = []
    pruner = GradualPruner(MLP(hidden_size=4), lambda m, amount: calls.append(amount), final, steps=steps, every=every)
    return pruner, calls


def test_finish_after_the_whole_schedule_prunes_no_more():
    pruner, calls = recording_pruner(steps=3, every=2)
    for iteration in range(10):
        pruner(iteration)
    pruner.finish()
    assert calls == [cubic_sparsity(k, 3, 0.8) for k in (1, 2, 3)]


def test_finish_after_a_truncated_schedule_jumps_to_the_target():
    pruner, calls = recording_pruner(steps=10, every=1)
    for iteration in range(4):  # training ended after 4 of the 10 steps
        pruner(iteration)
    pruner.finish()
    assert calls == [cubic_sparsity(k, 10, 0.8) for k in (1, 2, 3, 4)] + [0.8]


def test_finish_without_any_iteration_prunes_once_to_the_target():
    pruner, calls = recording_pruner(steps=4, every=3)
    pruner.finish()
    assert calls == [0.8]


@pytest.mark.parametrize("scope", sorted(SCOPES))
def test_truncated_training_still_ends_at_exactly_the_rate(scope):
    """16 iterations cannot hold 20 steps one iteration apart; finish() makes up the difference,
    keeping the weights pruned so far."""
    model, calls, per_iteration = run_gradual(scope, 0.9, steps=20, every=1, finish=True)
    assert [c[1] for c in calls] == [cubic_sparsity(k, 20, 0.9) for k in range(1, 17)] + [0.9]
    for name, zeros in per_iteration[-1].items():
        assert torch.all(calls[-1][2][name][zeros] == 0), name
    make_permanent(model)
    final = {name: m.weight.detach() for name, m in prunable(model)}
    assert zero_counts(scope, final) == expected_zeros(scope, 0.9)
