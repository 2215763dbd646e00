"""The pruning sweep: AUC, aggregation over seeds, summary metrics, per-(seed, rate) seeding, and
run_sweep on a tiny model with one-shot methods."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import split_files
from sklearn import metrics
from torch.nn.utils import prune

from nncompress import config
from nncompress.data import load_splits
from nncompress.model import MLP, save_checkpoint
from nncompress.prune import Context
from nncompress.prune.masks import count_weights, unstructured
from nncompress.prune.schedule import one_shot
from nncompress.schema import parse
from nncompress.sweep import (
    AUC_MAX_RATE,
    COLUMNS,
    REPORTED_RATES,
    aggregate,
    area_under_curve,
    format_table,
    rate_seed,
    run_sweep,
    summarize,
    sweep_method,
)
from nncompress.training import accuracy

# The old pruning functions, as criterion x scope; module constants so that `is` tells them apart.
random_prune = unstructured("random", "layer")
magnitude_prune = unstructured("magnitude", "layer")
global_magnitude_prune = unstructured("magnitude", "global")

HIDDEN = 8
N_FC1, N_FC2 = 784 * HIDDEN, HIDDEN * 10
N_WEIGHTS = N_FC1 + N_FC2
N_PARAMS = N_WEIGHTS + HIDDEN + 10  # weights and biases of the dense MLP
RUN_COLUMNS = [
    "compression_rate",
    "seed",
    "sparsity",
    "nonzero_weights",
    "parameters",
    "macs",
    "val_accuracy",
    "test_accuracy",
]
SUMMARY_KEYS = {"auc", "auc_val", "auc_std", "acc_90", "acc_95", "acc_98", "acc_99", "finetune_epochs", "seeds"}


# --- area under the curve -----------------------------------------------------------------------


def test_constant_accuracy_over_zero_to_ninety_percent():
    rates = [i / 10 for i in range(10)]
    assert area_under_curve(rates, [1.0] * 10) == pytest.approx(0.9, abs=1e-12)
    assert area_under_curve(rates, [0.5] * 10) == pytest.approx(0.45, abs=1e-12)


def test_hand_computed_trapezoids():
    # 0.5 * (1.0 + 0.8) / 2 + 0.4 * (0.8 + 0.2) / 2 = 0.45 + 0.2
    assert area_under_curve([0.0, 0.5, 0.9], [1.0, 0.8, 0.2]) == pytest.approx(0.65, abs=1e-12)
    assert area_under_curve([0.2, 0.4], [0.5, 1.0]) == pytest.approx(0.15, abs=1e-12)


@pytest.mark.parametrize("seed", range(20))
def test_equals_sklearn_auc_bit_for_bit(seed):
    rng = np.random.default_rng(seed)
    rates = sorted({*rng.choice(91, size=int(rng.integers(2, 14)), replace=False).tolist()})
    rates = [r / 100 for r in rates]
    acc = rng.uniform(0.1, 1.0, size=len(rates)).tolist()
    got = area_under_curve(rates, acc)
    assert isinstance(got, float)
    assert got == metrics.auc(rates, acc)


def test_rates_above_ninety_percent_are_ignored():
    rates = [0.0, 0.5, 0.9]
    acc = [1.0, 0.8, 0.2]
    assert area_under_curve([*rates, 0.95, 0.99], [*acc, 0.0, 0.0]) == area_under_curve(rates, acc)


def test_unsorted_input():
    assert area_under_curve([0.9, 0.0, 0.5], [0.2, 1.0, 0.8]) == pytest.approx(0.65, abs=1e-12)


def test_works_on_pandas_columns():
    table = pd.DataFrame({"r": [0.5, 0.0, 0.9], "a": [0.8, 1.0, 0.2]})
    assert area_under_curve(table["r"], table["a"]) == pytest.approx(0.65, abs=1e-12)


@pytest.mark.parametrize(("rates", "acc"), [([], []), ([0.5], [0.9]), ([0.3, 0.95], [0.9, 0.1])])
def test_fewer_than_two_rates_raise(rates, acc):
    with pytest.raises(ValueError, match="at least two rates"):
        area_under_curve(rates, acc)


def test_length_mismatch_raises():
    with pytest.raises(ValueError):
        area_under_curve([0.0, 0.5, 0.9], [1.0, 0.5])


# --- aggregation over seeds ---------------------------------------------------------------------


def runs_frame(rows):
    """A runs DataFrame as run_sweep returns it, from (rate, seed, sparsity, nonzero, params, val, test);
    the MACs are the nonzero weights, as in an MLP (each weight is used once per image)."""
    return pd.DataFrame([(*row[:5], row[3], *row[5:]) for row in rows], columns=RUN_COLUMNS)


def test_aggregate_means_and_population_std_per_rate():
    # skewed values, so that a median or a sample std would give other numbers
    runs = runs_frame(
        [
            (0.5, 0, 0.5, 100, 200, 0.25, 0.5),
            (0.0, 0, 0.0, 200, 200, 1.0, 1.0),
            (0.5, 1, 0.5, 100, 200, 0.25, 0.5),
            (0.0, 1, 0.0, 200, 200, 1.0, 0.25),
            (0.5, 2, 0.125, 175, 200, 1.0, 0.5),
            (0.0, 2, 0.0, 200, 200, 1.0, 0.25),
        ]
    )
    table = aggregate(runs)
    assert list(table.columns) == list(COLUMNS)
    assert table["compression_rate"].tolist() == [0.0, 0.5]
    assert table["seeds"].tolist() == [3, 3]
    assert table["sparsity"].tolist() == [0.0, 0.375]
    assert table["nonzero_weights"].tolist() == [200.0, 125.0]
    assert table["parameters"].tolist() == [200.0, 200.0]
    assert table["macs"].tolist() == [200.0, 125.0]
    assert table["val_accuracy"].tolist() == [1.0, 0.5]
    assert table["test_accuracy"].tolist() == [0.5, 0.5]
    # population std (ddof=0): sqrt(0.375 / 3); the sample std would be sqrt(0.375 / 2)
    assert table["val_accuracy_std"].tolist() == [0.0, pytest.approx(math.sqrt(0.125), abs=1e-12)]
    assert table["test_accuracy_std"].tolist() == [pytest.approx(math.sqrt(0.125), abs=1e-12), 0.0]


def test_aggregate_of_two_seeds_uses_ddof_zero():
    runs = runs_frame([(0.0, 0, 0.0, 10, 20, 0.5, 0.25), (0.0, 7, 0.0, 10, 20, 0.75, 1.0)])
    table = aggregate(runs)
    assert table["val_accuracy_std"].tolist() == [0.125]  # ddof=1 would give 0.1767...
    assert table["test_accuracy_std"].tolist() == [0.375]
    assert table["seeds"].tolist() == [2]


def test_aggregate_of_one_seed_has_zero_std():
    runs = runs_frame([(0.9, 0, 0.9, 1, 20, 0.5, 0.25), (0.0, 0, 0.0, 10, 20, 0.75, 1.0)])
    table = aggregate(runs)
    assert table["compression_rate"].tolist() == [0.0, 0.9]
    assert table["val_accuracy_std"].tolist() == [0.0, 0.0]
    assert table["test_accuracy_std"].tolist() == [0.0, 0.0]
    assert table["seeds"].tolist() == [1, 1]
    assert table["test_accuracy"].tolist() == [1.0, 0.25]


# --- summary ------------------------------------------------------------------------------------


def runs_for(rates, val, test, seed=0):
    """One seed's runs: the given accuracies at the given rates."""
    return runs_frame([(r, seed, r, 0, 0, v, t) for r, v, t in zip(rates, val, test, strict=True)])


