"""Every unstructured pruning method on LeNet-5 (Conv2d and Linear weights) and LeNet-300-100: the exact
rate per layer or overall, alone and side by side in a sweep; the prune stage on LeNet-5; structured
pruning of neurons and filters on every network."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from conftest import random_split, split_files
from torch.nn.utils import prune as torch_prune

from nncompress import config
from nncompress.macs import macs
from nncompress.model import copier, save_checkpoint
from nncompress.nets import NETS
from nncompress.prune import METHODS, Context
from nncompress.prune.masks import count_weights, make_permanent, prunable, sparsity, unstructured
from nncompress.schema import parse
from nncompress.sweep import COLUMNS, SweepPoint, rate_seed, run_sweep, sweep_method
from nncompress.training import train_model

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
ARCHS = ["lenet5", "lenet300"]
LAYERS = {
    "lenet5": {"conv1": 20 * 25, "conv2": 50 * 20 * 25, "fc1": 800 * 500, "fc2": 500 * 10},
    "lenet300": {"fc1": 784 * 300, "fc2": 300 * 100, "fc3": 100 * 10},
}
DENSE_MACS = {"lenet5": 2_293_000, "lenet300": 266_200}
# Tiny budgets: 32 training images in batches of 16, one epoch of retraining.
TINY = {
    "train": {"epochs": 1, "batch_size": 16, "lr": 0.05, "log_every": 2, "device": "cpu"},
    "finetune": {"epochs": 1, "batch_size": 16, "lr": 0.05, "device": "cpu"},
    "sweep": {"rates": [0.0, 0.5, 0.9], "workers": 1},
    "prune_random": {"seeds": [0, 1]},
    "prune_magnitude": {"finetune_epochs": 1},
    "prune_gradual": {"steps": 2},
    "prune_lottery": {"rounds": 2, "epochs": 1, "rewind_iteration": 2},
}
UNSTRUCTURED = sorted(set(METHODS) - {"structured"})
# (method, scope key or None, the scope it prunes with)
CASES = [
    ("random", None, "layer"),
    ("magnitude", None, "layer"),
    ("finetune", None, "layer"),
    ("global", None, "global"),
    ("gradual", "global", "global"),
    ("gradual", "layer", "layer"),
    ("lottery", "layer", "layer"),
    ("lottery", "global", "global"),
]


def tiny_params(model: dict, **sections: dict):
    data = copy.deepcopy(REFERENCE)
    data["model"] = model
    for name, changes in {**TINY, **sections}.items():
        data[name].update(changes)
    return parse(config.Params, data)


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    return {"train": random_split(g, 32), "val": random_split(g, 16), "test": random_split(g, 16)}


@pytest.fixture(scope="module")
def trained():
    """A stand-in for each network's trained checkpoint: initial weights, seeded."""
    result = {}
    for arch in ARCHS:
        torch.manual_seed(3)
        result[arch] = NETS[arch]().build()
    return result


def point(method, load, rate: float, seed: int = 0):
    """One sweep point's model, seeded and made permanent as SweepPoint does."""
    torch.manual_seed(rate_seed(seed, rate))
    model = method(load(), rate)
    make_permanent(model)
    return model


def test_every_unstructured_method_is_covered():
    assert sorted({name for name, _, _ in CASES}) == UNSTRUCTURED


def test_conv_and_linear_weights_are_prunable(trained):
    assert [name for name, _ in prunable(trained["lenet5"])] == list(LAYERS["lenet5"])
    for arch in ARCHS:
        assert count_weights(trained[arch]) == (sum(LAYERS[arch].values()), sum(LAYERS[arch].values()))


@pytest.mark.parametrize("criterion", ["random", "magnitude"])
@pytest.mark.parametrize("rate", [0.3, 0.75, 0.99])
def test_criteria_and_scopes_on_conv_weights(trained, criterion, rate):
    for scope in ("layer", "global"):
        model = copy.deepcopy(trained["lenet5"])
        torch.manual_seed(0)
        unstructured(criterion, scope)(model, rate)
        zeros = {name: int((m.weight == 0).sum()) for name, m in prunable(model)}
        if scope == "layer":
            assert zeros == {name: round(rate * n) for name, n in LAYERS["lenet5"].items()}
        else:
            assert sum(zeros.values()) == round(rate * sum(LAYERS["lenet5"].values()))
        assert model.conv1.weight_mask.shape == (20, 1, 5, 5)  # masks have the kernel's shape


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize(("name", "scope_key", "scope"), CASES)
def test_unstructured_methods_reach_the_exact_rate(data, trained, arch, name, scope_key, scope):
    sections = {f"prune_{name}": {"scope": scope_key}} if scope_key else {}
    params = tiny_params({"arch": arch}, **sections)
    method = params.method(name).build(Context(params, data["train"], data["val"]))
    load = copier(params.model, trained[arch])
    total = sum(LAYERS[arch].values())
    for rate in (0.5, 0.9):
        model = point(method, load, rate)
        assert type(model) is type(trained[arch])
        assert not any(torch_prune.is_pruned(m) for m in model.modules())
        zeros = {layer: int((m.weight == 0).sum()) for layer, m in prunable(model)}
        if scope == "layer":  # every layer, convolutions included, loses exactly the rate
            assert zeros == {layer: round(rate * n) for layer, n in LAYERS[arch].items()}, (name, rate)
        else:  # one threshold: the rate overall
            assert sum(zeros.values()) == round(rate * total), (name, rate)
        assert abs(sparsity(model)["total"] - rate) <= 1 / total
        assert macs(model) < DENSE_MACS[arch]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("name", ["gradual", "lottery"])
