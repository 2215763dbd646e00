"""The compress and export stages on LeNet-5 (tiny synthetic data, tiny budgets): the shipped .nnc
holds the conv network its params name and reports the accuracy of the network decoded from it,
the export stage turns it into a checked ONNX file; a network the file format cannot hold is refused
before any work."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import ROOT, Normed, env, registered, split_files

from nncompress.compress import codec
from nncompress.data import load_split
from nncompress.errors import ParamError
from nncompress.model import save_checkpoint
from nncompress.nets import NETS
from nncompress.training import accuracy

TINY = {
    "model": {"arch": "lenet5"},
    "train": {"epochs": 1, "batch_size": 16, "device": "cpu"},
    "finetune": {"epochs": 1, "batch_size": 16, "device": "cpu"},
    "sweep": {"workers": 1},
    "prune_gradual": {"steps": 2},
    "compress": {
        "method": "gradual",
        "sparsity": 0.9,
        "bits": 3,
        "finetune_epochs": 2,  # its own budget, not finetune.epochs
        "centroid": {"epochs": 1, "batch_size": 16, "device": "cpu"},
        "sweep_sparsities": [0.9],
        "sweep_bits": [3],
    },
}


def write_params(path: Path, model: dict | None = None) -> Path:
    data = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    for section, values in TINY.items():
        if section == "model":
            data[section] = model or values
        elif isinstance(data[section], dict):
            for key, value in values.items():
                data[section][key] = {**data[section][key], **value} if isinstance(value, dict) else value
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def stage(folder: Path, name: str, *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, str(ROOT / f"stages/{name}.py"), *args],
        cwd=folder,
        env=env(ROOT),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    return proc


def test_compress_and_export_a_conv_network(tmp_path: Path) -> None:
    split_files(tmp_path / "split", train=64, val=32, test=64)
    torch.manual_seed(0)
    save_checkpoint(NETS["lenet5"]().build(), tmp_path / "model.pt")
    write_params(tmp_path / "params.yaml")
    common = ["--params", "params.yaml", "--model", "model.pt", "--split-dir", "split"]

    stage(tmp_path, "compress", *common, "--out", "model.nnc", "--csv", "compress.csv", "--png", "compress.png")
    data = (tmp_path / "model.nnc").read_bytes()
    net, _, layers = codec.decode(data)
    assert data[4] == codec.VERSION and net == NETS["lenet5"]()
    assert {name: layer.mask.ndim for name, layer in layers.items()} == {"conv1": 4, "conv2": 4, "fc1": 2, "fc2": 2}
    metrics = json.loads((tmp_path / "metrics/compress.json").read_text())
    assert metrics["compressed_bytes"] == len(data)
    assert metrics["test_accuracy"] == pytest.approx(
        accuracy(codec.load(tmp_path / "model.nnc"), load_split(tmp_path / "split", "test"))
    )
    assert set(metrics["layer_sparsity"]) == {"conv1", "conv2", "fc1", "fc2"}
    assert metrics["sparsity"] == pytest.approx(0.9, abs=1e-3)
    assert metrics["finetune_epochs"] == 2

    out = stage(
        tmp_path, "export", *common, "--nnc", "model.nnc", "--onnx", "model.onnx", "--structured", "structured.onnx"
    ).stdout
    exported = json.loads((tmp_path / "metrics/export.json").read_text())
    assert exported["model"]["nnc_bytes"] == len(data)
    assert exported["model"]["parameters"] == 431_080
    assert exported["model"]["test_accuracy"] == exported["model"]["torch_test_accuracy"] == metrics["test_accuracy"]
    assert out.startswith("model.onnx: ")
    if exported["structured"] is None:  # the structured method refused the network
        assert not (tmp_path / "structured.onnx").exists()
        assert "structured.onnx: skipped, " in out
    else:
        assert exported["structured"]["onnx_bytes"] == (tmp_path / "structured.onnx").stat().st_size


def test_compress_refuses_a_network_the_format_cannot_hold_before_any_work(tmp_path, monkeypatch) -> None:
    with registered("normed", Normed):
        write_params(tmp_path / "params.yaml", {"arch": "normed"})
        save_checkpoint(Normed(), tmp_path / "model.pt")
        spec = importlib.util.spec_from_file_location("compress_stage", ROOT / "stages/compress.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        argv = ["compress.py", "--params", str(tmp_path / "params.yaml"), "--model", str(tmp_path / "model.pt")]
        monkeypatch.setattr(sys, "argv", [*argv, "--split-dir", str(tmp_path / "no-split")])  # never read
        with pytest.raises(ParamError) as info:
            module.main()
        assert str(info.value) == (
            f"{tmp_path / 'params.yaml'}: model.arch normed cannot be written as a .nnc file: the .nnc format holds "
            "networks of Linear and Conv2d layers only; this one has state besides their weights and biases: "
            "norm.weight, norm.bias, norm.running_mean, ..."
        )
