"""The README quotes the committed results and the commands CI really runs."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from nncompress.prune import METHODS as REGISTERED

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
# The README's tables list the methods in the pipeline's order (the report's legend).
METHODS = tuple(yaml.safe_load((ROOT / "params.yaml").read_text())["sweep"]["methods"])


def fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def metrics(name: str) -> dict:
    return json.loads((ROOT / f"metrics/{name}.json").read_text())


def test_quotes_the_committed_dense_and_control_accuracies() -> None:
    train, control = metrics("train"), metrics("control")
    assert (
        f"| {fmt(train['train_accuracy'])} | {fmt(train['val_accuracy'])} | {fmt(train['test_accuracy'])} |" in README
    )
    assert f"| | {fmt(control['val_accuracy'])} | {fmt(control['test_accuracy'])} |" in README


@pytest.mark.parametrize("method", METHODS)
def test_quotes_the_committed_summary_of_each_method(method: str) -> None:
    s = metrics(f"prune/{method}")
    row = (
        f"| {method} | {s['finetune_epochs']} epochs | {fmt(s['auc'])} | {fmt(s['auc_val'])} | {fmt(s['acc_90'])} "
        f"| {fmt(s['acc_95'])} | {fmt(s['acc_98'])} | {fmt(s['acc_99'])} |"
    )
    assert row in README


def test_every_registered_method_is_in_the_readme_tables() -> None:
    assert set(METHODS) == set(REGISTERED)
    header = "| rate | " + " | ".join(METHODS) + " |"
    assert header in README, header


def test_the_stage_table_names_each_sweep_stage() -> None:
    for method in METHODS:
        assert f"`prune@{method}`" in README, method


def test_quotes_the_committed_per_rate_table() -> None:
    tables = {m: pd.read_csv(ROOT / f"plots/prune/{m}.csv") for m in METHODS}
    for i, rate in enumerate(tables["random"]["compression_rate"]):
        cells = []
        for method in METHODS:
            row = tables[method].iloc[i]
            assert row.compression_rate == rate
            mean = fmt(row.test_accuracy)
            cells.append(f"{mean} ± {fmt(row.test_accuracy_std)}" if row.seeds > 1 else mean)
        line = f"| {rate:.0%} | " + " | ".join(cells) + " |"
        assert line in README, line


def test_quick_start_is_what_ci_runs() -> None:
    assert "make repro" in README and "make test" in README
    ci = (ROOT / ".ci/run").read_text()
    assert ci.rstrip().endswith("make test")


def compress_cell(row: pd.Series) -> str:
    """A cell of the README's size/accuracy grid: bytes, ratio, test accuracy of the decoded file."""
    return f"{int(row.bytes):,} B, {row.ratio:.0f}x, {fmt(row.test_accuracy)}"


def test_quotes_the_committed_compression_result() -> None:
    c = metrics("compress")
    assert (
        f"| dense fp32 `state_dict` (`models/model.pt`) | {c['dense_bytes']:,} | 1x | {fmt(c['dense_test_accuracy'])} |"
        in README
    )
    shipped = (
        f"| {c['sparsity']:.0%} sparse, {c['bits']} bits (`models/model.nnc`) | {c['compressed_bytes']:,} "
        f"| {c['ratio']:.1f}x | {fmt(c['test_accuracy'])} |"
    )
    assert shipped in README, shipped
    assert f"accuracy_drop {c['accuracy_drop']:.2f}" in README


def test_quotes_the_committed_compression_grid() -> None:
    table = pd.read_csv(ROOT / "plots/compress.csv")
    for sparsity, group in table.groupby("sparsity"):
        line = f"| {sparsity:.0%} | " + " | ".join(compress_cell(row) for row in group.itertuples()) + " |"
        assert line in README, line
