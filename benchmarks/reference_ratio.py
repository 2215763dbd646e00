"""The reference experiment through DVC against a plain PyTorch script doing the same work.

Both side by side in one run, alternating, `--rounds` times each (median reported): the plain
script (benchmarks/plain_reference.py), and `dvc repro --force prune@random prune@magnitude` in a
fresh clone of HEAD (or --rev) whose params keep the reference's work (sweep.rates 0..0.9, one random seed):
download, split, train and the two sweeps, from scratch each time. The ratio is DVC / plain. No
warm stage server (nncompress/warm.py) is up when a DVC round starts (each has its own): its first
stage starts one, as in a user's first `dvc repro`. --cold runs every stage without one.

Usage: MNIST_MIRROR=/path/to/mnist python benchmarks/reference_ratio.py [--rounds 3] [--rev REV] [--cold]
       [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from repro_time import timed  # benchmarks/ is on the path: this script's folder

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--rev", default="HEAD", help="the commit whose pipeline is measured (default: HEAD)")
    parser.add_argument("--cold", action="store_true", help="no warm stage server: every stage imports afresh")
    args = parser.parse_args()
    mirror = os.environ.get("MNIST_MIRROR")
    if not mirror or not Path(mirror).is_dir():
        sys.exit("error: set MNIST_MIRROR to a folder holding the four MNIST .gz files")
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "clone"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(repo)], check=True)
        subprocess.run(["git", "checkout", "-q", args.rev], cwd=repo, check=True)
        params = yaml.safe_load((repo / "params.yaml").read_text())
        params["sweep"].update(methods=["random", "magnitude"], rates=[i / 10 for i in range(10)])
        params["prune_random"]["seeds"] = [0]
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        dvc = [sys.executable, "-m", "dvc", "repro", "--force", "prune@random", "prune@magnitude"]
        plain = [sys.executable, str(ROOT / "benchmarks/plain_reference.py"), mirror]
        times: dict[str, list[float]] = {"plain_script_s": [], "dvc_pipeline_s": []}
        for round_ in range(args.rounds):
            warm = {"NNCOMPRESS_WARM": "0"} if args.cold else {"NNCOMPRESS_BENCH_RUN": f"{os.getpid()}-{round_}"}
            times["plain_script_s"].append(timed(plain, repo))
            times["dvc_pipeline_s"].append(timed(dvc, repo, **warm))
    results = {key: statistics.median(values) for key, values in times.items()}
    results["ratio"] = results["dvc_pipeline_s"] / results["plain_script_s"]
    for key, value in results.items():
        print(f"{key:<16}{value:8.2f}   (all: {', '.join(f'{t:.1f}' for t in times.get(key, []))})")
    if args.json:
        args.json.write_text(json.dumps({k: round(v, 3) for k, v in results.items()}, indent=2) + "\n")


if __name__ == "__main__":
    main()
