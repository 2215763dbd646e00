"""`device: auto` picks the GPU when PyTorch sees one; a GPU asked for but absent is a clear error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from nncompress import config
from nncompress.errors import ParamError
from nncompress.model import MLP
from nncompress.training import DEVICES, accuracy, fit, resolve_device

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = yaml.safe_load((ROOT / "params.yaml").read_text())


@pytest.mark.parametrize(("has_gpu", "expected"), [(False, "cpu"), (True, "cuda")])
def test_auto_picks_the_gpu_only_when_there_is_one(monkeypatch, has_gpu, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: has_gpu)
    assert resolve_device("auto", "train.device") == torch.device(expected)


def test_cpu_is_always_the_cpu():
    assert resolve_device("cpu", "finetune.device") == torch.device("cpu")


def test_cuda_without_a_gpu_is_a_param_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ParamError) as info:
        resolve_device("cuda", "finetune.device")
    assert str(info.value) == "params.yaml: finetune.device is cuda, but PyTorch sees no CUDA GPU (use auto or cpu)"


def test_unknown_device_is_refused_by_params():
    with pytest.raises(ParamError) as info:
        config.parse_section("train", {**REFERENCE["train"], "device": "tpu"})
    assert str(info.value) == "params.yaml: train.device must be one of auto, cpu, cuda, got 'tpu'"


@pytest.mark.parametrize(
    ("section", "key", "data"),
    [
        ("finetune", "finetune.device", {**REFERENCE["finetune"], "device": "tpu"}),
        (
            "compress",
            "compress.centroid.device",
            {**REFERENCE["compress"], "centroid": {**REFERENCE["compress"]["centroid"], "device": "tpu"}},
        ),
    ],
)
def test_unknown_device_is_refused_in_every_optimiser_block(section, key, data):
    with pytest.raises(ParamError) as info:
        config.parse_section(section, data)
    assert str(info.value) == f"params.yaml: {key} must be one of auto, cpu, cuda, got 'tpu'"


@pytest.mark.parametrize("device", DEVICES)
def test_params_accept_exactly_the_devices_training_knows(device):
    """training.DEVICES owns the list: every name it resolves is a valid `device` value."""
    assert DEVICES == ("auto", "cpu", "cuda")
    assert config.parse_section("train", {**REFERENCE["train"], "device": device}).device == device


def test_fit_moves_model_and_data_to_the_device_it_is_given():
    torch.manual_seed(0)
    images, labels = torch.rand(64, 784), torch.randint(0, 10, (64,))
    model = MLP(8, "sigmoid", 0.0)
    fit(
        model,
        (images, labels),
        (images, labels),
        epochs=1,
        batch_size=16,
        lr=0.1,
        momentum=0.0,
        device=torch.device("cpu"),
    )
    assert next(model.parameters()).device == torch.device("cpu")
    assert 0.0 <= accuracy(model, (images, labels)) <= 1.0


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: cuda is valid here")
def test_train_stage_refuses_cuda_on_a_machine_without_one(tmp_path):
    params = {**REFERENCE, "train": {**REFERENCE["train"], "device": "cuda"}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    proc = subprocess.run(
        [sys.executable, str(ROOT / "stages/train.py"), "--params", "params.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert proc.stderr == "error: params.yaml: train.device is cuda, but PyTorch sees no CUDA GPU (use auto or cpu)\n"
    assert list(tmp_path.iterdir()) == [tmp_path / "params.yaml"]  # refused before reading or writing anything
