"""ONNX export: PyTorch -> ONNX -> ONNX Runtime predicts what PyTorch predicts, for the MLP, the
registered LeNet-300-100 and LeNet-5 and other networks of Linear and Conv2d layers; a disagreement
is a one-line error that leaves the previous file in place; the files do not depend on where they
were made; the structured network is the one its sweep makes at that rate, exported for LeNet-5 too,
and the export stage skips it for a network structured pruning cannot handle (a branching one)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import yaml
from conftest import ROOT, Branching, committed_params, random_split, registered, split_files, sweep_point
from torch import nn

from nncompress import config, export
from nncompress.compress import codec
from nncompress.compress.quantize import share_weights, unshare_weights
from nncompress.errors import ExportError, ParamError
from nncompress.model import MLP, save_checkpoint
from nncompress.nets import NETS
from nncompress.prune import Context
from nncompress.prune.masks import make_permanent, unstructured
from nncompress.schema import parse


class Tower(nn.Module):
    """Linear layers under names of its own, none of them the MLP's."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Linear(784, 48)
        self.blocks = nn.ModuleList([nn.Linear(48, 48), nn.Linear(48, 24)])
        self.head = nn.Linear(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.encoder(x))
        for block in self.blocks:
            x = torch.tanh(block(x))
        return self.head(x)


def networks() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {
        "mlp-8-sigmoid": MLP(8, "sigmoid"),
        "mlp-32-relu": MLP(32, "relu", dropout=0.5),
        "mlp-64-tanh": MLP(64, "tanh"),
        "sequential": nn.Sequential(nn.Linear(784, 40), nn.ReLU(), nn.Linear(40, 20), nn.Sigmoid(), nn.Linear(20, 10)),
        "tower": Tower(),
        "conv": nn.Sequential(
            nn.Unflatten(1, (1, 28, 28)),
            nn.Conv2d(1, 4, 5, stride=2),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(4 * 12 * 12, 10),
        ),
        "lenet300": NETS["lenet300"]().build(),
        "lenet5": NETS["lenet5"]().build(),  # takes the flat images the splits hold, as every registered network
    }


def images(n: int = 500) -> torch.Tensor:
    return torch.rand(n, 784, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name", list(networks()))
def test_onnx_runtime_predicts_what_pytorch_predicts(name: str, tmp_path: Path) -> None:
    model = networks()[name]
    x = images()
    exported = export.export_checked(model, tmp_path / f"{name}.onnx", x)
    assert exported.bytes == (tmp_path / f"{name}.onnx").stat().st_size
    expected, got = export.torch_logits(model, x), export.onnx_logits(exported.onnx, x)
    assert (expected.argmax(1) == got.argmax(1)).all()
    assert np.abs(expected - got).max() <= export.LOGIT_TOLERANCE
    assert exported.max_logit_diff == pytest.approx(float(np.abs(expected - got).max()))
    for n in (1, 3, 256):  # the batch dimension is free
        assert exported.onnx(exported.onnx.shaped(x[:n])).shape == (n, 10)


def test_a_disagreement_is_an_error_and_keeps_the_previous_file(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"previous")
    real_export, other = export.export_onnx, MLP(8, "relu")

    def export_another_network(model: nn.Module, out: Path, shape: tuple[int, ...]) -> None:
        real_export(other, out, shape)

    monkeypatch.setattr(export, "export_onnx", export_another_network)
    with pytest.raises(
        ExportError, match=rf"^{path}: ONNX Runtime predicts another class than PyTorch for \d+ of 500 inputs$"
    ):
        export.export_checked(MLP(8, "sigmoid"), path, images())
    assert path.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_agreement_rules() -> None:
    logits = np.array([[0.0, 1.0], [2.0, 0.0]], dtype=np.float32)
    assert export.check_agreement(logits, logits.copy(), "m.onnx") == 0.0
    assert export.check_agreement(logits, logits + 5e-5, "m.onnx") == pytest.approx(5e-5, rel=1e-2)
    with pytest.raises(
        ExportError, match=r"^m.onnx: ONNX Runtime's logits differ from PyTorch's by 0.0002 \(allowed: 0.0001\)$"
    ):
        export.check_agreement(logits, logits + 2e-4, "m.onnx")
    with pytest.raises(ExportError, match="predicts another class than PyTorch for 1 of 2 inputs"):
        export.check_agreement(logits, logits[:, ::-1] * np.array([[1.0, 1.0], [0.0, 0.0]]), "m.onnx")
    with pytest.raises(ExportError, match="differ"):
        export.check_agreement(logits, np.where(logits > 1, np.nan, logits), "m.onnx")


def test_the_file_does_not_depend_on_where_it_was_made(tmp_path: Path) -> None:
    """No absolute paths (the exporter's stack traces) in the file: its hash in dvc.lock is the same in any clone."""
    model = networks()["mlp-8-sigmoid"]
    export.export_onnx(model, tmp_path / "a.onnx", (784,))
    (tmp_path / "deeper/dir").mkdir(parents=True)
    export.export_onnx(model, tmp_path / "deeper/dir/b.onnx", (784,))
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "deeper/dir/b.onnx").read_bytes()
    proto = onnx.load(str(tmp_path / "a.onnx"))
    assert not [p for node in proto.graph.node for p in node.metadata_props if p.key == export.STACK_TRACE]
    assert str(Path.cwd()) not in proto.SerializeToString().decode("latin-1")
    assert [i.name for i in proto.graph.input] == [export.INPUT_NAME]
    assert [o.name for o in proto.graph.output] == [export.OUTPUT_NAME]