def test_summarize_one_seed():
    summary = summarize(runs_for([0.0, 0.5, 0.9], [1.0, 1.0, 1.0], [1.0, 0.8, 0.2]), finetune_epochs=3)
    assert set(summary) == SUMMARY_KEYS
    assert summary["auc"] == pytest.approx(0.65, abs=1e-12)
    assert summary["auc_val"] == pytest.approx(0.9, abs=1e-12)
    assert summary["auc_std"] == 0.0
    assert summary["acc_90"] == 0.2
    assert type(summary["acc_90"]) is float
    assert summary["acc_95"] is None
    assert summary["acc_98"] is None
    assert summary["acc_99"] is None
    assert summary["finetune_epochs"] == 3
    assert summary["seeds"] == 1
    assert type(summary["seeds"]) is int


def test_summarize_reports_every_rate_above_ninety_percent_that_was_swept():
    rates = [0.0, 0.5, 0.9, 0.95, 0.98, 0.99]
    test = [1.0, 0.75, 0.5, 0.375, 0.25, 0.125]
    summary = summarize(runs_for(rates, [1.0] * 6, test), finetune_epochs=0)
    assert set(summary) == SUMMARY_KEYS
    assert (summary["acc_90"], summary["acc_95"], summary["acc_98"], summary["acc_99"]) == (0.5, 0.375, 0.25, 0.125)
    assert all(type(summary[k]) is float for k in ("acc_90", "acc_95", "acc_98", "acc_99"))
    # the rates above 0.9 do not enter the AUC: 0.5 * (1 + 0.75) / 2 + 0.4 * (0.75 + 0.5) / 2
    assert summary["auc"] == pytest.approx(0.6875, abs=1e-12)


