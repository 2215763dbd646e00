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


def pct(rate: float) -> str:
    """A sparsity as the README writes it: 98%, or 99.3% when a whole percent would round it."""
    return f"{rate:.0%}" if round(rate, 2) == round(rate, 6) else f"{rate:.1%}"


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
    assert f"| dense fp32, 4 B per parameter | {c['dense_bytes']:,} | 1x | {fmt(c['dense_test_accuracy'])} |" in README
    saved = f"| dense `state_dict` as torch.save writes it (`models/model.pt`) | {c['state_dict_bytes']:,} | "
    assert saved + f"{c['dense_bytes'] / c['state_dict_bytes']:.3f}x |" in README
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


# --- `nncompress info` on the shipped file ---------------------------------------------------------
# The README quotes the command's output on models/model.nnc. When the pipeline has rebuilt the file,
# refresh the quote with: .venv/bin/python tests/test_readme.py --refresh-info
INFO_COMMAND = "$ nncompress info models/model.nnc\n"


def quoted_info(readme: str = README) -> tuple[int, int]:
    """Where the README's quoted `nncompress info models/model.nnc` output starts and ends."""
    start = readme.index(INFO_COMMAND) + len(INFO_COMMAND)
    return start, readme.index("```", start)


def real_info() -> str:
    """The command's output on the workspace's models/model.nnc, run as a user runs it, from the root."""
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "nncompress.cli", "info", "models/model.nnc"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return proc.stdout


def shipped_file_is_the_committed_one() -> bool:
    """models/model.nnc exists and is the file dvc.lock records (not an experiment's, not stale)."""
    import hashlib

    path = ROOT / "models/model.nnc"
    if not path.is_file():
        return False
    lock = yaml.safe_load((ROOT / "dvc.lock").read_text())
    (recorded,) = [out["md5"] for out in lock["stages"]["compress"]["outs"] if out["path"] == "models/model.nnc"]
    return hashlib.md5(path.read_bytes()).hexdigest() == recorded


@pytest.mark.skipif(
    not shipped_file_is_the_committed_one(),
    reason="models/model.nnc is missing or not the file dvc.lock records (dvc repro compress, or dvc pull)",
)
def test_quotes_the_real_info_output_of_the_shipped_file() -> None:
    start, end = quoted_info()
    assert README[start:end] == real_info(), "stale quote: run .venv/bin/python tests/test_readme.py --refresh-info"


def test_the_info_quote_is_the_commands_shape() -> None:
    """Whatever model it was made from, the quote is what `info` prints: header, network, layer table, sizes."""
    import re

    start, end = quoted_info()
    lines = README[start:end].splitlines()
    assert re.fullmatch(
        r"models/model\.nnc: nncompress model file, format version [123], [\d,]+ bytes, "
        r"checksum OK \(CRC-32 0x[0-9a-f]{8}\)",
        lines[0],
    ), lines[0]
    assert lines[1].startswith("network: model.arch ")
    assert lines[3].split()[:4] == ["layer", "kind", "shape", "kept"]
    rows = [line.split()[0] for line in lines[4 : lines.index("", 4)]]
    assert len(rows) >= 3 and rows[-1] == "all"  # one row per layer, then the whole file's
    assert lines[-1].startswith("dense fp32: ")


def refresh_info() -> None:
    start, end = quoted_info()
    (ROOT / "README.md").write_text(README[:start] + real_info() + README[end:])
    print("README.md: the `nncompress info models/model.nnc` quote refreshed")


if __name__ == "__main__":
    import sys

    if sys.argv[1:] != ["--refresh-info"]:
        sys.exit("usage: python tests/test_readme.py --refresh-info")
    refresh_info()


# --- protocols: the literature's networks -----------------------------------------------------------
PROTOCOLS = sorted(p.parent.parent.name for p in (ROOT / "protocols").glob("*/metrics/compress.json"))
# The records' accuracy bars per protocol (the issue's targets): the best ratio the compress grid
# reaches at or above each is quoted.
BARS = {"full-data": (0.980,), "lenet300": (0.9840, 0.9805), "lenet5": (0.9900, 0.9925)}


def protocol_metrics(name: str, metric: str) -> dict:
    return json.loads((ROOT / f"protocols/{name}/metrics/{metric}.json").read_text())


def paper_ratio(name: str, nbytes: float) -> float:
    """The papers' ratio: 4 bytes x the dense network's parameters / the file's bytes (what compress
    reports as `ratio`; checked here from the train stage's parameter count)."""
    return 4 * protocol_metrics(name, "train")["parameters"] / nbytes


@pytest.mark.parametrize("name", PROTOCOLS)
def test_quotes_each_protocols_committed_results(name: str) -> None:
    train, compress = protocol_metrics(name, "train"), protocol_metrics(name, "compress")
    gradual = protocol_metrics(name, "prune/gradual")
    row = (
        f"| `{name}` | {fmt(train['test_accuracy'])} | {fmt(gradual['acc_95'])} / {fmt(gradual['acc_98'])} / "
        f"{fmt(gradual['acc_99'])} | {pct(compress['sparsity'])}, {compress['bits']} bits: "
        f"{compress['compressed_bytes']:,} B | {paper_ratio(name, compress['compressed_bytes']):.1f}x "
        f"({compress['state_dict_ratio']:.1f}x) | {fmt(compress['test_accuracy'])} |"
    )
    assert compress["ratio"] == pytest.approx(paper_ratio(name, compress["compressed_bytes"]), abs=1e-5)
    assert row in README, row


@pytest.mark.parametrize("name", PROTOCOLS)
def test_quotes_each_protocols_best_ratio_at_the_records_accuracy(name: str) -> None:
    grid = pd.read_csv(ROOT / f"protocols/{name}/plots/compress.csv")
    for bar in BARS[name]:
        above = grid[grid["test_accuracy"] >= bar]
        if len(above):
            best = above.loc[above["bytes"].idxmin()]
            cell = (
                f"{paper_ratio(name, best['bytes']):.1f}x ({pct(best['sparsity'])}, {int(best['bits'])} bits, "
                f"{int(best['bytes']):,} B) at {fmt(best['test_accuracy'])}"
            )
        else:
            cell = f"none of the grid reaches {bar:.2%}"
        assert f"`{name}` at >= {bar:.2%}: {cell}" in README, cell
