"""The pruning sweep: AUC, summary metrics, per-rate seeding, and the sweep on a tiny model."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn import metrics
from torch.nn.utils import prune

from nncompress.model import MLP
from nncompress.pruning import magnitude_prune, random_prune
from nncompress.sweep import COLUMNS, area_under_curve, format_table, rate_seed, run_sweep, summarize

HIDDEN = 8
N_FC1, N_FC2 = 784 * HIDDEN, HIDDEN * 10

# --- area under the curve -----------------------------------------------------------------------


def test_constant_accuracy_over_zero_to_ninety_percent():
    rates = [i / 10 for i in range(10)]
    assert area_under_curve(rates, [1.0] * 10) == pytest.approx(0.9, abs=1e-12)
    assert area_under_curve(rates, [0.5] * 10) == pytest.approx(0.45, abs=1e-12)


def test_hand_computed_trapezoids():
    # 0.5 * (1.0 + 0.8) / 2 + 0.4 * (0.8 + 0.2) / 2 = 0.45 + 0.2
    assert area_under_curve([0.0, 0.5, 0.9], [1.0, 0.8, 0.2]) == pytest.approx(0.65, abs=1e-12)
    assert area_under_curve([0.2, 0.4], [0.5, 1.0]) == pytest.approx(0.15, abs=1e-12)


def test_equals_sklearn_auc():
    rng = np.random.default_rng(0)
    rates = [i / 10 for i in range(10)]
    acc = rng.uniform(0.1, 1.0, size=10).tolist()
    expected = metrics.auc(rates, acc)
    got = area_under_curve(rates, acc)
    assert isinstance(got, float)
    assert got == pytest.approx(expected, abs=1e-12)
    assert got == pytest.approx(np.trapezoid(acc, rates), abs=1e-12)


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


# --- summary ------------------------------------------------------------------------------------


def table_for(rates, val, test):
    return pd.DataFrame(
        {
            "compression_rate": rates,
            "sparsity": rates,
            "nonzero_weights": [0] * len(rates),
            "val_accuracy": val,
            "test_accuracy": test,
        }
    )


def test_summarize():
    table = table_for([0.0, 0.5, 0.9], [1.0, 1.0, 1.0], [1.0, 0.8, 0.2])
    summary = summarize(table, finetune_epochs=3)
    assert set(summary) == {"auc", "auc_val", "acc_90", "finetune_epochs"}
    assert summary["auc"] == pytest.approx(0.65, abs=1e-12)
    assert summary["auc_val"] == pytest.approx(0.9, abs=1e-12)
    assert summary["acc_90"] == 0.2
    assert type(summary["acc_90"]) is float
    assert summary["finetune_epochs"] == 3


def test_summarize_without_ninety_percent():
    summary = summarize(table_for([0.0, 0.5], [1.0, 0.5], [0.9, 0.7]), finetune_epochs=0)
    assert set(summary) == {"auc", "auc_val", "acc_90", "finetune_epochs"}
    assert summary["acc_90"] is None
    assert summary["auc"] == pytest.approx(0.4, abs=1e-12)
    assert summary["auc_val"] == pytest.approx(0.375, abs=1e-12)


def test_summarize_finds_ninety_percent_computed_in_floating_point():
    rate = 0.1 * 9  # 0.9000000000000001
    summary = summarize(table_for([0.0, rate], [1.0, 1.0], [1.0, 0.3]), finetune_epochs=0)
    assert summary["acc_90"] == 0.3


# --- per-rate seeds -----------------------------------------------------------------------------


def test_rate_seed_is_deterministic_and_distinct():
    rates = [i / 10 for i in range(10)] + [0.95, 0.99]
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


def sweep(rates, state, splits, prune_fn=random_prune, seed=0, record=None, **kwargs):
    """run_sweep with fresh copies of `state`; `record` collects each rate's pruning masks."""

    def load_model():
        model = MLP(hidden_size=HIDDEN)  # consumes the RNG, as the stages' fresh copies do
        model.load_state_dict(state)
        return model

    def recording_prune(model, rate):
        prune_fn(model, rate)
        if record is not None:
            record[rate] = [model.fc1.weight_mask.clone(), model.fc2.weight_mask.clone()]

    val, test = splits
    return run_sweep(rates, load_model, recording_prune, val, test, seed=seed, desc="test", **kwargs)


def expected_pruned(rate):
    return round(rate * N_FC1) + round(rate * N_FC2)


