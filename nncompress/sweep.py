"""A pruning sweep: prune a fresh copy of the trained model at each rate and seed, evaluate, summarise."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from sklearn import metrics
from torch import nn
from tqdm import tqdm

from nncompress.data import Split
from nncompress.params import AUC_MAX_RATE
from nncompress.pruning import make_permanent, prunable
from nncompress.training import accuracy

# A pruning method: takes a fresh copy of the trained model and a rate, returns the pruned (and
# possibly retrained, possibly smaller) model.
Method = Callable[[nn.Module, float], nn.Module]

COLUMNS = (
    "compression_rate",
    "sparsity",
    "nonzero_weights",
    "parameters",
    "val_accuracy",
    "val_accuracy_std",
    "test_accuracy",
    "test_accuracy_std",
    "seeds",
)
REPORTED_RATES = (0.9, 0.95, 0.98, 0.99)  # test accuracy at these rates: acc_90, acc_95, ...


def rate_seed(seed: int, rate: float) -> int:
    """A seed for one (seed, rate) pair that does not depend on which other rates are swept."""
    return int(np.random.SeedSequence([seed, round(rate * 1_000_000)]).generate_state(1)[0])


def count_weights(model: nn.Module) -> tuple[int, int]:
    """(nonzero, total) weights of the prunable layers; biases are not counted."""
    nonzero = total = 0
    for _, module in prunable(model):
        nonzero += int((module.weight != 0).sum())
        total += module.weight.numel()
    return nonzero, total


def run_sweep(
    rates: Sequence[float],
    load_model: Callable[[], nn.Module],
    method: Method,
    val: Split,
    test: Split,
    *,
    seeds: Sequence[int] = (0,),
    desc: str = "sweep",
) -> pd.DataFrame:
    """One row per (rate, seed), rates ascending, with measured sparsity and accuracies.

    `load_model` must return a fresh copy of the trained model each call. The RNG is seeded from
    (seed, rate), so a result does not depend on the rest of the list. Sparsity is measured: the
    fraction of the dense model's weights that are zero or gone (structured pruning removes them).
    """
    rows = []
    runs = [(rate, seed) for rate in sorted(rates) for seed in seeds]
    for rate, seed in tqdm(runs, desc=desc, unit="run", dynamic_ncols=True):
        torch.manual_seed(rate_seed(seed, rate))
        dense = load_model()
        _, dense_weights = count_weights(dense)
        model = method(dense, rate)
        make_permanent(model)
        nonzero, _ = count_weights(model)
        rows.append(
            {
                "compression_rate": rate,
                "seed": seed,
                "sparsity": 1 - nonzero / dense_weights,
                "nonzero_weights": nonzero,
                "parameters": sum(p.numel() for p in model.parameters()),
                "val_accuracy": accuracy(model, val),
                "test_accuracy": accuracy(model, test),
            }
        )
    return pd.DataFrame(rows)


def aggregate(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds per rate, with the standard deviation of the accuracies (0 for one seed)."""
    grouped = runs.groupby("compression_rate", sort=True)
    table = grouped[["sparsity", "nonzero_weights", "parameters", "val_accuracy", "test_accuracy"]].mean()
    std = grouped[["val_accuracy", "test_accuracy"]].std(ddof=0)
    table["val_accuracy_std"] = std["val_accuracy"]
    table["test_accuracy_std"] = std["test_accuracy"]
    table["seeds"] = grouped.size()
    return table.reset_index()[list(COLUMNS)]


def area_under_curve(rates: Sequence[float], accuracies: Sequence[float]) -> float:
    """sklearn's trapezoidal AUC of accuracy over the rates in [0, 0.9], as the reference computed it."""
    pairs = sorted((r, a) for r, a in zip(rates, accuracies, strict=True) if r <= AUC_MAX_RATE + 1e-9)
    if len(pairs) < 2:
        raise ValueError(f"the AUC needs at least two rates in [0, {AUC_MAX_RATE}]")
    x, y = zip(*pairs, strict=True)
    return float(metrics.auc(x, y))


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
            "val_accuracy": "{:.4f}".format,
            "val_accuracy_std": "{:.4f}".format,
            "test_accuracy": "{:.4f}".format,
            "test_accuracy_std": "{:.4f}".format,
        },
    )
