"""The pruning methods (fresh trained model, rate) -> pruned model: one-shot with and without
fine-tuning, gradual, structured; alone and through run_sweep on tiny synthetic data."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import fresh, plain_sgd, random_split
from torch import nn
from torch.nn.utils import prune

from nncompress.errors import ParamError
from nncompress.model import MLP
from nncompress.prune.masks import make_permanent, prunable, unstructured
from nncompress.prune.retrain import Retrainer
from nncompress.prune.schedule import cubic_sparsity, gradual, one_shot
from nncompress.prune.structured import neuron_prune, shrink
from nncompress.sweep import run_sweep

# The old pruning functions, as criterion x scope; module constants so that `is` tells them apart.
random_prune = unstructured("random", "layer")
magnitude_prune = unstructured("magnitude", "layer")
global_magnitude_prune = unstructured("magnitude", "global")


def structured(retrain):
    """The structured method's schedule, as nncompress/prune/methods/structured.py composes it."""
    return one_shot(neuron_prune, retrain, reshape=shrink)


HIDDEN = 16
SIZES = {"fc1": 784 * HIDDEN, "fc2": HIDDEN * 10}
N_WEIGHTS = sum(SIZES.values())
N_PARAMS = N_WEIGHTS + HIDDEN + 10
N_TRAIN, BATCH = 64, 16  # 4 iterations per epoch
PRUNE_FNS = {"random": random_prune, "magnitude": magnitude_prune, "global": global_magnitude_prune}


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)

    return {"train": random_split(g, N_TRAIN), "val": random_split(g, 24), "test": random_split(g, 40)}


@pytest.fixture(scope="module")
def trained_state():
    torch.manual_seed(7)
    return {k: v.clone() for k, v in MLP(hidden_size=HIDDEN).state_dict().items()}


def optimiser(epochs, lr=0.5, batch_size=BATCH):
    """Plain SGD with momentum on the CPU, shuffled."""
    return plain_sgd(epochs, lr=lr, batch_size=batch_size)


def retrainer(data, epochs, batch_size=BATCH, lr=0.5, train=None):
    return Retrainer(train or data["train"], data["val"], optimiser(epochs, lr, batch_size), epochs)


def expected_zeros(prune_fn, rate):
    """Zeroed weights per layer, or overall for global pruning."""
    if prune_fn is global_magnitude_prune:
        return {"total": round(rate * N_WEIGHTS)}
    return {name: round(rate * n) for name, n in SIZES.items()}


def zero_counts(prune_fn, model):
    counts = {name: int((m.weight == 0).sum()) for name, m in prunable(model)}
    return {"total": sum(counts.values())} if prune_fn is global_magnitude_prune else counts


# --- Retrainer ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "batch_size", "epochs", "iterations"),
    [(64, 16, 1, 4), (50, 16, 3, 12), (50, 50, 2, 2), (50, 64, 1, 1), (64, 16, 0, 0), (65, 16, 2, 10)],
)
def test_retrainer_iterations_are_the_steps_it_takes(data, trained_state, n, batch_size, epochs, iterations):
    g = torch.Generator().manual_seed(1)
    train = (torch.rand(n, 784, generator=g), torch.randint(0, 10, (n,), generator=g))
    retrain = retrainer(data, epochs, batch_size=batch_size, train=train)
    assert retrain.iterations == epochs * math.ceil(n / batch_size) == iterations
    steps = []
    retrain(fresh(trained_state), before_step=steps.append)
    assert steps == list(range(iterations))


def test_retrainer_shuffles_with_a_seed_drawn_from_torch(data, trained_state):
    """Without dropout, the shuffling order is the only randomness: it follows torch's seed, which
    run_sweep sets per (seed, rate)."""

    def weights_after(seed):
        torch.manual_seed(seed)
        model = MLP(hidden_size=HIDDEN, dropout=0.0)
        model.load_state_dict(trained_state)
        retrainer(data, 2)(model)
        return model.fc1.weight.detach().clone()

    first, again, other = weights_after(5), weights_after(5), weights_after(6)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert not torch.equal(first, trained_state["fc1.weight"])  # it did train


def test_retrainer_takes_its_epochs_not_those_of_the_optimiser_block(data, trained_state):
    retrain = Retrainer(data["train"], data["val"], optimiser(5), 1)
    assert retrain.iterations == 4
    steps = []
    retrain(fresh(trained_state), before_step=steps.append)
    assert steps == [0, 1, 2, 3]


