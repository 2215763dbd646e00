"""The stage scripts on bad input: exit 1 with one "error: ..." line, no traceback, outputs untouched.

Each case runs a stage script in its own folder, with a copy of params.yaml that has one bad value
(or a bad data file / checkpoint), and with every output option pointing at a file that already
exists with known content. A process is slow to start (torch, torchvision, matplotlib), so one
process runs every case once per module, each as its own command line would
(tests/stage_driver.py), and the tests inspect the results.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from conftest import Branching, registered

from nncompress import config
from nncompress.data import save_splits
from nncompress.errors import ParamError
from nncompress.model import MLP, save_checkpoint
from nncompress.schema import parse

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = yaml.safe_load((ROOT / "params.yaml").read_text())
MNIST_NAMES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)

# Every output option of each stage, pointed at files (or folders of files) that already exist.
OUTPUTS = {
    "train": {
        "--model": "out/model.pt",
        "--metrics": "out/train.json",
        "--curve": "out/train_curve.csv",
        "--loss-png": "out/loss.png",
        "--accuracy-png": "out/accuracy.png",
    },
    "prune": {"--csv": "out/prune.csv", "--metrics": "out/prune.json"},
    "control": {"--metrics": "out/control.json"},
    "report": {"--csv": "out/accuracy_vs_rate.csv", "--out": "out/accuracy_vs_rate.png"},
    "compress": {
        "--out": "out/model.nnc",
        "--csv": "out/compress.csv",
        "--png": "out/compress.png",
        "--metrics": "out/compress.json",
    },
    "export": {"--onnx": "out/model.onnx", "--structured": "out/structured.onnx", "--metrics": "out/export.json"},
    "split": {"--out": "out/split/", "--samples": "out/samples.png"},
    "download": {"--out": "out/mnist/"},
}
OUTPUT_DIR_FILES = {"out/split/": ("train.pt", "val.pt", "test.pt"), "out/mnist/": MNIST_NAMES}


def set_value(section, key, value):
    def edit(params):
        params[section][key] = value

    return edit


def rename_key(section, old, new):
    def edit(params):
        params[section][new] = params[section].pop(old)

    return edit


def garbage_mnist(case_dir):
    data = case_dir / "in" / "mnist"
    data.mkdir(parents=True)
    for name in MNIST_NAMES:
        (data / name).write_bytes(b"not the MNIST file " + name.encode())
    return ["--data", "in/mnist"]


def small_checkpoint(case_dir):
    torch.manual_seed(0)
    save_checkpoint(MLP(hidden_size=8), case_dir / "in" / "model.pt")
    return ["--model", "in/model.pt", "--split-dir", "in/split"]


def valid_model_and_splits(case_dir):
    """A checkpoint matching params.yaml's model and tiny but valid splits."""
    torch.manual_seed(0)
    save_checkpoint(MLP(), case_dir / "in" / "model.pt")
    g = torch.Generator().manual_seed(0)
    splits = {
        name: {
            "images": torch.randint(0, 256, (4, 28, 28), dtype=torch.uint8, generator=g),
            "labels": torch.arange(4, dtype=torch.int64),
        }
        for name in ("train", "val", "test")
    }
    save_splits(splits, case_dir / "in" / "split")
    return ["--model", "in/model.pt", "--split-dir", "in/split"]


def no_compressed_file(case_dir):
    """The export stage with a valid checkpoint and splits, but no models/model.nnc."""
    return [*valid_model_and_splits(case_dir), "--nnc", "in/model.nnc"]


def damaged_compressed_file(case_dir):
    (case_dir / "in").mkdir(parents=True, exist_ok=True)
    (case_dir / "in" / "model.nnc").write_bytes(b"PK\x03\x04 a zip file, not a compressed model")
    return [*valid_model_and_splits(case_dir), "--nnc", "in/model.nnc"]


def no_sweep_results(case_dir):
    """The report stage pointed at empty folders: no sweep has written its results."""
    for name in ("plots", "metrics"):
        (case_dir / "in" / name).mkdir(parents=True)
    return ["--plots", "in/plots", "--metrics", "in/metrics", "--control", "in/control.json"]


@dataclasses.dataclass(frozen=True)
class Case:
    script: str
    expect: tuple[str, ...]  # what the error line must contain
    edit: Callable[[dict], None] | None = None  # the change to the copy of params.yaml
    prepare: Callable[[Path], list[str]] | None = None  # makes inputs; returns extra CLI arguments
    args: tuple[str, ...] = ()  # positional arguments (the prune stage's method)


