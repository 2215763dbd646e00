"""The compression pipeline on a tiny model and synthetic data: dense size, share-and-fine-tune,
and the (sparsity, bits) grid measured on the decoded files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import fresh, plain_sgd, random_split
from torch import nn
from torch.nn.utils import parametrize, prune

from nncompress.compress import codec
from nncompress.compress import grid as compression  # `grid` is the name of a fixture below
from nncompress.compress.grid import COLUMNS, compress_grid, decoded, setting_seed, share_and_finetune, state_dict_bytes
from nncompress.compress.quantize import kmeans_share
from nncompress.fileio import save_torch
from nncompress.macs import macs
from nncompress.model import MLP
from nncompress.nets import NETS, NetConfig, register
from nncompress.prune.masks import make_permanent, prunable, unstructured
from nncompress.prune.retrain import Retrainer
from nncompress.schema import Positive
from nncompress.sweep import rate_seed
from nncompress.training import accuracy

HIDDEN = 16
magnitude_prune = unstructured("magnitude", "layer")  # the old pruning.magnitude_prune
SETTINGS = [(0.9, 4), (0.5, 2), (0.9, 2), (0.5, 4)]  # deliberately unsorted


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)

    # a test split large enough that fp16 biases or a different model would move its accuracy
    return {"train": random_split(g, 64), "val": random_split(g, 48), "test": random_split(g, 2000)}


@pytest.fixture(scope="module")
def trained_state():
    torch.manual_seed(7)
    model = MLP(hidden_size=HIDDEN)
    with torch.no_grad():
        model.fc1.bias.uniform_(-2.0, 2.0)
        model.fc2.bias.uniform_(-2.0, 2.0)
    return {k: v.clone() for k, v in model.state_dict().items()}


def retrainer(data, epochs=1):
    opt = plain_sgd(epochs, lr=0.5, batch_size=16)
    return Retrainer(data["train"], data["val"], opt, epochs)


def pruned(state, rate=0.5):
    model = fresh(state)
    magnitude_prune(model, rate)
    make_permanent(model)
    return model.eval()


# --- state_dict_bytes / setting_seed ------------------------------------------------------------


@pytest.mark.parametrize("hidden", [1, 16, 256])
def test_state_dict_bytes_is_the_size_of_the_saved_checkpoint(tmp_path, hidden):
    model = MLP(hidden_size=hidden)
    path = tmp_path / "model.pt"
    save_torch(path, model.state_dict())  # how the pipeline writes the dense model
    assert state_dict_bytes(model) == path.stat().st_size
    with open(tmp_path / "other.pt", "wb") as fh:
        torch.save(model.state_dict(), fh)
    assert state_dict_bytes(model) == (tmp_path / "other.pt").stat().st_size
    assert state_dict_bytes(model) > 4 * (785 * hidden + (hidden + 1) * 10)  # fp32, plus the archive


def test_setting_seed_depends_on_every_part_of_the_setting():
    seeds = {setting_seed(s, r, b) for s in (0, 1) for r in (0.5, 0.9) for b in (2, 4)}
    assert len(seeds) == 8
    assert setting_seed(3, 0.9, 4) == setting_seed(3, 0.9, 4)
    assert all(0 <= s < 2**32 for s in seeds)


# --- share_and_finetune -------------------------------------------------------------------------


@pytest.mark.parametrize("epochs", [None, 0, 1])
def test_share_and_finetune_does_not_modify_its_input(data, trained_state, epochs):
    model = pruned(trained_state)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    retrain = None if epochs is None else retrainer(data, epochs)
    torch.manual_seed(0)
    shared, layers = share_and_finetune(model, 2, retrain)
    assert shared is not model
    assert set(model.state_dict()) == set(before)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert not any(parametrize.is_parametrized(m) for m in model.modules())
    assert not model.training
    # the result is a plain eval-mode model holding the shared weights
    assert not shared.training
    assert not any(parametrize.is_parametrized(m) for m in shared.modules())
    for name, module in prunable(shared):
        assert torch.equal(module.weight.detach(), torch.from_numpy(layers[name].dense()))
        assert torch.equal(module.weight == 0, before[f"{name}.weight"] == 0)
        assert len(layers[name].centroids) <= 4
    if epochs:  # fine-tuning moved the biases (and centroids)
        assert not torch.equal(shared.fc1.bias, before["fc1.bias"])
    else:
        assert torch.equal(shared.fc1.bias, before["fc1.bias"])


def test_decoded_is_the_model_in_the_bytes(trained_state):
    model = pruned(trained_state)
    shared, layers = share_and_finetune(model, 3, None)
    restored = decoded(codec.encode(shared, layers))
    assert type(restored) is MLP
    assert not restored.training
    for name, module in prunable(shared):
        assert torch.equal(getattr(restored, name).weight, module.weight)
        assert torch.equal(getattr(restored, name).bias, module.bias.half().float())


# --- compress_grid ------------------------------------------------------------------------------


def run_grid(data, trained_state, calls, seed=0, retrain_epochs=1):
    def prune_fn(sparsity):
        calls.append(sparsity)
        model = fresh(trained_state)
        magnitude_prune(model, sparsity)  # masks left on: compress_grid folds them in
        retrainer(data, 1)(model)
        return model

    return compress_grid(
        SETTINGS,
        prune_fn,
        retrainer(data, retrain_epochs),
        data["val"],
        data["test"],
        dense_bytes=123_456,
        dense_test_accuracy=0.5,
        seed=seed,
    )


@pytest.fixture(scope="module")
def grid(data, trained_state):
    calls = []
    table, files = run_grid(data, trained_state, calls)
    return table, files, calls


def test_grid_has_one_row_per_setting_with_the_documented_columns(grid):
    table, files, _ = grid
    assert list(table.columns) == list(COLUMNS)
    assert len(table) == len(SETTINGS)
    assert list(zip(table["sparsity"], table["bits"], strict=True)) == sorted(SETTINGS)
    assert set(files) == set(SETTINGS)
    assert not table.isna().any().any()
    assert (table["macs"] == table["nonzero_weights"]).all()  # an MLP uses each kept weight once per image


def test_grid_calls_prune_once_per_sparsity(grid):
    _, _, calls = grid
    assert sorted(calls) == [0.5, 0.9]


def test_grid_bytes_and_ratio_are_those_of_the_files(grid):
    table, files, _ = grid
    for row in table.itertuples():
        data = files[(row.sparsity, row.bits)]
        assert row.bytes == len(data)
        assert row.ratio == 123_456 / len(data)
        assert row.bits_per_weight == 8 * len(data) / row.nonzero_weights
    sizes = dict(zip(zip(table["sparsity"], table["bits"], strict=True), table["bytes"], strict=True))
    assert sizes[(0.9, 2)] < sizes[(0.5, 2)]
    assert sizes[(0.9, 2)] < sizes[(0.9, 4)]


def test_grid_accuracies_are_those_of_the_decoded_files(grid, data):
    table, files, _ = grid
    for row in table.itertuples():
        restored = decoded(files[(row.sparsity, row.bits)])
        assert row.test_accuracy == accuracy(restored, data["test"])
        assert row.val_accuracy == accuracy(restored, data["val"])
        assert row.accuracy_drop == pytest.approx(100 * (0.5 - row.test_accuracy))
        nonzero = sum(int(torch.count_nonzero(m.weight)) for _, m in prunable(restored))
        assert row.nonzero_weights == nonzero
        expected = round((1 - row.sparsity) * 784 * HIDDEN) + round((1 - row.sparsity) * HIDDEN * 10)
        assert nonzero == expected  # layer-wise magnitude pruning, and no shared value is zero
        for _, module in prunable(restored):
            assert len(torch.unique(module.weight[module.weight != 0])) <= 2**row.bits


def test_grid_pruned_accuracy_is_that_of_the_pruned_model(grid, data, trained_state):
    """Rows with the same sparsity share one pruned model, pruned under the sweep's seed."""
    table, _, _ = grid
    by_sparsity = table.groupby("sparsity")["pruned_test_accuracy"].nunique()
    assert (by_sparsity == 1).all()
    for sparsity in (0.5, 0.9):
        torch.manual_seed(rate_seed(0, sparsity))
        model = fresh(trained_state)
        magnitude_prune(model, sparsity)
        retrainer(data, 1)(model)
        make_permanent(model)
        got = table.loc[table["sparsity"] == sparsity, "pruned_test_accuracy"].iloc[0]
        assert got == accuracy(model, data["test"])


