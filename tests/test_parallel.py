"""Sweep points and compress settings on several processes, or on Ray: the same rows as one process."""

from __future__ import annotations

import os

import pandas as pd
import pytest
import torch
from conftest import plain_sgd

from nncompress import parallel, training
from nncompress.compress.grid import compress_grid, state_dict_bytes
from nncompress.model import MLP
from nncompress.prune.masks import unstructured
from nncompress.prune.retrain import Retrainer
from nncompress.prune.schedule import gradual, one_shot
from nncompress.sweep import run_sweep

HIDDEN = 8
OPT = plain_sgd(1, lr=0.05, batch_size=16)


def noisy(item: int) -> tuple[int, float, int]:
    """A job that draws from torch's RNG after seeding from its item, and says where it ran."""
    torch.manual_seed(item)
    return item, float(torch.rand(1)), os.getpid()


def test_results_come_back_in_the_order_of_the_items():
    items = list(range(7, 0, -1))
    assert [r[:2] for r in parallel.run_all(noisy, items, workers=2)] == [r[:2] for r in map(noisy, items)]


def test_two_workers_are_two_other_processes():
    pids = {pid for _, _, pid in parallel.run_all(noisy, list(range(8)), workers=2)}
    assert os.getpid() not in pids
    assert 1 <= len(pids) <= 2


def test_one_worker_runs_in_this_process():
    assert {pid for _, _, pid in parallel.run_all(noisy, [1, 2], workers=1)} == {os.getpid()}


def test_workers_zero_means_every_available_core():
    assert parallel.resolve_workers(0) == parallel.available_cores() >= 1
    assert parallel.resolve_workers(3) == 3


def test_unknown_executor_is_refused():
    with pytest.raises(ValueError, match="executor"):
        parallel.run_all(noisy, [1], executor="dask")


def test_a_failing_job_fails_the_run():
    def boom(item: int) -> int:
        raise RuntimeError(f"job {item} failed")

    with pytest.raises(RuntimeError, match=r"job [12] failed"):
        parallel.run_all(boom, [1, 2], workers=2)


def test_workers_are_quiet_and_single_threaded():
    def settings(_: int) -> tuple[int, bool]:
        return torch.get_num_threads(), training.SHOW_PROGRESS

    assert set(parallel.run_all(settings, [1, 2, 3], workers=2)) == {(1, False)}
    assert training.SHOW_PROGRESS  # the parent keeps its bars


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(96, 784, generator=g)
    labels = torch.randint(0, 10, (96,), generator=g)
    return {
        "train": (images[:64], labels[:64]),
        "val": (images[64:80], labels[64:80]),
        "test": (images[80:], labels[80:]),
    }


@pytest.fixture(scope="module")
def state():
    torch.manual_seed(0)
    return MLP(hidden_size=HIDDEN).state_dict()


def sweep(state, data, method, **kwargs) -> pd.DataFrame:
    def fresh():
        model = MLP(hidden_size=HIDDEN)
        model.load_state_dict(state)
        return model

    return run_sweep([0.0, 0.5, 0.9, 0.95], fresh, method, data["val"], data["test"], seeds=(0, 1), **kwargs)


def methods(data):
    retrain = Retrainer(data["train"], data["val"], OPT, 2)
    return {
        "random": one_shot(unstructured("random", "layer")),
        "finetune": one_shot(unstructured("magnitude", "layer"), retrain),
        "gradual": gradual(unstructured("magnitude", "global"), retrain, steps=2, ramp=0.5),
    }


@pytest.mark.parametrize("name", ["random", "finetune", "gradual"])
def test_a_sweep_gives_the_same_rows_on_one_or_two_workers(state, data, name):
    method = methods(data)[name]
    one = sweep(state, data, method, workers=1)
    two = sweep(state, data, method, workers=2)
    pd.testing.assert_frame_equal(one, two)  # exactly: each point is seeded from (seed, rate)
    assert len(one) == 8


def test_the_sweep_in_the_parent_leaves_no_state_behind(state, data):
    """Points are independent: running one twice in a row, or after another, gives the same row."""
    method = methods(data)["finetune"]
    a = sweep(state, data, method, workers=1)
    torch.manual_seed(12345)
    b = sweep(state, data, method, workers=1)
    pd.testing.assert_frame_equal(a, b)


def grid(state, data, **kwargs):
    retrain = Retrainer(data["train"], data["val"], OPT, 1)
    method = one_shot(unstructured("magnitude", "layer"), retrain)

    def prune(sparsity):
        model = MLP(hidden_size=HIDDEN)
        model.load_state_dict(state)
        return method(model, sparsity)

    dense = MLP(hidden_size=HIDDEN)
    dense.load_state_dict(state)
    settings = [(0.9, 2), (0.5, 3), (0.5, 2), (0.9, 3)]
    return compress_grid(
        settings,
        prune,
        retrain,
        data["val"],
        data["test"],
        dense_bytes=state_dict_bytes(dense),
        dense_test_accuracy=0.1,
        **kwargs,
    )


def test_the_compress_grid_gives_the_same_rows_and_files_on_two_workers(state, data):
    table1, files1 = grid(state, data, workers=1)
    table2, files2 = grid(state, data, workers=2)
    pd.testing.assert_frame_equal(table1, table2)
    assert files1 == files2
    assert list(zip(table1["sparsity"], table1["bits"], strict=True)) == [(0.5, 2), (0.5, 3), (0.9, 2), (0.9, 3)]


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_a_sweep_on_a_local_ray_instance_gives_the_local_rows(state, data, local_ray):
    method = methods(data)["gradual"]
    pd.testing.assert_frame_equal(sweep(state, data, method, executor="ray"), sweep(state, data, method, workers=1))


def test_the_compress_grid_on_ray_gives_the_local_files(state, data, local_ray):
    table1, files1 = grid(state, data, workers=1)
    table2, files2 = grid(state, data, executor="ray")
    pd.testing.assert_frame_equal(table1, table2)
    assert files1 == files2


def test_ray_missing_is_a_one_line_param_error(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray":
            raise ImportError("no ray here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    from nncompress.errors import ParamError

    with pytest.raises(ParamError, match=r"^params\.yaml: sweep\.executor is ray, but Ray is not installed"):
        parallel.run_all(noisy, [1], executor="ray")


def test_a_job_error_on_ray_is_the_job_s_own_one_line_error(local_ray):
    from nncompress.errors import ParamError

    def refuse(item: int) -> int:
        raise ParamError(f"params.yaml: item {item} is bad")

    with pytest.raises(ParamError) as info:
        parallel.run_all(refuse, [7], executor="ray")
    assert str(info.value) == "params.yaml: item 7 is bad"


def test_a_worker_that_dies_is_a_one_line_error():
    from nncompress.errors import PipelineError

    def die(item: int) -> int:
        os._exit(1)

    with pytest.raises(PipelineError, match=r"^a worker process died"):
        parallel.run_all(die, [1, 2], workers=2)
