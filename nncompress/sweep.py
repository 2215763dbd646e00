"""A pruning sweep: prune a fresh copy of the trained model at each rate and seed, evaluate, summarise."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from torch import nn

from nncompress import model as model_lib
from nncompress.data import Split, load_splits
from nncompress.fileio import write_csv, write_json
from nncompress.macs import macs
from nncompress.parallel import run_together
from nncompress.prune import Context
from nncompress.prune.masks import count_weights, make_permanent
from nncompress.prune.schedule import Method
from nncompress.training import accuracy, resolve_device

if TYPE_CHECKING:
    from nncompress.config import Params

AUC_MAX_RATE = 0.9  # the reference's AUC spans rates 0..0.9

COLUMNS = (
    "compression_rate",
    "sparsity",
    "nonzero_weights",
    "parameters",
    "macs",
    "val_accuracy",
    "val_accuracy_std",
    "test_accuracy",
    "test_accuracy_std",
    "seeds",
)
REPORTED_RATES = (0.9, 0.95, 0.98, 0.99)  # test accuracy at these rates: acc_90, acc_95, ...


def rate_seed(seed: int, rate: float, *more: int) -> int:
    """A seed for one (seed, rate, *more) point that does not depend on which other points run."""
    return int(np.random.SeedSequence([seed, round(rate * 1_000_000), *more]).generate_state(1)[0])


@dataclasses.dataclass(frozen=True)
class SweepPoint:
    """One point of a sweep as a job: (rate, seed) -> its row. Seeded from (seed, rate) alone, so
    the row does not depend on which process runs it or what ran there before."""

    load_model: Callable[[], nn.Module]
    method: Method
    val: Split
    test: Split

    def __call__(self, point: tuple[float, int]) -> dict[str, float | int]:
        rate, seed = point
        torch.manual_seed(rate_seed(seed, rate))
        dense = self.load_model()
        _, dense_weights = count_weights(dense)
        model = self.method(dense, rate)
        make_permanent(model)
        nonzero, _ = count_weights(model)
        return {
            "compression_rate": rate,
            "seed": seed,
            "sparsity": 1 - nonzero / dense_weights,
            "nonzero_weights": nonzero,
            "parameters": sum(p.numel() for p in model.parameters()),
            "macs": macs(model),
            "val_accuracy": accuracy(model, self.val),
            "test_accuracy": accuracy(model, self.test),
        }


def run_sweep(
    rates: Sequence[float],
    load_model: Callable[[], nn.Module],
    method: Method,
    val: Split,
    test: Split,
    *,
    seeds: Sequence[int] = (0,),
    desc: str = "sweep",
    workers: int = 1,
    executor: str = "local",
) -> pd.DataFrame:
    """One row per (rate, seed), rates ascending, with measured sparsity and accuracies.

    `load_model` must return a fresh copy of the trained model each call. The points run on
    `workers` processes (0: every core) or on Ray (`executor`), each process retraining its points
    as one batched model, with the same rows either way.
    Sparsity is measured: the fraction of the dense model's weights that are zero or gone
    (structured pruning removes them); `macs` are those of one image through the pruned model.
    """
    points = [(rate, seed) for rate in sorted(rates) for seed in seeds]
    job = SweepPoint(load_model, method, val, test)
    return pd.DataFrame(run_together(job, points, workers=workers, executor=executor, desc=desc))


def aggregate(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds per rate, with the standard deviation of the accuracies (0 for one seed)."""
    grouped = runs.groupby("compression_rate", sort=True)
    table = grouped[["sparsity", "nonzero_weights", "parameters", "macs", "val_accuracy", "test_accuracy"]].mean()
    std = grouped[["val_accuracy", "test_accuracy"]].std(ddof=0)
    table["val_accuracy_std"] = std["val_accuracy"]
    table["test_accuracy_std"] = std["test_accuracy"]
    table["seeds"] = grouped.size()
    return table.reset_index()[list(COLUMNS)]


