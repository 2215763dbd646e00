"""The committed results of the default pipeline meet the project's targets."""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load(name: str) -> dict:
    return json.loads((ROOT / f"metrics/{name}.json").read_text())


def test_dense_model_reaches_85_percent_on_the_official_test_set() -> None:
    assert load("train")["test_accuracy"] >= 0.85


def test_magnitude_pruning_auc_at_least_0_70() -> None:
    assert load("prune/magnitude")["auc"] >= 0.70


def test_magnitude_pruning_beats_random_pruning() -> None:
    assert load("prune/magnitude")["auc"] > load("prune/random")["auc"]


def test_auc_within_its_bound() -> None:
    """Over rates 0..0.9 the AUC cannot exceed 0.9 x the dense accuracy (by more than noise)."""
    dense = load("train")["test_accuracy"]
    for method in ("random", "magnitude"):
        assert 0 < load(f"prune/{method}")["auc"] <= 0.9 * dense + 0.01


# The methods of the pipeline (every registered one), and those that retrain after pruning.
METHODS = sorted(p.stem for p in (ROOT / "metrics/prune").glob("*.json"))
RETRAINING = [m for m in METHODS if load(f"prune/{m}")["finetune_epochs"] > 0]


def test_the_committed_sweeps_are_the_registered_methods() -> None:
    from nncompress.prune import METHODS as REGISTERED

    assert sorted(REGISTERED) == METHODS
    assert {"finetune", "global", "gradual", "structured", "lottery"} <= set(RETRAINING)


def test_best_method_auc_reaches_99_percent_of_the_ceiling() -> None:
    dense = load("train")["test_accuracy"]
    assert max(load(f"prune/{m}")["auc"] for m in RETRAINING) >= 0.99 * 0.9 * dense


def test_best_method_within_1_point_at_95_and_2_points_at_98_percent_sparsity() -> None:
    dense = load("train")["test_accuracy"]
    assert max(load(f"prune/{m}")["acc_95"] for m in RETRAINING) >= dense - 0.01
    assert max(load(f"prune/{m}")["acc_98"] for m in RETRAINING) >= dense - 0.02


def test_every_sweep_reports_the_same_keys() -> None:
    keys = {m: set(load(f"prune/{m}")) for m in METHODS}
    assert len({frozenset(k) for k in keys.values()}) == 1, keys


def test_compressed_file_at_least_50x_smaller_within_half_a_point() -> None:
    c = load("compress")
    assert c["ratio"] >= 50
    assert abs(c["ratio"] - c["dense_bytes"] / c["compressed_bytes"]) < 1e-4  # the JSON rounds to 6 decimals
    assert c["accuracy_drop"] <= 0.5
    assert abs(c["accuracy_drop"] - 100 * (load("train")["test_accuracy"] - c["test_accuracy"])) < 1e-3


def test_compressed_file_size_counts_every_byte_against_the_dense_checkpoint() -> None:
    """dense_bytes is 4 bytes x 203,530 parameters, as the papers count; beside it the torch.save
    file of the fp32 state_dict: those values plus the archive."""
    c = load("compress")
    assert c["dense_bytes"] == 203_530 * 4
    assert 203_530 * 4 < c["state_dict_bytes"] < 203_530 * 4 * 1.01
    assert abs(c["state_dict_ratio"] - c["state_dict_bytes"] / c["compressed_bytes"]) < 1e-4