def test_grid_is_deterministic(grid, data, trained_state):
    table, files, _ = grid
    table2, files2 = run_grid(data, trained_state, [])
    assert files2 == files
    assert table2.equals(table)


def test_grid_depends_on_the_seed(grid, data, trained_state):
    _, files, _ = grid
    _, other = run_grid(data, trained_state, [], seed=1)
    assert other != files


def test_grid_without_fine_tuning_codes_the_kmeans_layers(data, trained_state):
    def prune_fn(sparsity):
        model = fresh(trained_state)
        magnitude_prune(model, sparsity)
        return model

    table, files = compress_grid(
        [(0.5, 3)], prune_fn, None, data["val"], data["test"], dense_bytes=1000, dense_test_accuracy=0.1
    )
    model = pruned(trained_state, 0.5)
    _, _, layers = codec.decode(files[(0.5, 3)])
    for name, module in prunable(model):
        expected = kmeans_share(module.weight, 3)
        assert np.array_equal(layers[name].mask, expected.mask)
        assert np.array_equal(layers[name].centroids, expected.centroids)
        assert np.array_equal(layers[name].codes, expected.codes)
    assert table["ratio"].iloc[0] == 1000 / len(files[(0.5, 3)])


def test_grid_leaves_no_pruning_hooks_on_the_models_it_was_given(data, trained_state):
    given = []

    def prune_fn(sparsity):
        model = fresh(trained_state)
        magnitude_prune(model, sparsity)
        given.append(model)
        return model

    compress_grid([(0.5, 2)], prune_fn, None, data["val"], data["test"], dense_bytes=1, dense_test_accuracy=0.0)
    assert not any(prune.is_pruned(m) for m in given[0].modules())
    assert compression.COLUMNS == COLUMNS