def test_summarize_several_seeds():
    """AUCs of the mean curve; auc_std is the population std of the per-seed test AUCs."""
    rates = [0.0, 0.5, 0.9, 0.95]
    runs = pd.concat(
        [
            runs_for(rates, [1.0, 1.0, 1.0, 1.0], [1.0, 0.8, 0.2, 0.1], seed=0),  # test AUC 0.65
            runs_for(rates, [1.0, 0.5, 0.5, 0.5], [1.0, 0.6, 0.4, 0.3], seed=1),  # test AUC 0.6
        ],
        ignore_index=True,
    )
    summary = summarize(runs, finetune_epochs=7)
    assert set(summary) == SUMMARY_KEYS
    assert summary["auc"] == pytest.approx(0.625, abs=1e-12)  # mean curve 1.0, 0.7, 0.3
    assert summary["auc_val"] == pytest.approx(0.7375, abs=1e-12)  # mean curve 1.0, 0.75, 0.75
    assert summary["auc_std"] == pytest.approx(0.025, abs=1e-12)  # ddof=1 would give 0.0354
    assert summary["acc_90"] == pytest.approx(0.3, abs=1e-12)
    assert summary["acc_95"] == pytest.approx(0.2, abs=1e-12)
    assert summary["acc_98"] is None
    assert summary["acc_99"] is None
    assert summary["finetune_epochs"] == 7
    assert summary["seeds"] == 2


def test_summarize_auc_std_of_three_seeds():
    rates = [0.0, 0.9]
    aucs = []
    frames = []
    for seed, end in enumerate([0.2, 0.4, 0.9]):
        frames.append(runs_for(rates, [1.0, 1.0], [1.0, end], seed=seed))
        aucs.append(0.9 * (1.0 + end) / 2)
    summary = summarize(pd.concat(frames, ignore_index=True), finetune_epochs=0)
    assert summary["auc_std"] == pytest.approx(float(np.std(aucs)), abs=1e-12)
    assert summary["auc_std"] != pytest.approx(float(np.std(aucs, ddof=1)), abs=1e-6)
    assert summary["seeds"] == 3