CASES = {
    "train_negative_epochs": Case(
        "train", ("params.yaml: train.epochs must be >= 0, got -1",), set_value("train", "epochs", -1)
    ),
    "train_unknown_activation": Case(
        "train",
        ("model.activation must be one of sigmoid, relu, tanh, got 'swish'",),
        set_value("model", "activation", "swish"),
    ),
    "train_mistyped_key": Case(
        "train",
        ("unknown key train.epoch ", "expected one of: epochs, "),
        rename_key("train", "epochs", "epoch"),
    ),
    "prune_random_rate_one": Case(
        "prune",
        ("sweep.rates[9] must be a compression rate in [0, 1), got 1.0",),
        set_value("sweep", "rates", [i / 10 for i in range(9)] + [1.0]),
        args=("random",),
    ),
    "prune_magnitude_rate_one": Case(
        "prune",
        ("sweep.rates[2] must be a compression rate in [0, 1), got 1.0",),
        set_value("sweep", "rates", [0.0, 0.5, 1.0]),
        args=("magnitude",),
    ),
    "prune_gradual_unknown_scope": Case(
        "prune",
        ("params.yaml: prune_gradual.scope must be one of layer, global, got 'channel'",),
        set_value("prune_gradual", "scope", "channel"),
        args=("gradual",),
    ),
    "prune_unknown_method": Case(
        "prune",
        ("unknown pruning method 'pruned' (registered: finetune, global, gradual, lottery, magnitude, ",),
        args=("pruned",),
    ),
    "prune_lottery_zero_rounds": Case(
        "prune",
        ("params.yaml: prune_lottery.rounds must be > 0, got 0",),
        set_value("prune_lottery", "rounds", 0),
        args=("lottery",),
    ),
    "prune_listed_method_without_section": Case(
        "prune",
        ("params.yaml: missing section prune_lottery (the lottery method is used)",),
        lambda params: params.pop("prune_lottery"),
        args=("random",),
    ),
    "report_missing_sweep_results": Case(
        "report",
        ("cannot read the random sweep results (FileNotFoundError: ", "in/plots/random.csv"),
        prepare=no_sweep_results,
    ),
    "control_negative_finetune_epochs": Case(
        "control",
        ("params.yaml: finetune.epochs must be >= 0, got -1",),
        set_value("finetune", "epochs", -1),
    ),
    "compress_nine_bits": Case(
        "compress",
        ("params.yaml: compress.sweep_bits[1] must be bits per shared weight, in 1..8, got 9",),
        set_value("compress", "sweep_bits", [4, 9]),
    ),
    "compress_unknown_method": Case(
        "compress",
        ("params.yaml: compress.method must be one of finetune, global, gradual, lottery, magnitude, ", "got 'layer'"),
        set_value("compress", "method", "layer"),
    ),
    "compress_negative_centroid_epochs": Case(
        "compress",
        ("params.yaml: compress.centroid.epochs must be >= 0, got -1",),
        lambda params: params["compress"]["centroid"].update(epochs=-1),
    ),
    "compress_structured_on_lenet5": Case(
        "compress",
        (
            "params.yaml: compress.method structured does not work with model.arch lenet5: a .nnc file "
            "cannot record the smaller LeNet5 it makes",
        ),
        lambda params: params.update(model={"arch": "lenet5"}, compress={**params["compress"], "method": "structured"}),
    ),
    "compress_finetune_epochs_that_the_method_ignores": Case(
        "compress",
        (
            "params.yaml: compress.finetune_epochs replaces finetune.epochs, which compress.method magnitude "
            "does not use (its budget is its own section's): set it to null",
        ),
        lambda params: params["compress"].update(method="magnitude", finetune_epochs=5),
        prepare=valid_model_and_splits,
    ),
    "compress_checkpoint_mismatch": Case(
        "compress",
        ("in/model.pt: fc1.weight has shape [8, 784], the model in params.yaml expects [256, 784]",),
        prepare=small_checkpoint,
    ),
    "export_negative_finetune_epochs": Case(
        "export",
        ("params.yaml: finetune.epochs must be >= 0, got -1",),
        set_value("finetune", "epochs", -1),
    ),
    "export_missing_compressed_file": Case(
        "export",
        ("in/model.nnc: missing (run the compress stage first: dvc repro compress)",),
        prepare=no_compressed_file,
    ),
    "export_damaged_compressed_file": Case(
        "export",
        ("in/model.nnc: not a compressed model file (starts with b'PK\\x03\\x04', expected b'NNCZ')",),
        prepare=damaged_compressed_file,
    ),
    "split_train_size_too_large": Case(
        "split",
        ("split.offset + train_size + val_size = 71024 exceeds the 60000 images",),
        set_value("split", "train_size", 70000),
    ),
    "download_zero_timeout": Case(
        "download", ("download.timeout must be > 0, got 0.0",), set_value("download", "timeout", 0)
    ),
    "split_corrupted_data": Case(
        "split",
        (
            "in/mnist/train-images-idx3-ubyte.gz: corrupted, MD5 ",
            "expected f68b3c2dcbeaaa9fbdd348bbdeb94873",
        ),
        prepare=garbage_mnist,
    ),
    "prune_random_checkpoint_mismatch": Case(
        "prune",
        ("in/model.pt: fc1.weight has shape [8, 784], the model in params.yaml expects [256, 784]",),
        prepare=small_checkpoint,
        args=("random",),
    ),
    "prune_random_negative_seed": Case(
        "prune",
        ("params.yaml: prune_random.seeds[0] must be a seed in [0, 2**32), got -1",),
        set_value("prune_random", "seeds", [-1]),
        prepare=valid_model_and_splits,
        args=("random",),
    ),
}


