"""The network registry (nncompress.nets): the seed's MLP unchanged, LeNet-300-100 and LeNet-5 with
their published parameter counts, built from params, checkpoints that round-trip, and a network a
user registers, pruned and swept like the others."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import yaml
from conftest import random_split
from torch import nn
from torch.nn import functional as F

from nncompress import config
from nncompress.errors import CheckpointError, ParamError
from nncompress.model import MLP, build_model, copier, load_checkpoint, save_checkpoint
from nncompress.nets import IN_FEATURES, NETS, NUM_CLASSES, NetConfig, register
from nncompress.nets.lenet5 import LeNet5
from nncompress.nets.mlp import MLPConfig
from nncompress.prune import Context
from nncompress.prune.masks import prunable, sparsity
from nncompress.schema import Positive, parse
from nncompress.sweep import SweepPoint, run_sweep

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
PARAMETERS = {"mlp": 203_530, "lenet300": 266_610, "lenet5": 431_080}
SECTIONS = {"mlp": REFERENCE["model"], "lenet300": {"arch": "lenet300"}, "lenet5": {"arch": "lenet5"}}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def params_with(model: dict, **sections: dict):
    """The committed params.yaml with the model section replaced and other sections updated, validated."""
    data = copy.deepcopy(REFERENCE)
    data["model"] = model
    for name, changes in sections.items():
        data[name].update(changes)
    return parse(config.Params, data)


# --- the registry -------------------------------------------------------------------------------


def test_the_registered_networks():
    assert sorted(NETS) == ["lenet300", "lenet5", "mlp"]
    for name, cls in NETS.items():
        assert issubclass(cls, NetConfig)
        assert cls.name == name


def test_registering_a_name_twice_raises():
    class Again(NetConfig):
        pass

    for name in list(NETS):
        with pytest.raises(ValueError, match=rf"^network '{name}' is registered twice$"):
            register(name)(Again)
    assert not hasattr(Again, "name")


@pytest.mark.parametrize("arch", sorted(PARAMETERS))
def test_each_network_builds_from_params_with_its_parameter_count(arch):
    params = params_with(SECTIONS[arch])
    assert type(params.model) is NETS[arch]
    model = build_model(params.model)
    assert n_params(model) == PARAMETERS[arch]
    for shape in [(5, IN_FEATURES), (5, 28, 28), (5, 1, 28, 28)]:  # what the splits hold, and images
        assert model(torch.rand(shape)).shape == (5, NUM_CLASSES)


def test_the_default_params_build_the_seeds_mlp_bit_for_bit():
    params = config.load(ROOT / "params.yaml")
    assert params.model == MLPConfig(hidden=[256], activation="sigmoid", dropout=0.15)
    for seed in (0, 1):
        torch.manual_seed(seed)
        built = build_model(params.model)
        after_built = torch.rand(4)
        torch.manual_seed(seed)
        seed_mlp = MLP(256, "sigmoid", 0.15)
        after_seed = torch.rand(4)
        assert type(built) is MLP
        assert [name for name, _ in built.named_modules()] == ["", "fc1", "act", "dropout", "fc2"]
        assert [name for name, _ in seed_mlp.named_modules()] == ["", "fc1", "act", "dropout", "fc2"]
        assert list(built.state_dict()) == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
        for key, tensor in seed_mlp.state_dict().items():
            assert torch.equal(built.state_dict()[key], tensor), key
        assert torch.equal(after_built, after_seed)  # the same draws from torch's RNG
        x = torch.rand(6, IN_FEATURES)
        torch.manual_seed(9)
        out = built.train()(x)  # dropout draws too
        torch.manual_seed(9)
        assert torch.equal(out, seed_mlp.train()(x))
        assert torch.equal(built.eval()(x), seed_mlp.fc2(torch.sigmoid(seed_mlp.fc1(x))))


def test_an_int_or_one_width_is_the_seeds_mlp():
    torch.manual_seed(4)
    a = MLP(32, "relu", 0.0)
    torch.manual_seed(4)
    b = MLP([32], "relu", 0.0)
    assert a.hidden_sizes == b.hidden_sizes == (32,)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_an_mlp_with_several_hidden_layers():
    torch.manual_seed(5)
    model = MLPConfig(hidden=[32, 16, 8], activation="tanh", dropout=0.3).build().eval()
    assert model.layer_names == ("fc1", "fc2", "fc3", "fc4")
    assert model.hidden_sizes == (32, 16, 8)
    assert [(m.in_features, m.out_features) for m in model.layers] == [(784, 32), (32, 16), (16, 8), (8, 10)]
    assert n_params(model) == 785 * 32 + 33 * 16 + 17 * 8 + 9 * 10
    x = torch.rand(3, IN_FEATURES)
    expected = model.fc4(torch.tanh(model.fc3(torch.tanh(model.fc2(torch.tanh(model.fc1(x)))))))
    assert torch.equal(model(x), expected)
    model.train()  # dropout after each hidden layer: with p = 0.3, some of the 56 hidden units drop
    torch.manual_seed(0)
    assert not torch.equal(model(x), expected)


def test_lenet300_is_lenet_300_100():
    model = NETS["lenet300"]().build()
    assert type(model) is MLP
    assert model.hidden_sizes == (300, 100)
    assert type(model.act) is nn.ReLU
    assert model.dropout.p == 0.0


def test_lenet5_is_caffes():
    torch.manual_seed(6)
    model = NETS["lenet5"]().build()
    assert type(model) is LeNet5
    shapes = {name: tuple(m.weight.shape) for name, m in prunable(model)}
    assert shapes == {"conv1": (20, 1, 5, 5), "conv2": (50, 20, 5, 5), "fc1": (500, 800), "fc2": (10, 500)}
    x = torch.rand(4, IN_FEATURES)
    h = F.max_pool2d(F.conv2d(x.view(4, 1, 28, 28), model.conv1.weight, model.conv1.bias), 2)
    h = F.max_pool2d(F.conv2d(h, model.conv2.weight, model.conv2.bias), 2)  # no ReLU after either conv
    expected = F.linear(
        F.relu(F.linear(h.flatten(1), model.fc1.weight, model.fc1.bias)), model.fc2.weight, model.fc2.bias
    )
    assert torch.allclose(model(x), expected, atol=1e-6)


@pytest.mark.parametrize("arch", sorted(PARAMETERS))
def test_checkpoint_round_trip(tmp_path, arch):
    params = params_with(SECTIONS[arch])
    torch.manual_seed(7)
    saved = build_model(params.model)
    save_checkpoint(saved, tmp_path / "model.pt")
    torch.manual_seed(8)
    loaded = load_checkpoint(build_model(params.model), tmp_path / "model.pt")
    for key, tensor in saved.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], tensor), key
    copy_ = copier(params.model, saved)()
    x = torch.rand(3, IN_FEATURES)
    assert torch.equal(copy_.eval()(x), saved.eval()(x))


def test_a_checkpoint_of_another_network_is_refused(tmp_path):
    save_checkpoint(NETS["lenet300"]().build(), tmp_path / "model.pt")
    with pytest.raises(CheckpointError, match="does not match the model: missing") as info:
        load_checkpoint(NETS["lenet5"]().build(), tmp_path / "model.pt")
    assert "\n" not in str(info.value)


# --- a network of your own ----------------------------------------------------------------------


class TinyConvNet(nn.Module):
    """A small custom network: a strided conv, ReLU, a Linear classifier."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(1, channels, kernel_size=4, stride=2)  # 28x28 -> 13x13
        self.fc = nn.Linear(channels * 13 * 13, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x.reshape(len(x), 1, 28, 28))).flatten(1))


