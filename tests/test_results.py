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
    assert load("prune_magnitude")["auc"] >= 0.70


def test_magnitude_pruning_beats_random_pruning() -> None:
    assert load("prune_magnitude")["auc"] > load("prune_random")["auc"]


def test_auc_within_its_bound() -> None:
    """Over rates 0..0.9 the AUC cannot exceed 0.9 x the dense accuracy (by more than noise)."""
    dense = load("train")["test_accuracy"]
    for method in ("random", "magnitude"):
        assert 0 < load(f"prune_{method}")["auc"] <= 0.9 * dense + 0.01
