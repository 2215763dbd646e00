"""End to end: the real pipeline on real MNIST, driven through DVC in a temporary git repository."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import (
    METRIC_FILES,
    SMALL_PARAMS,
    dvc,
    read_metrics,
    small_reproduced,
)

from nncompress.prune import METHODS

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("mnist_available")]

SWEEP_KEYS = {"auc", "auc_val", "auc_std", "acc_90", "acc_95", "acc_98", "acc_99", "finetune_epochs", "seeds"}
RATES = SMALL_PARAMS["sweep"]["rates"]


@pytest.fixture(scope="module")
def small_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The pipeline reproduced once with small params, results committed."""
    return small_reproduced(tmp_path_factory, "small")


def test_repro_writes_every_output(small_repo: Path) -> None:
    for name in ("train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        assert (small_repo / "data/mnist" / name).is_file()
    for name in ("train", "val", "test"):
        assert (small_repo / f"data/split/{name}.pt").is_file()
    assert (small_repo / "models/model.pt").is_file()
    for png in ("samples", "loss", "accuracy", "accuracy_vs_rate"):
        assert (small_repo / f"plots/{png}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    metrics = read_metrics(small_repo)
    assert {"train_accuracy", "val_accuracy", "test_accuracy"} <= set(metrics["train"])
    assert metrics["train"]["test_accuracy"] > 0.5  # 64 SGD steps get far above chance (0.1)
    dense_parameters = metrics["train"]["parameters"]
    for method in METHODS:
        assert set(metrics[f"prune/{method}"]) == SWEEP_KEYS
        assert metrics[f"prune/{method}"]["acc_95"] is None  # not swept here
        table = pd.read_csv(small_repo / f"plots/prune/{method}.csv")
        assert list(table["compression_rate"]) == RATES
        # Structured pruning removes whole neurons: within one neuron (1/256) of the rate.
        tolerance = 1 / 256 if method == "structured" else 1e-5
        assert table["sparsity"].tolist() == pytest.approx(RATES, abs=tolerance)
        assert {"val_accuracy", "test_accuracy", "test_accuracy_std", "seeds"} <= set(table.columns)
        smaller = table["parameters"].iloc[1:] < dense_parameters
        assert smaller.all() if method == "structured" else not smaller.any()
    assert metrics["prune/random"]["seeds"] == 2
    assert pd.read_csv(small_repo / "plots/prune/random.csv")["test_accuracy_std"].iloc[1:].gt(0).all()
    assert metrics["prune/magnitude"]["finetune_epochs"] == 1
    assert metrics["prune/gradual"]["finetune_epochs"] == 1
    assert metrics["prune/lottery"]["finetune_epochs"] == 2  # 2 rounds of 1 epoch
    assert metrics["control"]["finetune_epochs"] == 1

    # The report's table: one column per method of sweep.methods, in that order.
    wide = pd.read_csv(small_repo / "plots/accuracy_vs_rate.csv")
    methods = yaml.safe_load((small_repo / "params.yaml").read_text())["sweep"]["methods"]
    assert list(wide.columns) == ["compression_rate", *methods]
    for method in methods:
        table = pd.read_csv(small_repo / f"plots/prune/{method}.csv")
        assert wide[method].tolist() == table["test_accuracy"].tolist()

    curve = pd.read_csv(small_repo / "plots/train_curve.csv")
    assert list(curve.columns[:5]) == ["iteration", "epoch", "loss", "train_accuracy", "val_accuracy"]
    assert curve["iteration"].iloc[-1] == 2 * 1024 // 32  # two epochs of batches of 32, last logged


def test_metrics_show(small_repo: Path) -> None:
    shown = json.loads(dvc(small_repo, "metrics", "show", "--json").stdout)
    files = next(iter(shown.values()))["data"]
    on_disk = read_metrics(small_repo)
    for name in METRIC_FILES:
        # DVC leaves out null values (here acc_95 and acc_98: rates these small params do not sweep).
        shown_values = {k: v for k, v in on_disk[name].items() if v is not None}
        assert files[f"metrics/{name}.json"]["data"] == shown_values


def test_repro_with_nothing_changed_runs_nothing(small_repo: Path) -> None:
    out = dvc(small_repo, "repro").stdout
    assert "Running stage" not in out
    assert "up to date" in dvc(small_repo, "status").stdout


def test_plots_show(small_repo: Path, tmp_path: Path) -> None:
    dvc(small_repo, "plots", "show", "-o", str(tmp_path / "html"))
    html = (tmp_path / "html/index.html").read_text()
    titles = ("Accuracy vs compression rate", "Training loss", "Train and validation accuracy", "compressed file size")
    for title in titles:
        assert title in html
    for method in METHODS:  # one curve per method: its column of plots/accuracy_vs_rate.csv
        assert f'"field": "{method}"' in html
    assert "accuracy_vs_rate.png" in html
    assert "compress.png" in html


def test_compress_reports_the_file_it_wrote(small_repo: Path) -> None:
    """The metrics describe models/model.nnc as a user loads it: its size, and its accuracy."""
    import torch

    from nncompress.compress import codec
    from nncompress.data import load_split
    from nncompress.training import accuracy

    torch.set_num_threads(1)
    metrics = json.loads((small_repo / "metrics/compress.json").read_text())
    nnc, dense = small_repo / "models/model.nnc", small_repo / "models/model.pt"
    assert metrics["compressed_bytes"] == nnc.stat().st_size
    assert metrics["state_dict_bytes"] == dense.stat().st_size  # the fp32 state_dict as torch.save writes it
    parameters = json.loads((small_repo / "metrics/train.json").read_text())["parameters"]
    assert metrics["dense_bytes"] == 4 * parameters  # the papers' count
    assert metrics["ratio"] == pytest.approx(metrics["dense_bytes"] / metrics["compressed_bytes"], rel=1e-5)
    assert metrics["state_dict_ratio"] == pytest.approx(metrics["state_dict_bytes"] / metrics["compressed_bytes"])
    assert metrics["ratio"] > 10
    model = codec.load(nnc)
    test = load_split(small_repo / "data/split", "test")
    assert metrics["test_accuracy"] == pytest.approx(accuracy(model, test), abs=1e-6)
    dense_acc = json.loads((small_repo / "metrics/train.json").read_text())["test_accuracy"]
    assert metrics["accuracy_drop"] == pytest.approx(100 * (dense_acc - metrics["test_accuracy"]), abs=1e-3)
    assert metrics["sparsity"] == pytest.approx(0.9, abs=1e-3)
    assert metrics["bits"] == 4

    table = pd.read_csv(small_repo / "plots/compress.csv")
    assert list(zip(table["sparsity"], table["bits"], strict=True)) == [(0.5, 2), (0.5, 4), (0.9, 2), (0.9, 4)]
    shipped = table.iloc[-1]
    assert shipped["bytes"] == metrics["compressed_bytes"]
    assert shipped["test_accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-6)
    assert (table["bytes"].iloc[2:].to_numpy() < table["bytes"].iloc[:2].to_numpy()).all()  # sparser is smaller
    assert (small_repo / "plots/compress.png").read_bytes()[:4] == b"\x89PNG"
