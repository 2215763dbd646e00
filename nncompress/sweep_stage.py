"""What the prune_<method> stages share: arguments, loading, the sweep, and its outputs."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from nncompress import model as model_lib
from nncompress.data import Split, load_split
from nncompress.fileio import write_csv, write_json
from nncompress.params import ModelParams, SweepParams, section
from nncompress.sweep import Method, aggregate, format_table, run_sweep, summarize


def parse_args(method: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=f"{method} pruning sweep over compression rates")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--model", type=Path, default=Path("models/model.pt"))
    parser.add_argument("--split-dir", type=Path, default=Path("data/split"))
    parser.add_argument("--csv", type=Path, default=Path(f"plots/prune_{method}.csv"))
    parser.add_argument("--metrics", type=Path, default=Path(f"metrics/prune_{method}.json"))
    return parser.parse_args()


def execute(
    method: str,
    args: argparse.Namespace,
    params: dict[str, Any],
    build: Callable[[Split, Split], Method],
    *,
    seeds: Sequence[int] = (0,),
    finetune_epochs: int = 0,
) -> None:
    """Validate everything first, then sweep and write the CSV and JSON (atomically).

    `build(train, val)` returns the method; `finetune_epochs` is the budget it spends per rate.
    """
    model_params = section(params, ModelParams, "model")
    rates = section(params, SweepParams, "sweep").rates
    trained = model_lib.load_checkpoint(model_lib.build_model(model_params), args.model)
    state = {k: v.clone() for k, v in trained.state_dict().items()}
    train, val, test = (load_split(args.split_dir, name) for name in ("train", "val", "test"))

    def fresh_copy() -> nn.Module:
        model = model_lib.build_model(model_params)
        model.load_state_dict(state)
        return model

    runs = run_sweep(rates, fresh_copy, build(train, val), val, test, seeds=seeds, desc=method)
    table, summary = aggregate(runs), summarize(runs, finetune_epochs)
    write_csv(args.csv, table)
    write_json(args.metrics, summary)
    print(f"\n{method} pruning (test: {len(test[1])} images, validation: {len(val[1])} images)")
    print(format_table(table))
    print(f"AUC over rates 0..0.9: test {summary['auc']:.4f}, validation {summary['auc_val']:.4f}")
