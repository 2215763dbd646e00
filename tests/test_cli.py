"""The `nncompress` command: golden `info` output, one-line errors with the loader's words for
damaged files, exit codes (0 ok, 1 bad input, 2 usage), --help everywhere, and export/eval agreeing
across the .nnc, .onnx and .pt formats."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import split_files, tiny_mlp
from torch import nn

from nncompress import cli
from nncompress.compress import codec
from nncompress.compress.quantize import SharedLayer
from nncompress.errors import CheckpointError
from nncompress.nets import NETS, NetConfig
from nncompress.prune.masks import prunable

DATA = Path(__file__).parent / "data"


def tiny_nnc(path: Path) -> Path:
    """A small .nnc file built from fixed numbers (no training, no k-means), so its bytes never change."""
    model, layers = tiny_mlp()
    path.write_bytes(codec.encode(model, layers))
    return path


def lenet5_shared() -> tuple[NetConfig, nn.Module, dict[str, SharedLayer]]:
    """LeNet-5 from fixed numbers (every layer keeps a fixed pattern of weights): (its section, the
    network, its shared layers). tests/data/lenet5_v2.nnc is its file as the version-2 encoder wrote it."""
    net = NETS["lenet5"]()
    model = net.build()
    layers = {}
    with torch.no_grad():
        for (name, module), step, k in zip(prunable(model), (3, 11, 50, 2), (4, 8, 16, 2), strict=True):
            mask = np.zeros(tuple(module.weight.shape), dtype=bool)
            mask.flat[::step] = True
            centroids = np.linspace(-0.5, 0.5, k, dtype=np.float32)
            layers[name] = SharedLayer(mask, (np.arange(mask.sum()) % k).astype(np.uint8), centroids)
            module.weight.copy_(torch.from_numpy(layers[name].dense()))
            module.bias.copy_(torch.linspace(-1, 1, module.bias.numel()))
    return net, model, layers


def lenet5_nnc(path: Path) -> Path:
    """A LeNet-5 .nnc file from fixed numbers (lenet5_shared)."""
    net, model, layers = lenet5_shared()
    path.write_bytes(codec.encode(model, layers, net))
    return path


# `nncompress info` on the files of conftest's tiny_mlp, checked by eye. When the format or the
# command changes, regenerate a golden text from the command's output in a scratch directory:
# `tiny_nnc(Path("tiny.nnc"))`, then `nncompress info tiny.nnc` (tiny_v2.nnc and tiny_v1.nnc are in
# tests/data/). The version-3 file leaves no bias out: all 4 hidden units reach the output.
GOLDEN_INFO = """\
tiny.nnc: nncompress model file, format version 3, 349 bytes, checksum OK (CRC-32 0xed5449f6)
network: model.arch mlp, hidden [4], activation relu, dropout 0.1 (MLP 784 -> 4 -> 10, 3,190 parameters)

layer  kind    shape    kept weights          shared values  biases    mask B  codes B  values B  total B  bits/weight
fc1    Linear  4 x 784  448 of 3,136 (14.3%)  4 (2 bits)     4 of 4      ~150      ~61       ~23     ~234        ~4.18
fc2    Linear  10 x 4   20 of 40 (50.0%)      2 (1 bit)      10 of 10      ~6       ~1       ~27      ~34       ~13.60
all                     468 of 3,176 (14.7%)                 14 of 14    ~156      ~62       ~50      268         5.97