def test_summarize_without_ninety_percent():
    summary = summarize(runs_for([0.0, 0.5], [1.0, 0.5], [0.9, 0.7]), finetune_epochs=0)
    assert set(summary) == SUMMARY_KEYS
    assert summary["acc_90"] is None
    assert summary["auc"] == pytest.approx(0.4, abs=1e-12)
    assert summary["auc_val"] == pytest.approx(0.375, abs=1e-12)


def test_summarize_finds_rates_computed_in_floating_point():
    rates = [0.0, 0.1 * 9, 0.95 + 1e-12, 0.99 - 1e-12]  # 0.9000000000000001, ...
    summary = summarize(runs_for(rates, [1.0] * 4, [1.0, 0.3, 0.2, 0.1]), finetune_epochs=0)
    assert (summary["acc_90"], summary["acc_95"], summary["acc_99"]) == (0.3, 0.2, 0.1)
    assert summary["acc_98"] is None


# --- per-(seed, rate) seeds ---------------------------------------------------------------------


def test_rate_seed_is_deterministic_and_distinct():
    rates = [i / 10 for i in range(10)] + [0.95, 0.98, 0.99]
    seeds = [rate_seed(0, r) for r in rates]
    assert seeds == [rate_seed(0, r) for r in rates]
    assert len(set(seeds)) == len(rates)
    assert all(isinstance(s, int) and 0 <= s < 2**32 for s in seeds)
    assert rate_seed(0, 0.5) != rate_seed(1, 0.5)
    assert rate_seed(0, 0.3) == rate_seed(0, 0.1 + 0.2)  # 0.30000000000000004 is the same rate
    assert rate_seed(0, 0.5) == int(np.random.SeedSequence([0, 500_000]).generate_state(1)[0])


# --- the sweep ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_state():
    torch.manual_seed(123)
    return {k: v.clone() for k, v in MLP(hidden_size=HIDDEN).state_dict().items()}


@pytest.fixture(scope="module")
def splits():
    g = torch.Generator().manual_seed(0)
    val = (torch.rand(60, 784, generator=g), torch.randint(0, 10, (60,), generator=g))
    test = (torch.rand(80, 784, generator=g), torch.randint(0, 10, (80,), generator=g))
    return val, test


def sweep(rates, state, splits, prune_fn=random_prune, seeds=(0,), masks=None):
    """run_sweep of one_shot(prune_fn) on fresh copies of `state`.

    `masks`, if given, receives each run's pruning masks keyed by (rate, seed).
    """
    recorded = []

    def load_model():
        model = MLP(hidden_size=HIDDEN)  # consumes the RNG, as the stages' fresh copies do
        model.load_state_dict(state)
        return model

    def recording_prune(model, rate):
        prune_fn(model, rate)
        recorded.append([model.fc1.weight_mask.clone(), model.fc2.weight_mask.clone()])

    val, test = splits
    runs = run_sweep(rates, load_model, one_shot(recording_prune), val, test, seeds=seeds, desc="test")
    if masks is not None:
        keys = list(zip(runs["compression_rate"], runs["seed"], strict=True))
        masks.update(zip(keys, recorded, strict=True))
    return runs


def expected_pruned(prune_fn, rate):
    if prune_fn is global_magnitude_prune:
        return round(rate * N_WEIGHTS)
    return round(rate * N_FC1) + round(rate * N_FC2)


