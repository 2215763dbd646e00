"""Stage prune@<method>: sweep one registered pruning method over sweep.rates (and its seeds).

Writes the per-rate table (plots/prune/<method>.csv) and the summary metrics
(metrics/prune/<method>.json). The methods are nncompress/prune/methods/, one module each.
"""

from __future__ import annotations

from nncompress.warm import delegate

delegate(__name__)  # run in a warm stage server if one is up (nncompress/warm.py), else cold

from pathlib import Path

from nncompress import config
from nncompress.errors import ParamError
from nncompress.prune import METHODS
from nncompress.runner import arguments, run_stage
from nncompress.sweep import sweep_method


def main() -> None:
    parser = arguments(__doc__, csv="", metrics="")  # defaults: plots/prune/<method>.csv, metrics/prune/...
    parser.add_argument("method", help=f"a registered method: {', '.join(sorted(METHODS))}")
    args = parser.parse_args()
    if args.method not in METHODS:
        raise ParamError(f"unknown pruning method {args.method!r} (registered: {', '.join(sorted(METHODS))})")
    params = config.load(args.params)
    csv = args.csv or Path(f"plots/prune/{args.method}.csv")
    metrics = args.metrics or Path(f"metrics/prune/{args.method}.json")
    sweep_method(params, args.method, args.model, args.split_dir, csv, metrics)


if __name__ == "__main__":
    run_stage(main)