file: 349 bytes = header 13 + metadata 68 + coded stream 268
  metadata: the model section (JSON) and each layer's numbers of kept weights and shared values;
  stream: one range-coded stream of every layer's kept-weight mask, codes (which shared value
  each kept weight takes) and values (shared values as float32 and biases as float16, exact),
  split here in proportion to the information each part's symbols carry (~: an estimate);
  biases: those stored; the output does not depend on the others, which decode as 0;
  bits/weight: bytes x 8 per kept weight (the last row: the whole file's).
dense fp32: 12,760 bytes (4 x 3,190 parameters), 36.6x this file; as a torch.save state_dict: 15,133 bytes, 43.4x
"""

# The same network in the file the version-2 encoder wrote (tests/data/tiny_v2.nnc): 170 bytes larger.
GOLDEN_INFO_V2 = """\
tiny_v2.nnc: nncompress model file, format version 2, 519 bytes, checksum OK (CRC-32 0x396a1b7e)
network: model.arch mlp, hidden [4], activation relu, dropout 0.1 (MLP 784 -> 4 -> 10, 3,190 parameters)

layer  kind    shape    kept weights          shared values  tables B  stream B  total B  bits/weight
fc1    Linear  4 x 784  448 of 3,136 (14.3%)  4 (2 bits)           24      ~236     ~260        ~4.64
fc2    Linear  10 x 4   20 of 40 (50.0%)      2 (1 bit)            28        ~8      ~36       ~14.40
all                     468 of 3,176 (14.7%)                       52       244      296         8.87

file: 519 bytes = header 13 + metadata 210 + tables 52 + coded stream 244
  tables: a layer's shared values (float32) and biases (float16), exact;
  stream: one range-coded stream of every layer's kept-weight mask and value codes, split here
  in proportion to the information each layer's symbols carry (~: an estimate);
  bits/weight: bytes x 8 per kept weight (the last row: the whole file's).
dense fp32: 12,760 bytes (4 x 3,190 parameters), 24.6x this file; as a torch.save state_dict: 15,133 bytes, 29.2x
"""


# And in the file the version-1 encoder wrote (tests/data/tiny_v1.nnc): 12 bytes smaller than version 2's.
GOLDEN_INFO_V1 = """\
tiny_v1.nnc: nncompress model file, format version 1, 507 bytes, checksum OK (CRC-32 0x4a995551)
network: model.arch mlp, hidden [4], activation relu, dropout 0.1 (MLP 784 -> 4 -> 10, 3,190 parameters)

layer  kind    shape    kept weights          shared values  tables B  stream B  total B  bits/weight
fc1    Linear  4 x 784  448 of 3,136 (14.3%)  4 (2 bits)           24      ~236     ~260        ~4.64
fc2    Linear  10 x 4   20 of 40 (50.0%)      2 (1 bit)            28        ~8      ~36       ~14.40
all                     468 of 3,176 (14.7%)                       52       244      296         8.67

file: 507 bytes = header 13 + metadata 198 + tables 52 + coded stream 244
  tables: a layer's shared values (float32) and biases (float16), exact;
  stream: one range-coded stream of every layer's kept-weight mask and value codes, split here
  in proportion to the information each layer's symbols carry (~: an estimate);
  bits/weight: bytes x 8 per kept weight (the last row: the whole file's).
dense fp32: 12,760 bytes (4 x 3,190 parameters), 25.2x this file; as a torch.save state_dict: 15,133 bytes, 29.8x
"""


def run(*args: str) -> tuple[int, str, str]:
    """`nncompress ARGS` in this process: (exit code, stdout, stderr)."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(list(args))
        except SystemExit as exc:  # argparse: --help (0) and usage errors (2)
            code = exc.code
    return code, out.getvalue(), err.getvalue()


def test_info_prints_the_golden_description(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    tiny_nnc(Path("tiny.nnc"))
    assert run("info", "tiny.nnc") == (0, GOLDEN_INFO, "")


@pytest.mark.parametrize(("name", "golden"), [("tiny_v2.nnc", GOLDEN_INFO_V2), ("tiny_v1.nnc", GOLDEN_INFO_V1)])
def test_info_describes_an_older_file(name: str, golden: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copy(DATA / name, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    assert run("info", name) == (0, golden, "")


def test_info_describes_a_conv_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    data = lenet5_nnc(Path("lenet5.nnc")).read_bytes()
    code, out, err = run("info", "lenet5.nnc")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].startswith(f"lenet5.nnc: nncompress model file, format version 3, {len(data):,} bytes, checksum OK")
    assert lines[1] == "network: model.arch lenet5 (LeNet5, 431,080 parameters)"
    assert lines[3].split() == [
        "layer", "kind", "shape", "kept", "weights", "shared", "values", "biases", "mask", "B", "codes", "B",
        "values", "B", "total", "B", "bits/weight",
    ]  # fmt: skip
    rows = {line.split()[0]: " ".join(line.split()) for line in lines[4:9]}
    assert rows["conv1"].split()[:9] == ["conv1", "Conv2d", "20", "x", "1", "x", "5", "x", "5"]
    assert "167 of 500 (33.4%) 4 (2 bits) 20 of 20 ~" in rows["conv1"]
    assert rows["conv2"].split()[:9] == ["conv2", "Conv2d", "50", "x", "20", "x", "5", "x", "5"]
    # fc1 keeps every 50th weight, so only columns 0, 50, ..., 750: 16 of conv2's 50 channels reach it
    assert "2,273 of 25,000 (9.1%) 8 (3 bits) 16 of 50 ~" in rows["conv2"]
    assert rows["fc1"].split()[:5] == ["fc1", "Linear", "500", "x", "800"]
    # and fc2 keeps every other weight of its rows of 500: only fc1's even units reach the output
    assert "8,000 of 400,000 (2.0%) 16 (4 bits) 250 of 500 ~" in rows["fc1"]
    assert rows["fc2"].split()[:5] == ["fc2", "Linear", "10", "x", "500"]
    assert rows["all"].split()[1:8] == ["12,940", "of", "430,500", "(3.0%)", "296", "of", "580"]
    layout = codec.describe(data).layout
    assert layout.total == len(data) and layout.tables == {}
    assert layout.biases == {"conv1": (20, 20), "conv2": (16, 50), "fc1": (250, 500), "fc2": (10, 10)}
    assert (
        f"file: {len(data):,} bytes = header 13 + metadata {layout.metadata:,} + coded stream {layout.stream:,}" in out
    )
    assert rows["all"].split()[-2:] == [f"{layout.stream:,}", f"{8 * len(data) / 12_940:.2f}"]
    assert "  shape: a Conv2d's is out x in channels x kernel height x width" in out
    assert lines[-1].startswith("dense fp32: 1,724,320 bytes (4 x 431,080 parameters)")


def test_the_sections_add_up_to_the_file(tmp_path: Path) -> None:
    data = tiny_nnc(tmp_path / "tiny.nnc").read_bytes()
    layout = codec.describe(data).layout
    assert layout.total == len(data) == layout.header + layout.metadata + layout.stream
    assert layout.tables == {}
    assert set(layout.information) == {"fc1", "fc2"}
    assert all(set(parts) == set(codec.PARTS) for parts in layout.information.values())
    bits = sum(sum(parts.values()) for parts in layout.information.values())
    assert 0 <= layout.stream - bits / 8 < 12  # the coder comes within a few bytes of the information
    old = codec.describe((DATA / "tiny_v2.nnc").read_bytes()).layout
    assert old.total == 519 and old.tables == {"fc1": 4 * 4 + 2 * 4, "fc2": 2 * 4 + 2 * 10}


def _damaged(data: bytes) -> dict[str, bytes | None]:
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x10
    return {
        "truncated": data[:-5],
        "flipped byte": bytes(flipped),
        "wrong magic": b"PK\x03\x04" + data[4:],
        "trailing bytes": data + b"\0",
        "empty": b"",
        "missing": None,
    }


@pytest.mark.parametrize("damage", ["truncated", "flipped byte", "wrong magic", "trailing bytes", "empty", "missing"])
@pytest.mark.parametrize("command", [["info"], ["export", "--pt", "out.pt"]])
def test_a_damaged_file_gets_the_loaders_one_line_error(
    damage: str, command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    data = _damaged(tiny_nnc(Path("good.nnc")).read_bytes())[damage]
    if data is not None:
        Path("bad.nnc").write_bytes(data)
    with pytest.raises(CheckpointError) as loader:
        codec.load("bad.nnc")
    code, out, err = run(command[0], "bad.nnc", *command[1:])
    assert (code, out, err) == (1, "", f"error: {loader.value}\n")
    assert not Path("out.pt").exists()


@pytest.mark.parametrize("args", [[], ["info"], ["export"], ["eval"]])
def test_help(args: list[str]) -> None:
    code, out, err = run(*args, "--help")
    assert code == 0 and err == ""
    assert out.startswith(f"usage: nncompress {' '.join(args)}".rstrip())
    assert "exit codes:" in out and "2  usage error" in out


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["frobnicate"],
        ["info"],
        ["info", "a.nnc", "b.nnc"],
        ["export", "model.nnc"],  # neither --onnx nor --pt
        ["eval", "model.nnc"],  # no --split
        ["eval", "model.nnc", "--split", "data/split", "--subset", "holdout"],
        ["eval", "model.pt", "--split", "data/split", "--activation", "gelu"],
    ],
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    code, out, err = run(*args)
    assert code == 2 and out == ""
    assert err.startswith("usage: nncompress")
    assert err.splitlines()[-1].startswith("nncompress")
    assert ": error: " in err.splitlines()[-1]


@pytest.fixture
def split_dir(tmp_path: Path) -> Path:
    """A split directory as the split stage writes it, holding random images."""
    return split_files(tmp_path / "split", train=8, val=8, test=300)


def test_export_writes_onnx_and_a_weights_only_state_dict_that_evaluate_alike(split_dir: Path, tmp_path: Path) -> None:
    nnc = tiny_nnc(tmp_path / "tiny.nnc")
    onnx_path, pt_path = tmp_path / "out/tiny.onnx", tmp_path / "out/tiny.pt"
    code, out, err = run("export", str(nnc), "--onnx", str(onnx_path), "--pt", str(pt_path))
    assert code == 0 and err == "", err
    assert f"{onnx_path}: {onnx_path.stat().st_size:,} bytes, ONNX opset" in out
    assert f"{pt_path}: {pt_path.stat().st_size:,} bytes, a weights-only state_dict" in out
    assert sorted(p.name for p in onnx_path.parent.iterdir()) == ["tiny.onnx", "tiny.pt"]  # no temporary files left

    state = torch.load(pt_path, weights_only=True)
    decoded = codec.load(nnc).state_dict()
    assert list(state) == list(decoded)
    for key, tensor in state.items():
        assert type(tensor) is torch.Tensor and torch.equal(tensor, decoded[key]), key

    results = {}
    for path, extra in ((nnc, []), (onnx_path, []), (pt_path, ["--activation", "relu"])):
        code, out, err = run("eval", str(path), "--split", str(split_dir), *extra)
        assert code == 0 and err == "", err
        results[path.suffix] = out.split(": ", 1)[1]
    test = torch.load(split_dir / "test.pt", weights_only=True)
    predicted = codec.load(nnc)(test["images"].reshape(300, -1).float() / 255).argmax(1)
    correct = int((predicted == test["labels"]).sum())
    expected = f"test accuracy {correct / 300:.4f} ({correct} of 300 images in {split_dir / 'test.pt'})\n"
    assert results == {".nnc": expected, ".onnx": expected, ".pt": expected}


def test_eval_reads_a_state_dicts_activation_from_params(split_dir: Path, tmp_path: Path) -> None:
    nnc = tiny_nnc(tmp_path / "tiny.nnc")
    pt_path = tmp_path / "tiny.pt"
    assert run("export", str(nnc), "--pt", str(pt_path))[0] == 0
    with_flag = run("eval", str(pt_path), "--split", str(split_dir), "--activation", "relu")
    params = tmp_path / "params.yaml"
    params.write_text("model:\n  arch: mlp\n  hidden: [4]\n  activation: relu\n  dropout: 0.1\n")
    assert run("eval", str(pt_path), "--split", str(split_dir), "--params", str(params)) == with_flag
    code, out, err = run("eval", str(pt_path), "--split", str(split_dir), "--params", str(tmp_path / "none.yaml"))
    assert (code, out) == (1, "")
    assert err == (
        f"error: {pt_path}: a state_dict does not record its network "
        "(pass --params with its model section, or --activation for an MLP)\n"
    )


def test_a_conv_network_exports_and_evaluates_alike_in_every_format(split_dir: Path, tmp_path: Path) -> None:
    """LeNet-5 through the command: its .nnc, its ONNX export (ONNX Runtime) and its .pt state_dict
    (the network read from --params's model section) give the same accuracy."""
    nnc = lenet5_nnc(tmp_path / "lenet5.nnc")
    onnx_path, pt_path = tmp_path / "lenet5.onnx", tmp_path / "lenet5.pt"
    code, out, err = run("export", str(nnc), "--onnx", str(onnx_path), "--pt", str(pt_path))
    assert code == 0 and err == "", err
    assert "ONNX Runtime agrees with PyTorch on 256 random inputs" in out
    params = tmp_path / "params.yaml"
    params.write_text("model:\n  arch: lenet5\n")
    results = {}
    for path in (nnc, onnx_path, pt_path):
        code, out, err = run("eval", str(path), "--split", str(split_dir), "--params", str(params))
        assert code == 0 and err == "", err
        results[path.suffix] = out.split(": ", 1)[1]
    test = torch.load(split_dir / "test.pt", weights_only=True)
    with torch.no_grad():
        predicted = codec.load(nnc)(test["images"].reshape(300, -1).float() / 255).argmax(1)
    correct = int((predicted == test["labels"]).sum())
    expected = f"test accuracy {correct / 300:.4f} ({correct} of 300 images in {split_dir / 'test.pt'})\n"
    assert results == {".nnc": expected, ".onnx": expected, ".pt": expected}


def test_eval_of_a_state_dict_with_params_of_any_network(split_dir: Path, tmp_path: Path) -> None:
    """--params names the network (an arch without an activation too); a mismatch is one line."""
    torch.manual_seed(0)
    lenet300 = NETS["lenet300"]().build()
    torch.save(lenet300.state_dict(), tmp_path / "lenet300.pt")
    params = {name: tmp_path / f"{name}.yaml" for name in ("lenet300", "lenet5", "mlp", "nomodel", "bad", "two")}
    params["lenet300"].write_text("model: {arch: lenet300}\n")
    params["lenet5"].write_text("model: {arch: lenet5}\n")
    params["mlp"].write_text("model: {arch: mlp, hidden: [8], activation: relu, dropout: 0.0}\n")
    params["two"].write_text("model: {arch: mlp, hidden: [1, 1], activation: relu, dropout: 0.0}\n")
    params["nomodel"].write_text("train: {epochs: 1}\n")
    params["bad"].write_text("model: {arch: lenet9}\n")
    pt = str(tmp_path / "lenet300.pt")

    def eval_with(name: str) -> tuple[int, str, str]:
        return run("eval", pt, "--split", str(split_dir), "--params", str(params[name]))

    code, out, err = eval_with("lenet300")
    assert code == 0 and err == "", err
    images = torch.load(split_dir / "test.pt", weights_only=True)["images"].reshape(300, -1).float() / 255
    labels = torch.load(split_dir / "test.pt", weights_only=True)["labels"]
    with torch.no_grad():
        correct = int((lenet300.eval()(images).argmax(1) == labels).sum())
    assert out == f"{pt}: test accuracy {correct / 300:.4f} ({correct} of 300 images in {split_dir / 'test.pt'})\n"
    # an mlp section: the widths come from the weights (LeNet-300-100 is an MLP), the activation from it
    assert eval_with("mlp") == eval_with("two") == (0, out, "")
    assert run("eval", pt, "--split", str(split_dir), "--activation", "relu") == (0, out, "")
    for name, message in (
        ("lenet5", f"error: {pt}: does not match the model: missing ['conv1.bias', 'conv1.weight', 'conv2.bias', "),
        ("nomodel", f"error: {params['nomodel']}: no model section (the network a state_dict holds)"),
        ("bad", "error: params.yaml: model.arch must be one of lenet300, lenet5, mlp, got 'lenet9'"),
    ):
        code, out, err = eval_with(name)
        assert (code, out) == (1, ""), name
        assert err.startswith(message) and err.count("\n") == 1, err


def test_eval_errors_are_one_line(split_dir: Path, tmp_path: Path) -> None:
    nnc = tiny_nnc(tmp_path / "tiny.nnc")
    (tmp_path / "model.h5").write_bytes(b"")
    (tmp_path / "garbage.onnx").write_bytes(b"not a protobuf at all")
    torch.save({"fc1.weight": "a string"}, tmp_path / "foreign.pt")
    (tmp_path / "pickle.pt").write_bytes(b"\x80\x02K\x01.")  # a pickle, not a torch archive
    cases = {
        (str(tmp_path / "model.h5"),): "unknown model format '.h5' (expected .nnc, .onnx or .pt)",
        (str(tmp_path / "garbage.onnx"),): "not a loadable ONNX model",
        (str(tmp_path / "foreign.pt"), "--activation", "relu"): "expected the MLP's state_dict",
        (str(tmp_path / "pickle.pt"), "--activation", "relu"): "not a loadable weights-only checkpoint",
        (str(tmp_path / "none.onnx"),): "missing",
    }
    for args, message in cases.items():
        code, out, err = run("eval", *args, "--split", str(split_dir))
        assert (code, out) == (1, ""), args
        assert err.startswith(f"error: {args[0]}: {message}") and err.count("\n") == 1, err
    code, out, err = run("eval", str(nnc), "--split", str(tmp_path / "nowhere"))
    assert (code, out) == (1, "")
    assert err == f"error: {tmp_path / 'nowhere/test.pt'}: missing (run the split stage first: dvc repro split)\n"


def test_an_output_that_cannot_be_written_is_a_one_line_error(tmp_path: Path) -> None:
    nnc = tiny_nnc(tmp_path / "tiny.nnc")
    (tmp_path / "file").write_text("")
    code, out, err = run("export", str(nnc), "--pt", str(tmp_path / "file/out.pt"))
    assert (code, out) == (1, "")
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_the_installed_console_script() -> None:
    """`nncompress` is on the venv's PATH (pyproject's [project.scripts]) and exits as documented."""
    script = shutil.which("nncompress", path=str(Path(sys.executable).parent))
    assert script, "the nncompress console script is not installed: pip install -e ."
    proc = subprocess.run([script, "info", "/nonexistent/model.nnc"], capture_output=True, text=True)
    expected = "error: /nonexistent/model.nnc: missing (run the compress stage first: dvc repro compress)\n"
    assert (proc.returncode, proc.stdout, proc.stderr) == (1, "", expected)
    proc = subprocess.run([script, "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("usage: nncompress")
