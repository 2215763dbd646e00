"""Helpers for the end-to-end tests: a throwaway git + DVC repository holding the project."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from torch import nn

from nncompress.model import MLP

ROOT = Path(__file__).resolve().parents[1]
# What a user's clone needs to run the pipeline (results and caches are left behind).
PROJECT_FILES = ("dvc.yaml", "params.yaml", "params.schema.json", "stages", "nncompress", ".dvcignore", "templates")

# Small but real: a thousand MNIST images and two epochs, so the whole pipeline runs in seconds.
SMALL_PARAMS: dict[str, Any] = {
    "split": {"train_size": 1024, "val_size": 256, "test_size": 1000},
    "train": {"epochs": 2, "lr": 0.05, "log_every": 8},
    "sweep": {"rates": [0.0, 0.5, 0.9, 0.99]},
    "prune_random": {"seeds": [0, 1]},
    "prune_magnitude": {"finetune_epochs": 1},
    "finetune": {"epochs": 1},
    "prune_gradual": {"steps": 2},
    "prune_lottery": {"epochs": 1, "rewind_iteration": 4},
    "compress": {
        "sparsity": 0.9,
        "bits": 4,
        "centroid": {"epochs": 1},
        "sweep_sparsities": [0.5, 0.9],
        "sweep_bits": [2, 4],
    },
}


# xdist (--dist loadfile --no-loadscope-reorder) hands each worker whole files in collection order.
# The two longest files go first, one to each worker (the tests that change and rerun the small
# pipeline, which build it for the session; the committed protocols at tiny size: each minutes on
# one worker); then the other end-to-end files, then the quick ones, which fill the gaps. xdist's
# own order (most tests first) ran those two last, and the last one alone.
FIRST = ("test_e2e_changes.py", "test_protocols.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    end_to_end = {item.path for item in items if item.get_closest_marker("e2e")}

    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return FIRST.index(name) if name in FIRST else len(FIRST) + (item.path not in end_to_end)

    items.sort(key=rank)  # stable: each file's tests keep their order and stay together


def plain_sgd(epochs: int, lr: float, batch_size: int, **changes: Any) -> Any:
    """An optimiser block of plain SGD as the reference trains: momentum 0.9, no weight decay, a
    constant rate, shuffled, on the CPU (`changes` override any key)."""
    from nncompress.config import OptimiserConfig

    keys = {"momentum": 0.9, "weight_decay": 0.0, "schedule": "constant", "shuffle": True, "device": "cpu"}
    return OptimiserConfig(epochs=epochs, lr=lr, batch_size=batch_size, **{**keys, **changes})


def _metric_files() -> tuple[str, ...]:
    from nncompress.prune import METHODS

    return ("train", "control", *(f"prune/{m}" for m in sorted(METHODS)), "compress")


METRIC_FILES = _metric_files()  # every metrics file of the default pipeline, without .json


def read_metrics(repo: Path, names: tuple[str, ...] = METRIC_FILES) -> dict[str, dict]:
    return {name: json.loads((repo / f"metrics/{name}.json").read_text()) for name in names}


def env(repo: Path | None = None) -> dict[str, str]:
    """The environment for DVC and the stages: this interpreter's venv first on PATH, and the
    repository's own copy of the package first on the import path (not the editable install)."""
    e = dict(os.environ)
    e["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{e.get('PATH', '')}"
    if repo is not None:
        e["PYTHONPATH"] = str(repo)
    e.update(
        GIT_AUTHOR_NAME="test",
        GIT_AUTHOR_EMAIL="test@example.com",
        GIT_COMMITTER_NAME="test",
        GIT_COMMITTER_EMAIL="test@example.com",
        DVC_NO_ANALYTICS="1",
    )
    return e


def run(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(args, cwd=cwd, env=env(cwd), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


def dvc(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, "-m", "dvc", *args], repo, check)


def git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run(["git", *args], repo)


def merge(target: dict[str, Any], overrides: dict[str, Any]) -> None:
    """Set `overrides` in `target`, recursing into nested sections (compress.centroid)."""
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            merge(target[key], value)
        else:
            target[key] = value


def committed_params(*overrides: dict[str, Any]) -> Any:
    """The committed params.yaml with `overrides` merged in, in order, validated (a config.Params)."""
    from nncompress import config
    from nncompress.schema import parse

    data = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    for changes in overrides:
        merge(data, changes)
    return parse(config.Params, data)


def random_split(generator: Any, n: int) -> tuple[Any, Any]:
    """n random 784-pixel images and labels: data for unit tests."""
    return torch.rand(n, 784, generator=generator), torch.randint(0, 10, (n,), generator=generator)


def fresh(state: dict[str, Any]) -> Any:
    """A new MLP holding `state` (its hidden size read from the state)."""
    model = MLP(hidden_size=state["fc1.weight"].shape[0])
    model.load_state_dict(state)
    return model


def sweep_point(method: Any, state: dict[str, Any], rate: float, seed: int = 0) -> Any:
    """One sweep run of `method` on a fresh copy of `state`, seeded and made permanent as run_sweep does."""
    from nncompress.prune.masks import make_permanent
    from nncompress.sweep import rate_seed

    torch.manual_seed(rate_seed(seed, rate))
    model = method(fresh(state), rate)
    make_permanent(model)
    return model


# Files whose content is a measurement of the machine (the export stage's latencies), not a result:
# a rerun changes them, and so their hashes in dvc.lock.
MEASUREMENTS = ("metrics/export.json",)


def reproducible_lock(text: str) -> dict[str, Any]:
    """dvc.lock without the hashes of MEASUREMENTS: what a rerun with the same params must reproduce."""
    lock = yaml.safe_load(text)
    for stage in lock["stages"].values():
        stage["outs"] = [out for out in stage.get("outs", []) if out["path"] not in MEASUREMENTS]
    return lock


def tiny_mlp() -> tuple[Any, dict[str, Any]]:
    """A 784-4-10 relu MLP (dropout 0.1) and its shared layers, from fixed numbers (no RNG, no
    k-means), so the files coded from it never change (test_cli's golden output, the v1 test file)."""
    import numpy as np

    from nncompress.compress.quantize import SharedLayer

    model = MLP(hidden_size=4, activation="relu", dropout=0.1)
    mask1 = np.zeros((4, 784), dtype=bool)
    mask1.flat[::7] = True
    mask2 = np.add.outer(np.arange(10), np.arange(4)) % 2 == 0
    layers = {
        "fc1": SharedLayer(mask1, (np.arange(mask1.sum()) % 4).astype(np.uint8), np.float32([-0.5, -0.1, 0.1, 0.5])),
        "fc2": SharedLayer(mask2, (np.arange(mask2.sum()) % 2).astype(np.uint8), np.float32([-1.0, 1.0])),
    }
    with torch.no_grad():
        for name, layer in layers.items():
            module = getattr(model, name)
            module.weight.copy_(torch.from_numpy(layer.dense()))
            module.bias.copy_(torch.linspace(-1, 1, module.out_features))
    return model, layers


def split_files(folder: Path, train: int, val: int, test: int, seed: int = 0) -> Path:
    """`folder` holding split files as the split stage writes them (uint8 images, int64 labels), of
    random images and labels drawn from a generator seeded with `seed`."""
    from nncompress.data import save_splits

    g = torch.Generator().manual_seed(seed)

    def part(n: int) -> dict[str, torch.Tensor]:
        return {
            "images": torch.randint(0, 256, (n, 28, 28), dtype=torch.uint8, generator=g),
            "labels": torch.randint(0, 10, (n,), generator=g),
        }

    save_splits({"train": part(train), "val": part(val), "test": part(test)}, folder)
    return folder


# --- networks a test registers, as a user registers one -------------------------------------------


@contextmanager
def registered(name: str, build: Callable[[], nn.Module]) -> Iterator[type]:
    """`model.arch: name` registered (a NetConfig subclass whose build() returns build()) while the
    block runs, as a user registers a network; removed from the registry afterwards, even on failure.
    Yields the NetConfig subclass. A name already registered is refused (and left registered)."""
    from nncompress.nets import NETS, NetConfig, register

    make = build  # the class body below defines its own `build`

    class Config(NetConfig):
        def build(self) -> nn.Module:
            return make()

    register(name)(Config)
    try:
        yield Config
    finally:
        NETS.pop(name, None)


class Branching(nn.Module):
    """A hidden layer feeding two heads whose logits add up: not a chain, which structured pruning needs."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Linear(784, 16)
        self.left = nn.Linear(16, 10)
        self.right = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.stem(x))
        return self.left(h) + self.right(h)


class Normed(MLP):
    """A 784-16-10 MLP with a BatchNorm beside its layers: state the .nnc format does not hold."""

    def __init__(self) -> None:
        super().__init__(16)
        self.norm = nn.BatchNorm1d(10)


def _broken() -> nn.Module:
    raise RuntimeError("no such layer\nsecond line")


@pytest.fixture
def unholdable_networks() -> Iterator[None]:
    """Two networks a .nnc file cannot hold, registered while the test runs: model.arch normed
    (Normed: state besides its Linear layers) and broken (whose code raises a two-line error)."""
    with registered("normed", Normed), registered("broken", _broken):
        yield


def reproduced(dest: Path, overrides: dict[str, Any]) -> Path:
    """A fresh repository (make_repo) with the pipeline reproduced once and its results committed."""
    repo = make_repo(dest, overrides)
    dvc(repo, "repro")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "results")
    return repo


def small_reproduced(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    """A private copy of the repository `reproduced` with SMALL_PARAMS, which the whole test session
    builds once: the xdist workers share it through their common temporary folder, under a file
    lock (the first one to ask builds it, the others wait), so test modules on different workers
    do not each run the pipeline."""
    from filelock import FileLock  # torch's dependency

    shared = tmp_path_factory.getbasetemp().parent / "small-reproduced"
    with FileLock(f"{shared}.lock"):
        if not (shared / "done").is_file():
            shutil.rmtree(shared, ignore_errors=True)
            reproduced(shared / "repo", SMALL_PARAMS)
            (shared / "done").touch()
    return Path(shutil.copytree(shared / "repo", tmp_path_factory.mktemp(name) / "repo", symlinks=True))


def set_params(repo: Path, overrides: dict[str, Any]) -> None:
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    merge(params, overrides)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def make_repo(dest: Path, overrides: dict[str, Any] | None = None) -> Path:
    """A fresh git + DVC repository with the project's code and params (plus `overrides`)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest / name)
    git(dest, "init", "-q")
    dvc(dest, "init", "-q")
    shutil.copy2(ROOT / ".dvc/config", dest / ".dvc/config")  # the project's settings: the offline plots page
    dvc(dest, "config", "core.analytics", "false")
    if overrides:
        set_params(dest, overrides)
    git(dest, "add", "-A")
    git(dest, "commit", "-qm", "project")
    return dest


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread() -> Iterator[None]:
    """One torch thread, as the stages run (runner.run_stage): tiny models gain nothing from more, and
    on a busy machine extra threads wait for each other and make the tests many times slower."""
    from nncompress.runner import flush_denormals

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    flush_denormals()  # as the stages and the workers run
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def mnist_available() -> None:
    """The e2e tests need real MNIST: from $MNIST_MIRROR, or the official mirrors when online."""
    mirror = os.environ.get("MNIST_MIRROR", "")
    if mirror and not mirror.startswith(("http:", "https:", "file:")) and not Path(mirror).is_dir():
        pytest.fail(f"MNIST_MIRROR={mirror} is not a folder")


def unbatched_retrainer(*args: Any) -> Any:
    """A Retrainer that trains every model with `fit`, one after another: the reference that
    its batched path (a lockstep run's lanes) must match."""
    from nncompress.prune.retrain import Retrainer

    class Unbatched(Retrainer):
        def _batched(self, models: list) -> bool:
            return False

    return Unbatched(*args)