def area_under_curve(rates: Sequence[float], accuracies: Sequence[float]) -> float:
    """The trapezoidal AUC of accuracy over the rates in [0, 0.9], as the reference computed it with
    sklearn's `metrics.auc`: that is numpy's `trapezoid` over increasing rates, bit for bit (a test
    checks it), without the 0.7 s scikit-learn takes to import in every sweep stage."""
    pairs = sorted((r, a) for r, a in zip(rates, accuracies, strict=True) if r <= AUC_MAX_RATE + 1e-9)
    if len(pairs) < 2:
        raise ValueError(f"the AUC needs at least two rates in [0, {AUC_MAX_RATE}]")
    x, y = zip(*pairs, strict=True)
    return float(np.trapezoid(y, x))


def summarize(runs: pd.DataFrame, finetune_epochs: int) -> dict[str, float | int | None]:
    """The metrics every sweep reports, with the same keys for every method.

    `auc` and `auc_val` are of the mean curve over seeds; `auc_std` is the spread of the per-seed
    test AUCs; `acc_<rate>` is the mean test accuracy at that rate (null when not swept);
    `finetune_epochs` is the training budget spent after pruning, per rate.
    """
    table = aggregate(runs)
    per_seed = [
        area_under_curve(group["compression_rate"], group["test_accuracy"]) for _, group in runs.groupby("seed")
    ]
    result: dict[str, float | int | None] = {
        "auc": area_under_curve(table["compression_rate"], table["test_accuracy"]),
        "auc_val": area_under_curve(table["compression_rate"], table["val_accuracy"]),
        "auc_std": float(np.std(per_seed)),
    }
    for rate in REPORTED_RATES:
        hit = table.loc[np.isclose(table["compression_rate"], rate), "test_accuracy"]
        result[f"acc_{round(rate * 100)}"] = float(hit.iloc[0]) if len(hit) else None
    result["finetune_epochs"] = finetune_epochs
    result["seeds"] = int(runs["seed"].nunique())
    return result


def format_table(table: pd.DataFrame) -> str:
    """The per-rate accuracy table, printed like the reference's."""
    shown = table.drop(columns=["val_accuracy_std", "test_accuracy_std"] if table["seeds"].max() == 1 else [])
    return shown.to_string(
        index=False,
        formatters={
            "compression_rate": "{:.2f}".format,
            "sparsity": "{:.4f}".format,
            "nonzero_weights": "{:.0f}".format,
            "parameters": "{:.0f}".format,
            "macs": "{:.0f}".format,
            "val_accuracy": "{:.4f}".format,
            "val_accuracy_std": "{:.4f}".format,
            "test_accuracy": "{:.4f}".format,
            "test_accuracy_std": "{:.4f}".format,
        },
    )


def sweep_method(params: Params, name: str, checkpoint: Path, split_dir: Path, csv: Path, metrics_json: Path) -> None:
    """What a prune@<name> stage does: sweep method `name` over sweep.rates from the trained model,
    then write its per-rate table (CSV) and summary (JSON), atomically."""
    config = params.method(name)
    trained = model_lib.load_checkpoint(model_lib.build_model(params.model), checkpoint)
    fresh_copy = model_lib.copier(params.model, trained)
    train, val, test = load_splits(split_dir)
    ctx = Context(params, train, val, resolve_device(params.finetune.device, "finetune.device"))

    runs = run_sweep(
        params.sweep.rates,
        fresh_copy,
        config.build(ctx),
        val,
        test,
        seeds=config.sweep_seeds(),
        desc=name,
        workers=params.sweep.workers,
        executor=params.sweep.executor,
    )
    table, summary = aggregate(runs), summarize(runs, config.budget(ctx))
    write_csv(csv, table)
    write_json(metrics_json, summary)
    print(f"\n{name} pruning (test: {len(test[1])} images, validation: {len(val[1])} images)")
    print(format_table(table))
    print(f"AUC over rates 0..0.9: test {summary['auc']:.4f}, validation {summary['auc_val']:.4f}")