def test_weight_counts_any_network() -> None:
    net = networks()["tower"]
    with torch.no_grad():
        net.encoder.weight[:, :100] = 0
    parameters = 784 * 48 + 48 + 48 * 48 + 48 + 48 * 24 + 24 + 24 * 10 + 10
    weights = 784 * 48 + 48 * 48 + 48 * 24 + 24 * 10
    assert export.weight_counts(net) == (parameters, weights - 48 * 100)


def test_median_latency_is_per_call() -> None:
    calls = []
    seconds = export.median_latency(lambda: calls.append(1), runs=3, min_run_time=0.001)
    assert 0 < seconds < 0.001 and len(calls) > 3


def test_the_structured_network_is_its_sweeps_point_at_the_shipped_rate(tmp_path: Path) -> None:
    params = committed_params({"finetune": {"epochs": 1}, "compress": {"sparsity": 0.9}})
    g = torch.Generator().manual_seed(0)
    train, val = random_split(g, 256), random_split(g, 64)
    torch.manual_seed(0)
    trained = MLP(params.model.hidden_size, params.model.activation, params.model.dropout)
    save_checkpoint(trained, tmp_path / "model.pt")

    made = export.structured_model(params, tmp_path / "model.pt", train, val)
    method = params.method("structured").build(Context(params, train, val))
    swept = sweep_point(method, trained.state_dict(), 0.9, seed=params.method("structured").sweep_seeds()[0])
    assert made.fc1.out_features == round(0.1 * params.model.hidden_size) == swept.fc1.out_features
    for key, tensor in swept.state_dict().items():
        assert torch.equal(made.state_dict()[key], tensor), key


def params_for(model: dict, sparsity: float | None = None) -> config.Params:
    """The committed params.yaml with its model section replaced (and compress.sparsity, if given)."""
    data = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    data["model"] = model
    if sparsity is not None:
        data["compress"]["sparsity"] = sparsity
    return parse(config.Params, data)


def shipped_inputs(params: config.Params, folder: Path) -> None:
    """Tiny random splits, the dense checkpoint of params' network (model.pt) and its shipped file
    (model.nnc: 90% of each layer's weights pruned by magnitude, 3 bits) in `folder`."""
    split_files(folder / "split", train=8, val=8, test=64)
    torch.manual_seed(0)
    model = params.model.build()
    save_checkpoint(model, folder / "model.pt")
    unstructured("magnitude", "layer")(model, 0.9)
    make_permanent(model)
    share_weights(model, 3)
    codec.save(folder / "model.nnc", model, unshare_weights(model), params.model)


