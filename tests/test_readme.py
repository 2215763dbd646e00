"""The README quotes the committed results and the commands CI really runs."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def fmt(value: float) -> str:
    return f"{value:.4f}"


def test_quotes_the_committed_dense_accuracies() -> None:
    train = json.loads((ROOT / "metrics/train.json").read_text())
    row = f"| {fmt(train['train_accuracy'])} | {fmt(train['val_accuracy'])} | {fmt(train['test_accuracy'])} |"
    assert row in README


@pytest.mark.parametrize("method", ["random", "magnitude"])
def test_quotes_the_committed_aucs(method: str) -> None:
    summary = json.loads((ROOT / f"metrics/prune_{method}.json").read_text())
    row = f"| {method} pruning | {fmt(summary['auc'])} | {fmt(summary['auc_val'])} | {fmt(summary['acc_90'])} |"
    assert row in README


def test_quotes_the_committed_per_rate_table() -> None:
    random = pd.read_csv(ROOT / "plots/prune_random.csv")
    magnitude = pd.read_csv(ROOT / "plots/prune_magnitude.csv")
    for r, m in zip(random.itertuples(), magnitude.itertuples(), strict=True):
        row = (
            f"| {r.compression_rate:.0%} | {r.nonzero_weights:,} "
            f"| {fmt(r.test_accuracy)} ({fmt(r.val_accuracy)}) "
            f"| {fmt(m.test_accuracy)} ({fmt(m.val_accuracy)}) |"
        )
        assert row in README, row


def test_quick_start_is_what_ci_runs() -> None:
    assert "make repro" in README and "make test" in README
    ci = (ROOT / ".ci/run").read_text()
    assert ci.rstrip().endswith("make test")