def snapshot(folder):
    """Every path under `folder` with its bytes (None for folders)."""
    return {p.relative_to(folder).as_posix(): (None if p.is_dir() else p.read_bytes()) for p in folder.rglob("*")}


def set_up(case_dir, case):
    """Write the params and pre-existing outputs; return the command line."""
    case_dir.mkdir(parents=True)
    params = copy.deepcopy(REFERENCE)
    if case.edit:
        case.edit(params)
    (case_dir / "bad_params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    args = [str(ROOT / "stages" / f"{case.script}.py"), *case.args, "--params", "bad_params.yaml"]
    for option, rel in OUTPUTS[case.script].items():
        target = case_dir / rel
        files = [target / name for name in OUTPUT_DIR_FILES[rel]] if rel.endswith("/") else [target]
        for path in files:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(f"precious {path.name}, must survive\n".encode())
        args += [option, rel.rstrip("/")]
    if case.prepare:
        args += case.prepare(case_dir)
    return args


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """name -> (the case's exit code and output, snapshot before, snapshot after)."""
    base = tmp_path_factory.mktemp("stage_errors")
    env = {k: v for k, v in os.environ.items() if k != "MNIST_MIRROR"}
    runs = {}
    for name, case in CASES.items():
        case_dir = base / name
        runs[name] = (case_dir, set_up(case_dir, case), snapshot(case_dir))

    # One process runs every case in turn (tests/stage_driver.py), as its own command line would.
    cases, outcome = base / "cases.json", base / "results.json"
    cases.write_text(json.dumps({name: [str(case_dir), args] for name, (case_dir, args, _) in runs.items()}))
    driver = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "stage_driver.py"), str(cases), str(outcome)],
        cwd=base,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert driver.returncode == 0 and driver.stdout == driver.stderr == "", driver.stderr
    procs = {name: SimpleNamespace(**result) for name, result in json.loads(outcome.read_text()).items()}
    return {name: (procs[name], runs[name][2], snapshot(runs[name][0])) for name in CASES}


@pytest.mark.parametrize("name", sorted(CASES))
def test_one_line_error_naming_the_problem(results, name):
    proc, _, _ = results[name]
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith("error: "), proc.stderr
    assert proc.stderr.endswith("\n")
    assert proc.stderr.count("\n") == 1, proc.stderr
    for part in CASES[name].expect:
        assert part in proc.stderr
    assert proc.stdout == ""


@pytest.mark.parametrize("name", list(CASES))
def test_outputs_and_inputs_left_untouched(results, name):
    _, before, after = results[name]
    assert sorted(after) == sorted(before)  # nothing created (no temporary files), nothing removed
    for path, content in before.items():
        assert after[path] == content, path
    outputs = [p for p in before if p.startswith("out/") and before[p] is not None]
    assert outputs  # the case did point the stage at pre-existing outputs
    assert all(before[p].startswith(b"precious ") for p in outputs)


def test_param_errors_come_before_reading_inputs(results):
    """The param-error cases had no data, split or checkpoint files: params are checked first."""
    for name, case in CASES.items():
        if case.prepare is None:
            _, before, _ = results[name]
            assert not any(p.startswith("in/") for p in before)
            assert ": missing (run" not in results[name][0].stderr  # the error for an absent input file


# --- compress.method structured: checked before any work, in-process --------------------------


@pytest.fixture(scope="module")
def compress_stage():
    spec = importlib.util.spec_from_file_location("compress_stage", ROOT / "stages" / "compress.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def structured_params(model: dict):
    params = copy.deepcopy(REFERENCE)
    params["model"] = model
    params["compress"]["method"] = "structured"
    return parse(config.Params, params)


@pytest.mark.parametrize(
    "model", [{"arch": "lenet300"}, {"arch": "mlp", "hidden": [20, 8], "activation": "relu", "dropout": 0.1}]
)
def test_compress_structured_on_an_mlp_passes_the_check_and_leaves_the_rng(compress_stage, model):
    params = structured_params(model)
    torch.manual_seed(0)
    compress_stage.check_structured(params, Path("params.yaml"))
    assert torch.equal(torch.get_rng_state(), torch.manual_seed(0).get_state())


def test_compress_structured_on_a_network_it_cannot_handle_names_both_params(compress_stage):
    with registered("branching", Branching):
        params = structured_params({"arch": "branching"})
        with pytest.raises(ParamError) as refused:
            compress_stage.check_structured(params, Path("params.yaml"))
    assert str(refused.value) == (
        "params.yaml: compress.method structured does not work with model.arch branching: structured pruning "
        "handles chains of layers, but in the Branching network layer stem feeds several (left, right)"
    )