# --- one-shot -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PRUNE_FNS))
@pytest.mark.parametrize("epochs", [None, 0, 1])
def test_one_shot_keeps_exact_sparsity_and_pruned_weights_at_zero(data, trained_state, name, epochs):
    prune_fn = PRUNE_FNS[name]
    retrain = None if epochs is None else retrainer(data, epochs)
    torch.manual_seed(0)
    model = fresh(trained_state)
    returned = one_shot(prune_fn, retrain)(model, 0.7)
    assert returned is model
    masks = {n: m.weight_mask.clone() for n, m in prunable(model)}
    assert all(prune.is_pruned(m) for _, m in prunable(model))  # masks left for run_sweep to fold in
    make_permanent(model)
    assert zero_counts(prune_fn, model) == expected_zeros(prune_fn, 0.7)
    for n, module in prunable(model):
        pruned = masks[n] == 0
        original = trained_state[f"{n}.weight"]
        assert torch.all(module.weight[pruned] == 0)
        if epochs:  # fine-tuning moved the survivors
            assert not torch.equal(module.weight[~pruned], original[~pruned])
        else:  # no fine-tuning: survivors keep their trained values
            assert torch.equal(module.weight[~pruned], original[~pruned])


def test_one_shot_fine_tunes_the_masked_model(data, trained_state):
    """Fine-tuning sees the masks: gradients never revive a pruned weight, even with momentum."""
    seen = []

    class Spy(Retrainer):
        def __call__(self, model, before_step=None):
            seen.append((prune.is_pruned(model.fc1), int((model.fc1.weight == 0).sum())))
            super().__call__(model, before_step)

    retrain = Spy(data["train"], data["val"], optimiser(3, lr=1.0), 3)
    model = one_shot(magnitude_prune, retrain)(fresh(trained_state), 0.5)
    assert seen == [(True, round(0.5 * SIZES["fc1"]))]
    make_permanent(model)
    assert int((model.fc1.weight == 0).sum()) == round(0.5 * SIZES["fc1"])


@pytest.mark.parametrize("epochs", [0, 1])
def test_one_shot_reshapes_after_pruning_and_retrains_the_reshaped_model(data, trained_state, epochs):
    events = []

    def reshape(model):
        events.append(("reshape", prune.is_pruned(model.fc1)))
        small = MLP(hidden_size=4)
        small.tag = "reshaped"
        return small

    class Spy(Retrainer):
        def __call__(self, model, before_step=None):
            events.append(("retrain", getattr(model, "tag", None)))
            super().__call__(model, before_step)

    retrain = Spy(data["train"], data["val"], optimiser(1), epochs)
    returned = one_shot(magnitude_prune, retrain, reshape=reshape)(fresh(trained_state), 0.5)
    assert getattr(returned, "tag", None) == "reshaped"  # the method returns the reshaped model
    assert events == [("reshape", True), ("retrain", "reshaped")][: 1 + epochs]  # no retraining at 0 epochs


# --- gradual ------------------------------------------------------------------------------------


@pytest.mark.parametrize("scope", ["layer", "global"])
@pytest.mark.parametrize(("epochs", "steps", "ramp"), [(2, 2, 0.5), (3, 4, 0.6), (1, 4, 1.0), (2, 3, 0.1)])
def test_gradual_prunes_along_the_schedule_within_the_ramp(data, trained_state, scope, epochs, steps, ramp):
    prune_fn = magnitude_prune if scope == "layer" else global_magnitude_prune
    iterations_seen, amounts = [], []

    class Spy(Retrainer):
        def __call__(self, model, before_step=None):
            def spy(i):
                iterations_seen.append(i)
                before_step(i)

            super().__call__(model, spy)

    def recording_prune(model, amount):
        amounts.append((iterations_seen[-1], amount))
        prune_fn(model, amount)

    retrain = Spy(data["train"], data["val"], optimiser(epochs), epochs)
    torch.manual_seed(0)
    model = gradual(recording_prune, retrain, steps, ramp)(fresh(trained_state), 0.9)
    every = max(int(ramp * retrain.iterations / steps), 1)
    assert iterations_seen == list(range(retrain.iterations))
    assert amounts == [(k * every, cubic_sparsity(k + 1, steps, 0.9)) for k in range(steps)]
    assert amounts[-1][0] <= max(ramp * retrain.iterations, steps - 1)  # the target is reached within the ramp
    make_permanent(model)
    assert zero_counts(prune_fn, model) == expected_zeros(prune_fn, 0.9)


def test_gradual_without_fine_tuning_epochs_still_reaches_the_rate(data, trained_state):
    model = gradual(magnitude_prune, retrainer(data, 0), steps=2, ramp=0.5)(fresh(trained_state), 0.9)
    make_permanent(model)
    assert zero_counts(magnitude_prune, model) == expected_zeros(magnitude_prune, 0.9)


