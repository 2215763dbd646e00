"""What the prune_<method> stages share: arguments, loading, the sweep, and its outputs."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from torch import nn

from nncompress import model as model_lib
from nncompress.data import Split, load_split
from nncompress.fileio import write_csv, write_json
from nncompress.params import ModelParams, SweepParams, section
from nncompress.pruning import PruneFn
from nncompress.sweep import format_table, run_sweep, summarize


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
    params: dict,
    prune_fn: PruneFn,
    *,
    seed: int = 0,
    finetune_epochs: int = 0,
    make_finetune: Callable[[Split, Split], Callable[[nn.Module], None]] | None = None,
) -> None:
    """Validate everything first, then sweep and write the CSV and JSON (atomically)."""
    model_params = section(params, ModelParams, "model")
    rates = section(params, SweepParams, "sweep").rates
    trained = model_lib.load_checkpoint(model_lib.build_model(model_params), args.model)
    state = {k: v.clone() for k, v in trained.state_dict().items()}
    train, val, test = (load_split(args.split_dir, name) for name in ("train", "val", "test"))

    def fresh_copy() -> nn.Module:
        model = model_lib.build_model(model_params)
        model.load_state_dict(state)
        return model

    finetune = make_finetune(train, val) if make_finetune and finetune_epochs > 0 else None
    table = run_sweep(rates, fresh_copy, prune_fn, val, test, seed=seed, finetune=finetune, desc=method)
    summary = summarize(table, finetune_epochs)
    write_csv(args.csv, table)
    write_json(args.metrics, summary)
    print(f"\n{method} pruning (test: {len(test[1])} images, validation: {len(val[1])} images)")
    print(format_table(table))
    print(f"AUC over rates 0..0.9: test {summary['auc']:.4f}, validation {summary['auc_val']:.4f}")