def test_a_sweep_side_by_side_is_each_point_alone(data, trained, arch, name):
    """run_sweep retrains its points together (LeNet-300-100 as one batched model, LeNet-5 one after
    another): each row is the one its point gives alone."""
    params = tiny_params({"arch": arch})
    method = params.method(name).build(Context(params, data["train"], data["val"]))
    load = copier(params.model, trained[arch])
    runs = run_sweep([0.5, 0.9], load, method, data["val"], data["test"], seeds=[0, 1])
    job = SweepPoint(load, method, data["val"], data["test"])
    for row in runs.to_dict("records"):
        assert job((row["compression_rate"], row["seed"])) == row


# --- the stages on LeNet-5 ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def lenet5_stage(tmp_path_factory, data):
    """LeNet-5 trained by the train stage's function, and uint8 split files as the split stage writes them."""
    root = tmp_path_factory.mktemp("lenet5")
    split_files(root / "split", train=32, val=16, test=16, seed=5)
    params = tiny_params({"arch": "lenet5"})
    model, log = train_model(params.model, params.train, data["train"], data["val"], device=torch.device("cpu"))
    assert [row["iteration"] for row in log] == [2]
    save_checkpoint(model, root / "model.pt")
    return root


@pytest.mark.parametrize("name", ["random", "global"])
def test_the_prune_stage_on_lenet5(lenet5_stage, tmp_path, name):
    params = tiny_params({"arch": "lenet5"})
    csv, metrics = tmp_path / f"{name}.csv", tmp_path / f"{name}.json"
    sweep_method(params, name, lenet5_stage / "model.pt", lenet5_stage / "split", csv, metrics)
    table = pd.read_csv(csv)
    assert list(table.columns) == list(COLUMNS)
    assert table["compression_rate"].tolist() == [0.0, 0.5, 0.9]
    assert table["macs"].iloc[0] == DENSE_MACS["lenet5"]
    assert table["macs"].is_monotonic_decreasing
    assert table["nonzero_weights"].iloc[0] == sum(LAYERS["lenet5"].values())
    assert table["parameters"].tolist() == [431_080] * 3
    assert json.loads(metrics.read_text())["finetune_epochs"] == (0 if name == "random" else 1)


# --- structured pruning: whole neurons and filters, on every network --------------------------

STRUCTURED_NETS = {
    "lenet5": {"arch": "lenet5"},
    "lenet300": {"arch": "lenet300"},
    "mlp-2": {"arch": "mlp", "hidden": [32, 16], "activation": "sigmoid", "dropout": 0.1},
}


@pytest.mark.parametrize("name", sorted(STRUCTURED_NETS))
@pytest.mark.parametrize("rate", [0.3, 0.6])
def test_structured_pruning_shrinks_and_keeps_the_masked_outputs(name, rate):
    from nncompress.prune.structured import hidden_units, neuron_prune, shrink

    params = tiny_params(STRUCTURED_NETS[name])
    torch.manual_seed(0)
    model = params.model.build()
    with torch.no_grad():  # biases large enough that a removed unit's constant output matters
        for layer in (m for _, m in prunable(model)):
            layer.bias.uniform_(-1.0, 1.0)
    units = [(u.layer.weight.shape[0]) for u in hidden_units(model)]
    dense_params, dense_macs = sum(p.numel() for p in model.parameters()), macs(model)
    neuron_prune(model, rate)
    small = shrink(model)
    model.eval()
    small.eval()
    x = torch.rand(8, 784, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.allclose(small(x), model(x), atol=1e-5)
    assert [u.layer.weight.shape[0] for u in hidden_units(small)] == [n - round(rate * n) for n in units]
    assert sum(p.numel() for p in small.parameters()) < dense_params
    assert macs(small) < dense_macs
    assert not any(torch_prune.is_pruned(m) for m in small.modules())
    assert any(torch_prune.is_pruned(m) for m in model.modules())  # the masked model is left alone


def test_the_prune_stage_of_structured_on_lenet5(lenet5_stage, tmp_path):
    params = tiny_params({"arch": "lenet5"})
    csv, metrics = tmp_path / "structured.csv", tmp_path / "structured.json"
    sweep_method(params, "structured", lenet5_stage / "model.pt", lenet5_stage / "split", csv, metrics)
    table = pd.read_csv(csv)
    assert table["compression_rate"].tolist() == [0.0, 0.5, 0.9]
    assert table["parameters"].iloc[0] == 431_080
    assert table["parameters"].is_monotonic_decreasing and table["macs"].is_monotonic_decreasing
    assert json.loads(metrics.read_text())["finetune_epochs"] == 1