def same_masks(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("prune_fn", [random_prune, magnitude_prune, global_magnitude_prune])
def test_one_row_per_rate_and_seed_with_measured_sparsity(trained_state, splits, prune_fn):
    runs = sweep([0.9, 0.0, 0.5, 0.37], trained_state, splits, prune_fn, seeds=(3, 1))
    assert list(runs.columns) == RUN_COLUMNS
    assert list(zip(runs["compression_rate"], runs["seed"], strict=True)) == [
        (0.0, 3),
        (0.0, 1),
        (0.37, 3),
        (0.37, 1),
        (0.5, 3),
        (0.5, 1),
        (0.9, 3),
        (0.9, 1),
    ]
    for row in runs.itertuples():
        pruned = expected_pruned(prune_fn, row.compression_rate)
        assert row.nonzero_weights == N_WEIGHTS - pruned
        assert row.sparsity == pytest.approx(pruned / N_WEIGHTS, abs=1e-12)
        assert abs(row.sparsity - row.compression_rate) <= 1 / N_WEIGHTS
        assert row.parameters == N_PARAMS  # unstructured pruning keeps every parameter
        assert row.macs == row.nonzero_weights  # an MLP uses each weight once per image
        assert 0.0 <= row.val_accuracy <= 1.0
        assert 0.0 <= row.test_accuracy <= 1.0
        assert math.isclose(row.val_accuracy * 60, round(row.val_accuracy * 60))  # a fraction of 60
        assert math.isclose(row.test_accuracy * 80, round(row.test_accuracy * 80))


def test_aggregate_of_a_sweep(trained_state, splits):
    runs = sweep([0.5, 0.0, 0.9], trained_state, splits, seeds=(0, 1, 2))
    table = aggregate(runs)
    assert list(table.columns) == list(COLUMNS)
    assert table["compression_rate"].tolist() == [0.0, 0.5, 0.9]
    assert table["seeds"].tolist() == [3, 3, 3]
    expected = [expected_pruned(random_prune, r) / N_WEIGHTS for r in (0.0, 0.5, 0.9)]
    assert table["sparsity"].tolist() == pytest.approx(expected, abs=1e-12)
    assert table["parameters"].tolist() == [N_PARAMS] * 3
    for i, rate in enumerate([0.0, 0.5, 0.9]):
        at_rate = runs[runs["compression_rate"] == rate]
        assert table["test_accuracy"][i] == pytest.approx(at_rate["test_accuracy"].mean(), abs=1e-12)
        assert table["test_accuracy_std"][i] == pytest.approx(np.std(at_rate["test_accuracy"]), abs=1e-12)
    assert table["test_accuracy_std"][0] == 0.0  # rate 0: every seed evaluates the same dense model


def test_rate_zero_keeps_the_trained_accuracy(trained_state, splits):
    model = MLP(hidden_size=HIDDEN)
    model.load_state_dict(trained_state)
    runs = sweep([0.0, 0.5], trained_state, splits, seeds=(0, 1))
    assert runs["val_accuracy"].iloc[:2].tolist() == [accuracy(model, splits[0])] * 2
    assert runs["test_accuracy"].iloc[:2].tolist() == [accuracy(model, splits[1])] * 2


def test_sweep_is_deterministic_and_seeds_give_different_masks(trained_state, splits):
    masks_a, masks_b = {}, {}
    a = sweep([0.1, 0.5, 0.9], trained_state, splits, seeds=[0, 1], masks=masks_a)
    b = sweep([0.1, 0.5, 0.9], trained_state, splits, seeds=[0, 1], masks=masks_b)
    pd.testing.assert_frame_equal(a, b)
    assert sorted(masks_a) == sorted(masks_b) == [(r, s) for r in (0.1, 0.5, 0.9) for s in (0, 1)]
    for key in masks_a:
        assert same_masks(masks_a[key], masks_b[key])
    for rate in (0.1, 0.5, 0.9):
        assert not torch.equal(masks_a[rate, 0][0], masks_a[rate, 1][0])
        assert not torch.equal(masks_a[rate, 0][1], masks_a[rate, 1][1])
    # and the rates of one seed get different masks, not nested copies of one random order
    mask_50, mask_90 = masks_a[0.5, 0][0].bool(), masks_a[0.9, 0][0].bool()
    assert (mask_90 & ~mask_50).any()


def test_result_for_a_rate_does_not_depend_on_the_other_rates(trained_state, splits):
    masks_short, masks_long = {}, {}
    short = sweep([0.5, 0.1], trained_state, splits, seeds=(0, 1), masks=masks_short)
    long = sweep([0.1, 0.3, 0.5], trained_state, splits, seeds=(0, 1), masks=masks_long)
    shared = long[long["compression_rate"].isin([0.1, 0.5])].reset_index(drop=True)
    pd.testing.assert_frame_equal(short, shared)
    for key in masks_short:
        assert same_masks(masks_short[key], masks_long[key])


def test_result_for_a_seed_does_not_depend_on_the_other_seeds(trained_state, splits):
    masks_one, masks_two = {}, {}
    one = sweep([0.1, 0.5], trained_state, splits, seeds=[1], masks=masks_one)
    two = sweep([0.1, 0.5], trained_state, splits, seeds=[0, 1], masks=masks_two)
    pd.testing.assert_frame_equal(one, two[two["seed"] == 1].reset_index(drop=True))
    for key in masks_one:
        assert same_masks(masks_one[key], masks_two[key])


def test_sweep_evaluates_the_model_the_method_returns(trained_state, splits):
    """The method may return another (smaller) model: it is the one measured and evaluated, with its
    pruning masks folded in; sparsity is relative to the dense model's weights."""
    returned = []

    def load_model():
        model = MLP(hidden_size=HIDDEN)
        model.load_state_dict(trained_state)
        return model

    def shrink_to_four(model, rate):
        small = MLP(hidden_size=4)
        with torch.no_grad():
            small.fc2.bias.fill_(0.0)
            small.fc2.bias[2] = 1e6  # everything predicted as class 2
        prune.l1_unstructured(small.fc1, "weight", amount=0.5)  # masks left attached
        returned.append(small)
        return small

    val, test = splits
    runs = run_sweep([0.0, 0.5], load_model, shrink_to_four, val, test, seeds=[0])
    assert all(not prune.is_pruned(m.fc1) for m in returned)  # run_sweep folded the masks in
    nonzero = 784 * 4 // 2 + 4 * 10
    assert runs["nonzero_weights"].tolist() == [nonzero, nonzero]
    assert runs["sparsity"].tolist() == pytest.approx([(N_WEIGHTS - nonzero) / N_WEIGHTS] * 2, abs=1e-12)
    assert runs["parameters"].tolist() == [784 * 4 + 4 + 4 * 10 + 10] * 2
    assert runs["val_accuracy"].tolist() == [int((val[1] == 2).sum()) / 60] * 2
    assert runs["test_accuracy"].tolist() == [int((test[1] == 2).sum()) / 80] * 2
    # and that is not what the dense model scores
    dense = load_model()
    assert accuracy(dense, val) != int((val[1] == 2).sum()) / 60
    assert accuracy(dense, test) != int((test[1] == 2).sum()) / 80


def test_count_weights_ignores_biases():
    model = MLP(hidden_size=HIDDEN)
    with torch.no_grad():
        model.fc1.weight[0, :10] = 0.0
        model.fc2.bias.zero_()
    assert count_weights(model) == (N_WEIGHTS - 10, N_WEIGHTS)


def test_format_table_has_a_row_per_rate(trained_state, splits):
    text = format_table(aggregate(sweep([0.0, 0.5], trained_state, splits)))
    lines = text.splitlines()
    assert len(lines) == 3
    # one seed: no std columns
    assert lines[0].split() == [c for c in COLUMNS if not c.endswith("_std")]
    assert lines[1].split()[:5] == ["0.00", "0.0000", str(N_WEIGHTS), str(N_PARAMS), str(N_WEIGHTS)]
    pruned = expected_pruned(random_prune, 0.5)
    kept = str(N_WEIGHTS - pruned)
    assert lines[2].split()[:5] == ["0.50", f"{pruned / N_WEIGHTS:.4f}", kept, str(N_PARAMS), kept]  # MACs: kept


def test_format_table_shows_the_spread_of_several_seeds(trained_state, splits):
    table = aggregate(sweep([0.0, 0.9], trained_state, splits, seeds=[0, 1]))
    lines = format_table(table).splitlines()
    assert lines[0].split() == list(COLUMNS)
    assert lines[2].split()[COLUMNS.index("val_accuracy_std")] == f"{table['val_accuracy_std'][1]:.4f}"
    assert lines[2].split()[-1] == "2"


def test_reported_rates_and_the_auc_range():
    assert AUC_MAX_RATE == 0.9
    assert REPORTED_RATES == (0.9, 0.95, 0.98, 0.99)
    assert {f"acc_{round(r * 100)}" for r in REPORTED_RATES} < SUMMARY_KEYS


# --- sweep_method: the prune@<method> stage's work ----------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
STAGE_RATES = [0.0, 0.5, 0.9]


def stage_params():
    """The committed params.yaml with the tiny model, three rates and a one-epoch budget."""
    data = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    data["model"]["hidden"] = [HIDDEN]
    data["sweep"]["rates"] = STAGE_RATES
    data["finetune"].update(epochs=1, batch_size=16, lr=0.1, device="cpu")
    data["prune_random"]["seeds"] = [0, 1]
    data["prune_finetune"]["seeds"] = [2]
    return parse(config.Params, data)


@pytest.fixture(scope="module")
def stage_files(tmp_path_factory, trained_state):
    """A trained checkpoint and uint8 split files, as the train and split stages leave them."""
    root = tmp_path_factory.mktemp("stage")
    split_files(root / "split", train=48, val=20, test=30, seed=5)
    model = MLP(hidden_size=HIDDEN)
    model.load_state_dict(trained_state)
    save_checkpoint(model, root / "model.pt")
    return root / "model.pt", root / "split"


@pytest.mark.parametrize(("name", "seeds", "budget"), [("random", [0, 1], 0), ("finetune", [2], 1)])
def test_sweep_method_writes_the_methods_table_and_summary(tmp_path, stage_files, name, seeds, budget, capsys):
    checkpoint, split_dir = stage_files
    params = stage_params()
    csv, metrics_json = tmp_path / "plots" / f"{name}.csv", tmp_path / "metrics" / f"{name}.json"
    sweep_method(params, name, checkpoint, split_dir, csv, metrics_json)
    assert f"{name} pruning (test: 30 images, validation: 20 images)" in capsys.readouterr().out

    table = pd.read_csv(csv)
    assert list(table.columns) == list(COLUMNS)
    assert table["compression_rate"].tolist() == STAGE_RATES
    assert table["seeds"].tolist() == [len(seeds)] * 3
    expected = [N_WEIGHTS - expected_pruned(magnitude_prune, r) for r in STAGE_RATES]
    assert table["nonzero_weights"].tolist() == expected  # the rate, per layer
    summary = json.loads(metrics_json.read_text())
    assert set(summary) == SUMMARY_KEYS
    assert summary["finetune_epochs"] == budget  # the method's budget(), not the finetune section's
    assert summary["seeds"] == len(seeds)

    # the same numbers as sweeping the registered method by hand on the stage's inputs
    train, val, test = load_splits(split_dir)
    config_ = params.method(name)
    method = config_.build(Context(params, train, val))

    def load_model():
        model = MLP(hidden_size=HIDDEN)
        model.load_state_dict(torch.load(checkpoint, weights_only=True))
        return model

    runs = run_sweep(STAGE_RATES, load_model, method, val, test, seeds=config_.sweep_seeds())
    assert sorted(runs["seed"].unique().tolist()) == sorted(seeds)
    by_hand = aggregate(runs)
    for column in COLUMNS:
        assert table[column].tolist() == pytest.approx(by_hand[column].tolist(), rel=1e-5, abs=1e-6), column
    for key, value in summarize(runs, budget).items():
        assert summary[key] == (None if value is None else pytest.approx(value, abs=1e-6)), key
