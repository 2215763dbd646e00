"""Wall time of the default pipeline on a fresh clone, per stage and in all, and of a no-op rerun.

Usage: python benchmarks/repro_time.py [--rev REV] [--cold] [--json out.json]
Clones the committed HEAD (or REV, e.g. an older commit to compare with) into a temporary folder
(no DVC cache, no data), so uncommitted changes are not measured. MNIST comes from $MNIST_MIRROR
if set, as in the pipeline. No warm stage server (nncompress/warm.py) is up at the start: the first
stage starts one, as in a user's first `dvc repro`; --cold runs every stage without one.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed(args: list[str], cwd: Path, **extra: str) -> float:
    # The clone's own package first on the import path, not the editable install's working tree.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    env = dict(os.environ, PATH=path, PYTHONPATH=str(cwd), **extra)
    start = time.perf_counter()
    subprocess.run(args, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the timings here")
    parser.add_argument("--rev", default="HEAD", help="the commit to measure (default: HEAD)")
    parser.add_argument("--cold", action="store_true", help="no warm stage server: every stage imports afresh")
    args = parser.parse_args()
    # A variable of its own gives this run's stages a server of their own (its key hashes the
    # environment): none is up when the first stage starts.
    warm = {"NNCOMPRESS_WARM": "0"} if args.cold else {"NNCOMPRESS_BENCH_RUN": f"{os.getpid()}-{time.time()}"}
    dvc = [sys.executable, "-m", "dvc"]
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "clone"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(repo)], check=True)
        subprocess.run(["git", "checkout", "-q", args.rev], cwd=repo, check=True)
        # Stages in dvc.yaml order (which is the pipeline's order; matrix stages expanded, as
        # prune@random, ...), each run by its own `dvc repro` so that each gets its own time; their
        # sum is the full reproduction. --force, because the clone carries the committed results
        # and DVC would rightly skip stages that reproduce them.
        listed = subprocess.run([*dvc, "stage", "list", "--name-only"], cwd=repo, check=True, capture_output=True)
        stages = listed.stdout.decode().split()
        results = {f"stage_{s}_s": timed([*dvc, "repro", "--force", "--single-item", s], repo, **warm) for s in stages}
        results["full_repro_s"] = sum(results.values())
        results["noop_repro_s"] = timed([*dvc, "repro"], repo, **warm)
    width = max(map(len, results))
    for key, seconds in results.items():
        print(f"{key:<{width}}  {seconds:6.1f}")
    if args.json:
        args.json.write_text(json.dumps({k: round(v, 2) for k, v in results.items()}, indent=2) + "\n")


if __name__ == "__main__":
    main()