def test_grid_measures_the_model_decoded_from_each_file(data, trained_state, monkeypatch):
    """Accuracies come from decoded(file bytes), not from the in-memory model."""
    decoded_from = []

    def spy(data_bytes):
        model = decoded(data_bytes)
        decoded_from.append(data_bytes)
        with torch.no_grad():  # a model only this path produces: it always answers class 3
            model.fc2.bias.copy_(torch.nn.functional.one_hot(torch.tensor(3), 10) * 1e6)
        return model

    monkeypatch.setattr(compression, "decoded", spy)
    table, files = run_grid(data, trained_state, [])
    assert sorted(decoded_from) == sorted(files[s] for s in SETTINGS)  # settings run side by side
    for split in ("test", "val"):
        labels = data[split][1]
        assert table[f"{split}_accuracy"].tolist() == [int((labels == 3).sum()) / len(labels)] * len(SETTINGS)


# --- any network: LeNet-300-100, LeNet-5, a user's ----------------------------------------------


class TinyConv(nn.Module):
    """A user's network: a conv without bias, a Linear head."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(1, channels, 4, stride=2, bias=False)  # 28x28 -> 13x13
        self.fc = nn.Linear(channels * 13 * 13, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x.reshape(len(x), 1, 28, 28))).flatten(1))


@pytest.fixture
def network(request):
    """The model section of request.param: a registered network, or "custom" (registered here)."""
    if request.param != "custom":
        yield NETS[request.param]()
        return

    @register("tinyconv")
    class TinyConvConfig(NetConfig):
        channels: Positive

        def build(self) -> TinyConv:
            return TinyConv(self.channels)

    try:
        yield TinyConvConfig(channels=3)
    finally:
        NETS.pop("tinyconv", None)


@pytest.mark.parametrize("network", ["lenet300", "lenet5", "custom"], indirect=True)
def test_grid_codes_any_network_and_reports_the_decoded_ones_accuracy(data, network):
    """Prune, share, code, decode: each file holds the network its section names, and each row's
    accuracies are those of the network decoded from the file."""
    torch.manual_seed(3)
    trained = network.build()
    state = {k: v.clone() for k, v in trained.state_dict().items()}

    def prune_fn(sparsity):
        model = network.build()
        model.load_state_dict(state)
        magnitude_prune(model, sparsity)
        return model

    settings = [(0.9, 2), (0.5, 3)]
    table, files = compress_grid(
        settings,
        prune_fn,
        retrainer(data, 1),
        data["val"],
        data["test"],
        dense_bytes=state_dict_bytes(trained),
        dense_test_accuracy=0.1,
        net=network,
    )
    assert list(zip(table["sparsity"], table["bits"], strict=True)) == sorted(settings)
    for row in table.itertuples():
        file = files[(row.sparsity, row.bits)]
        assert file[4] == codec.VERSION and row.bytes == len(file)
        net, _, layers = codec.decode(file)
        assert net == network
        restored = decoded(file)
        assert type(restored) is type(trained)
        assert row.test_accuracy == accuracy(restored, data["test"])
        assert row.val_accuracy == accuracy(restored, data["val"])
        assert row.nonzero_weights == sum(int(layer.mask.sum()) for layer in layers.values())
        assert row.macs == macs(restored)
        for name, module in prunable(restored):
            assert layers[name].mask.shape == tuple(module.weight.shape)
            assert len(torch.unique(module.weight[module.weight != 0])) <= 2**row.bits
            expected = round((1 - row.sparsity) * module.weight.numel())
            assert int(torch.count_nonzero(module.weight)) == expected  # per-layer magnitude pruning
    if any(isinstance(m, nn.Conv2d) for m in trained.modules()):
        assert any(layer.mask.ndim == 4 for layer in codec.decode(files[(0.9, 2)])[2].values())