def test_gradual_with_more_steps_than_iterations_still_reaches_the_rate(data, trained_state):
    retrain = retrainer(data, 1)
    assert retrain.iterations == 4
    model = gradual(magnitude_prune, retrain, steps=10, ramp=1.0)(fresh(trained_state), 0.9)
    make_permanent(model)
    assert zero_counts(magnitude_prune, model) == expected_zeros(magnitude_prune, 0.9)


# --- structured ---------------------------------------------------------------------------------


@pytest.mark.parametrize("epochs", [0, 1])
def test_structured_returns_a_smaller_dense_mlp(data, trained_state, epochs):
    torch.manual_seed(0)
    small = structured(retrainer(data, epochs))(fresh(trained_state), 0.5)
    assert type(small) is MLP
    assert small.fc1.out_features == HIDDEN - 8
    assert not any(prune.is_pruned(m) for m in small.modules())
    assert sum(p.numel() for p in small.parameters()) == 785 * 8 + 9 * 10
    assert all(int((m.weight == 0).sum()) == 0 for _, m in prunable(small))
    # the shrunk model is what gets fine-tuned (for epochs > 0), not the masked original
    reference = fresh(trained_state)
    neuron_prune(reference, 0.5)
    shrunk = shrink(reference).state_dict()
    tuned = small.state_dict()
    assert set(tuned) == set(shrunk)
    if epochs:
        assert not any(torch.equal(tuned[k], shrunk[k]) for k in tuned)
    else:
        assert all(torch.equal(tuned[k], shrunk[k]) for k in tuned)


def test_structured_needs_the_mlp(data):
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    with pytest.raises(ParamError, match="structured pruning needs hidden units"):
        structured(retrainer(data, 0))(model, 0.5)


# --- through the sweep --------------------------------------------------------------------------

RATES = [0.0, 0.37, 0.9, 0.99]


def sweep(data, trained_state, method, rates=RATES, seeds=(0, 1)):
    return run_sweep(
        rates, lambda: fresh(trained_state), method, data["val"], data["test"], seeds=seeds, desc="methods"
    )


UNSTRUCTURED = {
    "finetune": lambda data: (magnitude_prune, one_shot(magnitude_prune, retrainer(data, 1))),
    "global": lambda data: (global_magnitude_prune, one_shot(global_magnitude_prune, retrainer(data, 1))),
    "gradual_layer": lambda data: (magnitude_prune, gradual(magnitude_prune, retrainer(data, 2), 3, 0.6)),
    "gradual_global": lambda data: (
        global_magnitude_prune,
        gradual(global_magnitude_prune, retrainer(data, 2), 3, 0.6),
    ),
}


@pytest.mark.parametrize("name", sorted(UNSTRUCTURED))
def test_unstructured_methods_in_a_sweep_reach_the_rate(data, trained_state, name):
    prune_fn, method = UNSTRUCTURED[name](data)
    runs = sweep(data, trained_state, method)
    assert runs["compression_rate"].tolist() == [r for r in RATES for _ in (0, 1)]
    assert runs["seed"].tolist() == [0, 1] * len(RATES)
    for row in runs.itertuples():
        zeros = sum(expected_zeros(prune_fn, row.compression_rate).values())
        assert row.nonzero_weights == N_WEIGHTS - zeros
        assert row.sparsity == pytest.approx(zeros / N_WEIGHTS, abs=1e-12)
        assert abs(row.sparsity - row.compression_rate) <= 1 / N_WEIGHTS
        assert row.parameters == N_PARAMS  # the dense parameter count
    again = sweep(data, trained_state, method)
    assert runs.equals(again)  # fine-tuning is seeded per (seed, rate)


@pytest.mark.parametrize("epochs", [0, 1])
def test_structured_in_a_sweep_removes_whole_neurons(data, trained_state, epochs):
    rates = [0.0, 0.25, 0.37, 0.9]
    runs = sweep(data, trained_state, structured(retrainer(data, epochs)), rates=rates)
    for row in runs.itertuples():
        k = HIDDEN - round(row.compression_rate * HIDDEN)
        kept_weights = (784 + 10) * k
        assert row.nonzero_weights == kept_weights
        assert row.sparsity == pytest.approx(1 - kept_weights / N_WEIGHTS, abs=1e-12)
        assert abs(row.sparsity - row.compression_rate) <= 0.5 / HIDDEN  # one neuron is 1/16 of the weights
        assert row.parameters == (784 + 1) * k + (k + 1) * 10
        if row.compression_rate > 0:
            assert row.parameters < N_PARAMS
        else:
            assert row.parameters == N_PARAMS
            assert row.sparsity == 0.0