@pytest.mark.parametrize("prune_fn", [random_prune, magnitude_prune])
def test_sweep_rows_sorted_with_measured_sparsity(trained_state, splits, prune_fn):
    rates = [0.9, 0.0, 0.5, 0.25]
    table = sweep(rates, trained_state, splits, prune_fn)
    assert list(table.columns) == list(COLUMNS)
    assert table["compression_rate"].tolist() == [0.0, 0.25, 0.5, 0.9]
    total = N_FC1 + N_FC2
    for row in table.itertuples():
        pruned = expected_pruned(row.compression_rate)
        assert row.nonzero_weights == total - pruned
        assert row.sparsity == pruned / total
        assert row.sparsity == pytest.approx(row.compression_rate, abs=1 / total)
        assert 0.0 <= row.val_accuracy <= 1.0
        assert 0.0 <= row.test_accuracy <= 1.0
        assert math.isclose(row.val_accuracy * 60, round(row.val_accuracy * 60))  # a fraction of 60
        assert math.isclose(row.test_accuracy * 80, round(row.test_accuracy * 80))


def test_rate_zero_keeps_the_trained_accuracy(trained_state, splits):
    from nncompress.training import accuracy

    model = MLP(hidden_size=HIDDEN)
    model.load_state_dict(trained_state)
    table = sweep([0.0, 0.5], trained_state, splits)
    assert table["val_accuracy"].iloc[0] == accuracy(model, splits[0])
    assert table["test_accuracy"].iloc[0] == accuracy(model, splits[1])


def test_sweep_is_deterministic(trained_state, splits):
    masks_a, masks_b = {}, {}
    a = sweep([0.1, 0.5, 0.9], trained_state, splits, record=masks_a)
    b = sweep([0.1, 0.5, 0.9], trained_state, splits, record=masks_b)
    pd.testing.assert_frame_equal(a, b)
    for rate in (0.1, 0.5, 0.9):
        assert all(torch.equal(x, y) for x, y in zip(masks_a[rate], masks_b[rate], strict=True))


def test_result_for_a_rate_does_not_depend_on_the_other_rates(trained_state, splits):
    masks_short, masks_long = {}, {}
    short = sweep([0.5, 0.1], trained_state, splits, record=masks_short)
    long = sweep([0.1, 0.3, 0.5], trained_state, splits, record=masks_long)
    shared = long[long["compression_rate"].isin([0.1, 0.5])].reset_index(drop=True)
    pd.testing.assert_frame_equal(short, shared)
    for rate in (0.1, 0.5):
        assert all(torch.equal(x, y) for x, y in zip(masks_short[rate], masks_long[rate], strict=True))


def test_sweep_seed_changes_the_random_masks(trained_state, splits):
    masks_0, masks_1 = {}, {}
    sweep([0.5, 0.9], trained_state, splits, seed=0, record=masks_0)
    sweep([0.5, 0.9], trained_state, splits, seed=1, record=masks_1)
    assert not torch.equal(masks_0[0.5][0], masks_1[0.5][0])
    # and the rates of one sweep get different masks, not nested copies of one random order
    mask_50, mask_90 = masks_0[0.5][0].bool(), masks_0[0.9][0].bool()
    assert (mask_90 & ~mask_50).any()


def test_finetune_runs_on_the_masked_model_before_masks_are_removed(trained_state, splits):
    seen = []

    def finetune(model):
        seen.append((prune.is_pruned(model.fc1), float((model.fc1.weight == 0).float().mean())))
        with torch.no_grad():
            model.fc2.bias.fill_(0.0)
            model.fc2.bias[3] = 1e6  # everything predicted as class 3

    table = sweep([0.0, 0.5], trained_state, splits, finetune=finetune)
    assert [s[0] for s in seen] == [True, True]
    assert seen[1][1] == round(0.5 * N_FC1) / N_FC1
    val, test = splits
    assert table["val_accuracy"].tolist() == [int((val[1] == 3).sum()) / 60] * 2
    assert table["test_accuracy"].tolist() == [int((test[1] == 3).sum()) / 80] * 2


def test_format_table_has_a_row_per_rate(trained_state, splits):
    text = format_table(sweep([0.0, 0.5], trained_state, splits))
    lines = text.splitlines()
    assert len(lines) == 3
    assert lines[0].split() == list(COLUMNS)
    assert lines[1].split()[:2] == ["0.00", "0.0000"]
    assert lines[2].split()[:2] == ["0.50", f"{expected_pruned(0.5) / (N_FC1 + N_FC2):.4f}"]
