"""Lottery-ticket pruning with rewinding: the per-round sparsity, rewinding, the replay of early
training, and the method's rounds, determinism and final sparsity on a tiny MLP."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import committed_params, fresh, random_split, sweep_point
from torch.nn.utils import prune as torch_prune

from nncompress.model import MLP
from nncompress.prune.masks import make_permanent, prunable, unstructured
from nncompress.prune.methods import lottery
from nncompress.prune.methods.lottery import LotteryPruning, rewind, round_sparsity
from nncompress.prune.registry import Context
from nncompress.sweep import run_sweep
from nncompress.training import fit, train_model

ROOT = Path(__file__).resolve().parents[1]
HIDDEN = 8
SIZES = {"fc1": 784 * HIDDEN, "fc2": HIDDEN * 10}
N_WEIGHTS = sum(SIZES.values())
N_TRAIN, BATCH, TRAIN_EPOCHS = 64, 16, 3  # 4 iterations per epoch, 12 in the whole training run
CPU = torch.device("cpu")


TINY = {
    "model": {"hidden": [HIDDEN]},  # sigmoid, dropout 0.15 as committed: dropout draws from torch's RNG
    "train": {"epochs": TRAIN_EPOCHS, "batch_size": BATCH, "lr": 0.1, "shuffle": True, "device": "cpu"},
    "finetune": {"epochs": 1, "batch_size": BATCH, "lr": 0.1, "device": "cpu"},
}


def tiny_params(**overrides: dict):
    """The committed params.yaml with a tiny model and training run, then `overrides`, validated."""
    return committed_params(TINY, overrides)


def lottery_config(rounds=2, epochs=1, rewind_iteration=3, scope="layer"):
    return LotteryPruning(seeds=[0], rounds=rounds, epochs=epochs, rewind_iteration=rewind_iteration, scope=scope)


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)

    return {"train": random_split(g, N_TRAIN), "val": random_split(g, 16), "test": random_split(g, 24)}


@pytest.fixture(scope="module")
def ctx(data):
    return Context(tiny_params(), data["train"], data["val"])


@pytest.fixture(scope="module")
def trained_state(ctx):
    """The tiny params' whole training run, as the train stage runs it."""
    model, _ = train_model(ctx.params.model, ctx.params.train, ctx.train, ctx.val, device=CPU)
    return clone(model.state_dict())


def clone(state):
    return {k: v.detach().clone() for k, v in state.items()}