def run_export_stage(params: config.Params, folder: Path) -> dict:
    return export.export_stage(
        params,
        folder / "model.nnc",
        folder / "model.pt",
        folder / "split",
        folder / "model.onnx",
        folder / "structured.onnx",
    )


def test_the_export_stage_exports_a_conv_network_and_its_structured_network(tmp_path: Path, capsys) -> None:
    """LeNet-5: the shipped file decoded and exported as ONNX, checked; and the structured method's
    smaller LeNet-5 at the shipped rate (0.96: conv1 keeps 1 of its 20 filters, conv2 2 of its 50)."""
    params = params_for({"arch": "lenet5"}, sparsity=0.96)
    shipped_inputs(params, tmp_path)

    metrics = run_export_stage(params, tmp_path)
    assert capsys.readouterr().out == ""  # nothing skipped
    shipped = metrics["model"]
    assert shipped["onnx_bytes"] == (tmp_path / "model.onnx").stat().st_size
    assert shipped["nnc_bytes"] == (tmp_path / "model.nnc").stat().st_size
    assert shipped["parameters"] == 431_080
    assert shipped["nonzero_weights"] == sum(round(0.1 * n) for n in (500, 25_000, 400_000, 5_000))
    assert shipped["test_accuracy"] == shipped["torch_test_accuracy"]
    assert shipped["max_logit_diff"] <= export.LOGIT_TOLERANCE
    structured = metrics["structured"]
    assert structured["rate"] == 0.96
    assert structured["onnx_bytes"] == (tmp_path / "structured.onnx").stat().st_size
    # conv1 1@5x5, conv2 2@1x5x5, fc1 20 of 500 (of 2 * 4 * 4 inputs), fc2 10 of 20
    assert structured["parameters"] == (25 + 1) + (2 * 25 + 2) + (20 * 32 + 20) + (10 * 20 + 10)
    assert structured["test_accuracy"] == structured["torch_test_accuracy"]
    assert structured["max_logit_diff"] <= export.LOGIT_TOLERANCE


@pytest.fixture
def branching() -> Iterator[None]:
    """Branching registered as model.arch branching, as a user registers a network; removed afterwards."""
    with registered("branching", Branching):
        yield


def test_the_export_stage_skips_the_structured_network_of_a_network_it_refuses(
    tmp_path: Path, capsys, branching: None
) -> None:
    """A network structured pruning cannot handle (a ParamError before any work): the shipped file is
    exported; the structured export is skipped: metrics None, no file (an earlier run's is removed),
    one line saying why."""
    params = params_for({"arch": "branching"})
    shipped_inputs(params, tmp_path)
    (tmp_path / "structured.onnx").write_bytes(b"an earlier run's network")
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ParamError, match="structured pruning handles chains of layers") as refused:
        params.method("structured").build(Context(params, random_split(g, 8), random_split(g, 8)))

    metrics = run_export_stage(params, tmp_path)
    assert metrics["structured"] is None
    assert not (tmp_path / "structured.onnx").exists()
    assert capsys.readouterr().out == f"{tmp_path / 'structured.onnx'}: skipped, {refused.value}\n"
    assert str(refused.value) == (  # what the prune@structured stage reports too, before any work
        "params.yaml: model.arch branching: structured pruning handles chains of layers, but in the "
        "Branching network layer stem feeds several (left, right)"
    )
    shipped = metrics["model"]
    assert shipped["parameters"] == 784 * 16 + 16 + 2 * (16 * 10 + 10)
    assert shipped["test_accuracy"] == shipped["torch_test_accuracy"]
    assert shipped["max_logit_diff"] <= export.LOGIT_TOLERANCE


def test_a_network_refused_before_any_work_is_skipped_before_the_checkpoint_is_read(
    tmp_path: Path, branching: None
) -> None:
    params = params_for({"arch": "branching"})
    g = torch.Generator().manual_seed(0)
    train, val = random_split(g, 8), random_split(g, 8)
    with pytest.raises(export.Unsupported, match="^params.yaml: model.arch branching: structured pruning"):
        export.structured_model(params, tmp_path / "no such checkpoint.pt", train, val)
