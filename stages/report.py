"""Stage report: test accuracy against compression rate for every method in sweep.methods, as one
table (plots/accuracy_vs_rate.csv, a column per method, which `dvc plots` draws) and one PNG with
the dense model and its equal-budget control as reference lines."""

from __future__ import annotations

from nncompress.warm import delegate

delegate(__name__)  # run in a warm stage server if one is up (nncompress/warm.py), else cold

import json

import pandas as pd

from nncompress import config, plots
from nncompress.errors import DataError
from nncompress.fileio import write_csv
from nncompress.runner import arguments, run_stage


def main() -> None:
    args = arguments(
        __doc__,
        checkpoint=False,
        plots="plots/prune",  # the sweeps' <method>.csv ...
        metrics="metrics/prune",  # ... and <method>.json
        control="metrics/control.json",
        csv="plots/accuracy_vs_rate.csv",
        out="plots/accuracy_vs_rate.png",
    ).parse_args()
    methods = config.load(args.params).sweep.methods
    tables, aucs = {}, {}
    for method in methods:
        csv, metrics = args.plots / f"{method}.csv", args.metrics / f"{method}.json"
        try:
            tables[method] = pd.read_csv(csv)
            aucs[method] = float(json.loads(metrics.read_text())["auc"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"cannot read the {method} sweep results ({type(exc).__name__}: {exc})") from None
        missing = {"compression_rate", "test_accuracy"} - set(tables[method].columns)
        if missing:
            raise DataError(f"{csv}: missing columns {sorted(missing)}")
    try:
        control = json.loads(args.control.read_text())
        references = {"dense": control["dense_test_accuracy"], "dense + fine-tuning budget": control["test_accuracy"]}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"cannot read {args.control} ({type(exc).__name__}: {exc})") from None
    wide = pd.concat(
        {m: t.set_index("compression_rate")["test_accuracy"] for m, t in tables.items()}, axis=1
    ).rename_axis("compression_rate")
    write_csv(args.csv, wide.reset_index())
    plots.accuracy_vs_rate(tables, aucs, args.out, references)
    print(f"wrote {args.csv} and {args.out}")


if __name__ == "__main__":
    run_stage(main)