def same_state(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def expected_zeros(scope, rate):
    if scope == "global":
        return {"total": round(rate * N_WEIGHTS)}
    return {name: round(rate * n) for name, n in SIZES.items()}


def zero_counts(scope, model):
    counts = {name: int((m.weight == 0).sum()) for name, m in prunable(model)}
    return {"total": sum(counts.values())} if scope == "global" else counts


# --- round_sparsity -----------------------------------------------------------------------------


@pytest.mark.parametrize("rounds", [1, 2, 3, 5])
@pytest.mark.parametrize("rate", [0.0, 0.1, 0.3, 0.5, 0.9, 0.95, 0.99])
def test_round_sparsity_ends_at_the_rate_removing_the_same_fraction_of_what_is_left(rate, rounds):
    values = [round_sparsity(i, rounds, rate) for i in range(rounds + 1)]
    assert values[0] == 0.0
    assert values[-1] == pytest.approx(rate, abs=1e-12)  # the last round reaches the rate
    kept_per_round = (1 - rate) ** (1 / rounds)
    for before, after in zip(values, values[1:], strict=False):
        assert (1 - after) / (1 - before) == pytest.approx(kept_per_round, rel=1e-12)
        assert after >= before
    if rate > 0 and rounds > 1:
        assert all(a < b for a, b in zip(values, values[1:], strict=False))


def test_round_sparsity_hand_computed_values():
    assert round_sparsity(1, 2, 0.75) == pytest.approx(0.5, abs=1e-12)  # half go, then half of the rest
    assert round_sparsity(1, 3, 0.875) == pytest.approx(0.5, abs=1e-12)
    assert round_sparsity(2, 3, 0.875) == pytest.approx(0.75, abs=1e-12)
    assert round_sparsity(1, 2, 0.99) == pytest.approx(0.9, abs=1e-12)
    assert round_sparsity(1, 1, 0.9) == pytest.approx(0.9, abs=1e-12)


@pytest.mark.parametrize("rate", [0.1, 0.2, 0.3, 0.5, 0.9, 0.99])
def test_last_round_prunes_the_same_count_as_one_shot_at_the_rate(rate):
    """1 - (1 - rate) is not always rate in floating point (0.1 gives 0.09999999999999998), but for
    the MLP's layer sizes (784h, 10h, 794h together) the pruned counts are still round(rate * n)."""
    for hidden in (1, 8, 16, 100, 256):
        for n in (784 * hidden, 10 * hidden, 794 * hidden):
            for rounds in (1, 2, 3, 7):
                assert round(round_sparsity(rounds, rounds, rate) * n) == round(rate * n), (hidden, n, rounds)


# --- rewind -------------------------------------------------------------------------------------


def test_rewind_sets_survivors_to_the_state_and_keeps_pruned_weights_at_zero():
    torch.manual_seed(0)
    model = MLP(hidden_size=HIDDEN)
    unstructured("magnitude", "layer")(model, 0.6)  # masks attached, as between the method's steps
    masks = {n: m.weight_mask.clone() for n, m in prunable(model)}
    torch.manual_seed(1)
    state = clone(MLP(hidden_size=HIDDEN).state_dict())
    saved = clone(state)
    rewind(model, state)
    for name, module in prunable(model):
        w, mask = state[f"{name}.weight"], masks[name]
        assert torch_prune.is_pruned(module)
        assert torch.equal(module.weight_mask, mask)  # masks untouched
        assert torch.equal(module.weight_orig, w)
        effective = module.weight_orig * module.weight_mask  # what the next forward pass uses
        assert torch.equal(effective[mask == 1], w[mask == 1])  # survivors: exactly the state
        assert torch.all(effective[mask == 0] == 0)  # pruned: still zero
        assert torch.equal(module.bias, state[f"{name}.bias"])  # biases rewound too
    model(torch.rand(2, 784))  # the pruning hook recomputes .weight from weight_orig and the mask
    for name, module in prunable(model):
        assert torch.equal(module.weight, state[f"{name}.weight"] * masks[name])
    make_permanent(model)
    for name, module in prunable(model):
        assert torch.equal(module.weight, state[f"{name}.weight"] * masks[name])
    with torch.no_grad():  # the model holds copies, not the state's tensors
        model.fc1.weight.add_(1.0)
        model.fc1.bias.add_(1.0)
    assert same_state(state, saved)


def test_rewind_of_an_unpruned_model_sets_every_parameter():
    torch.manual_seed(0)
    model = MLP(hidden_size=HIDDEN)
    torch.manual_seed(1)
    state = clone(MLP(hidden_size=HIDDEN).state_dict())
    rewind(model, state)
    assert same_state(model.state_dict(), state)


# --- the replay of early training ---------------------------------------------------------------


def full_run_snapshots(params, data):
    """The whole training run written out with fit (seeded as the train stage is, logging every
    step), with the weights before every step i, i.e. after i steps, and after the last one."""
    cfg = params.train
    torch.manual_seed(cfg.seed)
    model = MLP(params.model.hidden_size, params.model.activation, params.model.dropout)
    snapshots = []
    fit(
        model,
        data["train"],
        data["val"],
        epochs=cfg.epochs,
        seed=cfg.seed,
        log_every=1,
        before_step=lambda i: snapshots.append(clone(model.state_dict())),
        **cfg.sgd(),
    )
    snapshots.append(clone(model.state_dict()))
    return snapshots


@pytest.fixture(scope="module")
def snapshots(ctx, data):
    return full_run_snapshots(ctx.params, data)


def test_the_full_run_written_out_is_the_train_stages_run(ctx, snapshots, trained_state):
    assert len(snapshots) == TRAIN_EPOCHS * N_TRAIN // BATCH + 1
    assert same_state(snapshots[-1], trained_state)
    assert all(not same_state(a, b) for a, b in zip(snapshots, snapshots[1:], strict=False))  # every step moves


@pytest.mark.parametrize("k", [0, 1, 3, 5, 11, 12, 40])
def test_replay_with_iterations_k_is_the_first_k_steps_of_the_full_run(ctx, data, snapshots, k):
    """Shuffling (seeded) and dropout (torch's RNG) are on, and the full run evaluates every step:
    none of that makes the replay differ; past the end it is the whole run."""
    replay, log = train_model(
        ctx.params.model, ctx.params.train, ctx.train, ctx.val, device=CPU, iterations=k, log_every=0
    )
    assert same_state(replay.state_dict(), snapshots[min(k, len(snapshots) - 1)])
    assert log == []  # log_every=0: nothing logged, nothing evaluated


def test_the_method_rewinds_to_the_replayed_weights(ctx, snapshots, trained_state):
    """One round without retraining: prune the trained weights, rewind the survivors (and biases) to
    their values after rewind_iteration steps of the training run."""
    for k in (0, 3, 6):
        method = lottery_config(rounds=1, epochs=0, rewind_iteration=k).build(ctx)
        model = sweep_point(method, trained_state, 0.75)
        early = snapshots[k]
        for name, module in prunable(model):
            trained = trained_state[f"{name}.weight"]
            n_pruned = round(0.75 * trained.numel())
            pruned = torch.zeros(trained.numel(), dtype=torch.bool)
            pruned[trained.abs().flatten().argsort()[:n_pruned]] = True  # smallest trained magnitudes
            pruned = pruned.reshape(trained.shape)
            assert torch.equal(module.weight == 0, pruned), (k, name)
            assert torch.equal(module.weight[~pruned], early[f"{name}.weight"][~pruned]), (k, name)
            assert torch.equal(module.bias, early[f"{name}.bias"]), (k, name)
        assert not same_state(snapshots[k], snapshots[k + 1])  # so the rewind point is really k


# --- the method ---------------------------------------------------------------------------------


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_each_round_prunes_to_its_sparsity_keeping_earlier_zeros(ctx, trained_state, monkeypatch, scope):
    calls = []
    real = lottery.unstructured

    def recording(criterion, scope_):
        prune_fn = real(criterion, scope_)

        def recorded(model, amount):
            assert not any(torch_prune.is_pruned(m) for _, m in prunable(model))  # folded in first
            zeros_before = {n: m.weight == 0 for n, m in prunable(model)}
            prune_fn(model, amount)
            calls.append((criterion, scope_, amount, zeros_before, {n: m.weight_mask == 0 for n, m in prunable(model)}))

        return recorded

    monkeypatch.setattr(lottery, "unstructured", recording)
    rounds, rate = 3, 0.9
    model = sweep_point(lottery_config(rounds=rounds, scope=scope).build(ctx), trained_state, rate)
    assert [c[:3] for c in calls] == [("magnitude", scope, round_sparsity(i, rounds, rate)) for i in (1, 2, 3)]
    assert all(int(z.sum()) == 0 for z in calls[0][3].values())  # round 1 ranks the trained, dense weights
    for i, (_, _, amount, _, pruned) in enumerate(calls):
        counts = {n: int(p.sum()) for n, p in pruned.items()}
        total = {"total": sum(counts.values())}
        assert (total if scope == "global" else counts) == expected_zeros(scope, amount), i
        if i + 1 < len(calls):
            zeros_next = calls[i + 1][3]  # after retraining and folding in: exactly this round's zeros
            for name in pruned:
                assert torch.equal(zeros_next[name], pruned[name]), (i, name)
                assert torch.all(calls[i + 1][4][name][pruned[name]]), (i, name)  # pruned stay pruned
    assert zero_counts(scope, model) == expected_zeros(scope, rate)


@pytest.mark.parametrize("scope", ["layer", "global"])
@pytest.mark.parametrize("rounds", [1, 2, 3])
def test_final_sparsity_is_the_rate(ctx, trained_state, scope, rounds):
    method = lottery_config(rounds=rounds, scope=scope).build(ctx)
    for rate in (0.0, 0.5, 0.9, 0.99):
        model = sweep_point(method, trained_state, rate)
        assert type(model) is MLP
        assert zero_counts(scope, model) == expected_zeros(scope, rate), rate


def test_build_neither_depends_on_nor_changes_torchs_rng(ctx, trained_state):
    """The replay runs inside fork_rng: whatever the RNG state before build, the method is the same,
    and build leaves the RNG as it found it (the sweep then seeds it per rate)."""
    config_ = lottery_config(rounds=2, epochs=1, rewind_iteration=3)
    results = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        torch.rand(7)  # somewhere into the stream
        state_before, seed_before = torch.get_rng_state(), torch.initial_seed()
        method = config_.build(ctx)
        assert torch.equal(torch.get_rng_state(), state_before)
        assert torch.initial_seed() == seed_before
        results.append(sweep_point(method, trained_state, 0.9).state_dict())
    assert same_state(results[0], results[1])
    again = sweep_point(config_.build(ctx), trained_state, 0.9).state_dict()  # a second build, right after
    assert same_state(again, results[0])
    other_rate_seed = sweep_point(config_.build(ctx), trained_state, 0.9, seed=1).state_dict()
    assert not same_state(other_rate_seed, results[0])  # retraining does follow the sweep's seed


def test_a_method_can_be_called_for_several_rates(ctx, trained_state):
    """The replayed weights are not consumed: each call starts from the same rewind point."""
    method = lottery_config().build(ctx)
    first = sweep_point(method, trained_state, 0.5).state_dict()
    sweep_point(method, trained_state, 0.9)
    assert same_state(sweep_point(method, trained_state, 0.5).state_dict(), first)


def test_budget_is_rounds_times_epochs(ctx):
    assert lottery_config(rounds=3, epochs=2).budget(ctx) == 6
    assert lottery_config(rounds=1, epochs=0).budget(ctx) == 0
    assert lottery_config().sweep_seeds() == [0]


def test_lottery_in_a_sweep(ctx, data, trained_state):
    method = lottery_config(rounds=2, epochs=1).build(ctx)
    rates = [0.0, 0.5, 0.9]
    runs = run_sweep(rates, lambda: fresh(trained_state), method, data["val"], data["test"], seeds=(0, 1))
    for row in runs.itertuples():
        zeros = sum(expected_zeros("layer", row.compression_rate).values())
        assert row.nonzero_weights == N_WEIGHTS - zeros
        assert math.isclose(row.sparsity, zeros / N_WEIGHTS, abs_tol=1e-12)
    again = run_sweep(rates, lambda: fresh(trained_state), method, data["val"], data["test"], seeds=(0, 1))
    assert runs.equals(again)
