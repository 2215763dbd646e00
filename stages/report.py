"""Stage report: one PNG of test accuracy vs compression for every pruning method, with the dense
model and its equal-budget control as reference lines."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from nncompress import plots
from nncompress.cli import run_stage
from nncompress.errors import DataError


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("methods", nargs="+", help="methods whose plots/prune_<method>.csv to draw")
    parser.add_argument("--control", type=Path, default=Path("metrics/control.json"))
    parser.add_argument("--out", type=Path, default=Path("plots/accuracy_vs_rate.png"))
    args = parser.parse_args()
    tables, aucs = {}, {}
    for method in args.methods:
        csv, metrics = Path(f"plots/prune_{method}.csv"), Path(f"metrics/prune_{method}.json")
        try:
            tables[method] = pd.read_csv(csv)
            aucs[method] = float(json.loads(metrics.read_text())["auc"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"cannot read the {method} sweep results ({type(exc).__name__}: {exc})") from None
        missing = {"compression_rate", "test_accuracy"} - set(tables[method].columns)
        if missing:
            raise DataError(f"{csv}: missing columns {sorted(missing)}")
    references = {}
    try:
        control = json.loads(args.control.read_text())
        references = {"dense": control["dense_test_accuracy"], "dense + fine-tuning budget": control["test_accuracy"]}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"cannot read {args.control} ({type(exc).__name__}: {exc})") from None
    plots.accuracy_vs_rate(tables, aucs, args.out, references)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    run_stage(main)
