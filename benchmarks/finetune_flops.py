"""Achieved fp32 GFLOP/s of fine-tuning, against what the machine's cores can do.

Fine-tuning is what the retraining sweeps spend their time on: masked SGD on the 784-256-10 MLP,
batches of 32 (params.yaml's finetune block). It is timed on one torch thread, as every worker
runs, best of 3 runs of `--iterations` steps on random data of MNIST's shape: one network at a
time, and `--lanes` networks trained as one batched model, as each worker of a sweep of the 13
default rates trains its share on two cores (nncompress.batched). FLOPs per step are counted as
3 x the forward pass's multiply-adds x 2 (the usual convention: the backward pass costs twice the
forward). Two peaks: the measured one, a large fp32 matrix product on one thread, times the cores
available; and the nominal one, clock (/proc/cpuinfo) x 64 fp32 FLOP per cycle (two 512-bit FMA
units; 32 with AVX2 only), which real kernels rarely reach. "share" is achieved / peak, for one
worker and for as many workers as cores (the sweeps' default).

Usage: python benchmarks/finetune_flops.py [--iterations 2000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from nncompress.batched import Lane
from nncompress.config import OptimiserConfig
from nncompress.model import MLP
from nncompress.parallel import available_cores, run_all
from nncompress.prune.masks import unstructured
from nncompress.prune.retrain import Retrainer

BATCH = 32


def gemm_peak(size: int = 1024, repeats: int = 20) -> float:
    """GFLOP/s of one thread on a large fp32 matrix product (best of `repeats`)."""
    a, b = torch.rand(size, size), torch.rand(size, size)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def nominal_peak() -> float:
    """GFLOP/s of one core from its clock and vector width (0 if /proc/cpuinfo does not say)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return 0.0
    mhz = next((float(line.split(":")[1]) for line in info.splitlines() if line.startswith("cpu MHz")), 0.0)
    per_cycle = 64 if " avx512f" in info else 32 if " avx2" in info else 16
    return mhz * per_cycle / 1000


def finetune_seconds(iterations: int, lanes: int = 0) -> float:
    """Wall time per network of `iterations` masked SGD steps, as a sweep point spends them (90%
    pruned): one network alone (lanes=0), or `lanes` networks trained as one batched model."""
    torch.manual_seed(0)
    n = iterations * BATCH
    train = (torch.rand(n, 784), torch.randint(0, 10, (n,)))
    models = [MLP() for _ in range(max(lanes, 1))]
    for model in models:
        unstructured("magnitude", "layer")(model, 0.9)
    sgd = {"lr": 0.01, "momentum": 0.9, "weight_decay": 0.0, "schedule": "constant", "shuffle": True}
    opt = OptimiserConfig(epochs=1, batch_size=BATCH, device="cpu", **sgd)
    retrain = Retrainer(train, train, opt, epochs=1)
    start = time.perf_counter()
    if lanes:
        retrain.train_many([Lane(m, torch.Generator().manual_seed(i), i) for i, m in enumerate(models)])
    else:
        retrain(models[0])
    return (time.perf_counter() - start) / len(models)


def flops_per_step(hidden: int = 256) -> float:
    macs = BATCH * (784 * hidden + hidden * 10)
    return 3 * 2 * macs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--lanes", type=int, default=7, help="networks per batched model (13 rates on 2 cores: 7)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cores = available_cores()
    peak = gemm_peak()
    best = min(finetune_seconds(args.iterations) for _ in range(3))  # best of 3: a shared machine is noisy
    alone = flops_per_step() * args.iterations / best / 1e9
    best = min(finetune_seconds(args.iterations, args.lanes) for _ in range(3))
    one = flops_per_step() * args.iterations / best / 1e9
    # The same work on every core at once, as the sweeps run it (one process per core).
    jobs = [(args.iterations, args.lanes)] * cores
    seconds = run_all(lambda job: finetune_seconds(*job), jobs, workers=cores, desc="finetune")
    together = sum(flops_per_step() * args.iterations / s / 1e9 for s in seconds)
    nominal = nominal_peak()
    results = {
        "cores": cores,
        "lanes": args.lanes,
        "gemm_peak_gflops_per_core": peak,
        "nominal_peak_gflops_per_core": nominal,
        "finetune_gflops_one_network": alone,
        "finetune_gflops_one_worker": one,
        "batched_speedup": one / alone,
        "finetune_share_of_gemm_peak": one / peak,
        "finetune_share_of_nominal_peak": one / nominal if nominal else float("nan"),
        "finetune_gflops_all_workers": together,
        "machine_share_of_gemm_peak": together / (peak * cores),
        "machine_share_of_nominal_peak": together / (nominal * cores) if nominal else float("nan"),
    }
    for key, value in results.items():
        print(f"{key:<28}{value:10.3f}")
    if args.json:
        args.json.write_text(json.dumps({k: round(v, 4) for k, v in results.items()}, indent=2) + "\n")


if __name__ == "__main__":
    main()