@pytest.fixture
def tiny_net():
    """A network registered as a user registers one (what a module under nncompress/nets/ holds),
    removed from the registry afterwards."""
    assert "tiny" not in NETS

    @register("tiny")
    class TinyConfig(NetConfig):
        channels: Positive

        def build(self) -> TinyConvNet:
            return TinyConvNet(self.channels)

    try:
        yield TinyConfig
    finally:
        NETS.pop("tiny", None)


TINY_BUDGET = {
    "finetune": {"epochs": 1, "batch_size": 16, "lr": 0.1, "device": "cpu"},
    "train": {"epochs": 1, "batch_size": 16, "device": "cpu"},
    "prune_gradual": {"steps": 2},
}


def test_a_registered_network_is_chosen_pruned_and_swept(tiny_net, tmp_path):
    params = params_with({"arch": "tiny", "channels": 2}, **TINY_BUDGET)
    assert type(params.model) is tiny_net
    options = config.json_schema()["$defs"]["NetConfig"]["oneOf"]
    assert "tiny" in {option["properties"]["arch"]["const"] for option in options}  # while it is registered
    with pytest.raises(ParamError, match=r"^params.yaml: missing key model.channels$"):
        params_with({"arch": "tiny"})

    g = torch.Generator().manual_seed(0)
    train, val, test = random_split(g, 32), random_split(g, 16), random_split(g, 16)
    torch.manual_seed(0)
    save_checkpoint(build_model(params.model), tmp_path / "model.pt")
    trained = load_checkpoint(build_model(params.model), tmp_path / "model.pt")
    method = params.method("gradual").build(Context(params, train, val))
    point = SweepPoint(copier(params.model, trained), method, val, test)

    row = point((0.75, 0))
    conv_weights, fc_weights = 2 * 16, 2 * 13 * 13 * 10
    assert row["nonzero_weights"] == round(0.25 * (conv_weights + fc_weights))  # global scope: one threshold
    assert row["parameters"] == conv_weights + 2 + fc_weights + 10
    assert 0 < row["macs"] < 13 * 13 * conv_weights + fc_weights
    assert point((0.75, 0)) == row  # seeded per (seed, rate)

    runs = run_sweep([0.0, 0.75], copier(params.model, trained), method, val, test, seeds=[0])  # side by side
    assert runs.iloc[1].to_dict() == row
    assert runs.iloc[0]["macs"] == 13 * 13 * conv_weights + fc_weights

    structured = params.method("structured").build(Context(params, train, val))  # whole filters go
    shrunk = SweepPoint(copier(params.model, trained), structured, val, test)((0.5, 0))
    assert shrunk["parameters"] == 1 * 16 + 1 + 1 * 13 * 13 * 10 + 10  # one of the two filters left


def test_a_pruned_custom_network_keeps_the_exact_rate_per_layer(tiny_net):
    params = params_with({"arch": "tiny", "channels": 3}, **TINY_BUDGET)
    g = torch.Generator().manual_seed(1)
    train, val = random_split(g, 32), random_split(g, 16)
    torch.manual_seed(1)
    trained = build_model(params.model)
    method = params.method("finetune").build(Context(params, train, val))
    model = method(copier(params.model, trained)(), 0.5)
    zeros = {name: int((m.weight == 0).sum()) for name, m in prunable(model)}
    assert zeros == {"conv": round(0.5 * 48), "fc": round(0.5 * 3 * 169 * 10)}
    assert sparsity(model)["total"] == pytest.approx(0.5, abs=1e-3)
