"""A pruning sweep: prune a fresh copy of the trained model at each rate, evaluate, summarise."""

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
from nncompress.pruning import PruneFn, make_permanent, prunable, sparsity
from nncompress.training import accuracy

COLUMNS = ("compression_rate", "sparsity", "nonzero_weights", "val_accuracy", "test_accuracy")


def rate_seed(seed: int, rate: float) -> int:
    """A seed for one rate that does not depend on which other rates are swept."""
    return int(np.random.SeedSequence([seed, round(rate * 1_000_000)]).generate_state(1)[0])


def run_sweep(
    rates: Sequence[float],
    load_model: Callable[[], nn.Module],
    prune_fn: PruneFn,
    val: Split,
    test: Split,
    *,
    seed: int = 0,
    finetune: Callable[[nn.Module], None] | None = None,
    desc: str = "sweep",
) -> pd.DataFrame:
    """One row per rate (ascending) with measured sparsity and validation / test accuracy.

    `load_model` must return a fresh copy of the trained model each call. The RNG is seeded per
    rate, so a rate's result does not depend on the rest of the list.
    """
    rows = []
    for rate in tqdm(sorted(rates), desc=desc, unit="rate", dynamic_ncols=True):
        torch.manual_seed(rate_seed(seed, rate))
        model = load_model()
        prune_fn(model, rate)
        if finetune is not None:
            finetune(model)
        make_permanent(model)
        nonzero = sum(int((m.weight != 0).sum()) for _, m in prunable(model))
        rows.append(
            {
                "compression_rate": rate,
                "sparsity": sparsity(model)["total"],
                "nonzero_weights": nonzero,
                "val_accuracy": accuracy(model, val),
                "test_accuracy": accuracy(model, test),
            }
        )
    return pd.DataFrame(rows, columns=list(COLUMNS))


def area_under_curve(rates: Sequence[float], accuracies: Sequence[float]) -> float:
    """sklearn's trapezoidal AUC of accuracy over the rates in [0, 0.9], as the reference computed it."""
    pairs = sorted((r, a) for r, a in zip(rates, accuracies, strict=True) if r <= AUC_MAX_RATE + 1e-9)
    if len(pairs) < 2:
        raise ValueError(f"the AUC needs at least two rates in [0, {AUC_MAX_RATE}]")
    x, y = zip(*pairs, strict=True)
    return float(metrics.auc(x, y))


def summarize(table: pd.DataFrame, finetune_epochs: int) -> dict[str, float | int | None]:
    """The metrics every sweep reports, with the same keys for every method."""
    at_90 = table.loc[np.isclose(table["compression_rate"], 0.9), "test_accuracy"]
    return {
        "auc": area_under_curve(table["compression_rate"], table["test_accuracy"]),
        "auc_val": area_under_curve(table["compression_rate"], table["val_accuracy"]),
        "acc_90": float(at_90.iloc[0]) if len(at_90) else None,
        "finetune_epochs": finetune_epochs,
    }


def format_table(table: pd.DataFrame) -> str:
    """The per-rate accuracy table, printed like the reference's."""
    return table.to_string(
        index=False,
        formatters={
            "compression_rate": "{:.2f}".format,
            "sparsity": "{:.4f}".format,
            "val_accuracy": "{:.4f}".format,
            "test_accuracy": "{:.4f}".format,
        },
    )
