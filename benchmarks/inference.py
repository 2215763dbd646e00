"""CPU inference speed of the dense, pruned (dense and CSR kernels) and structurally shrunk MLPs.

Usage: python benchmarks/inference.py [--threads 1] [--min-time 0.5] [--rounds 3] [--json out.json]
                                      [--model models/model.pt] [--compressed models/model.nnc]
                                      [--split-dir data/split] [--params params.yaml]

Four models, all in eval mode under torch.inference_mode(), fed real test images:
  dense         the trained fp32 model (--model)
  pruned-dense  the compressed model (--compressed) decoded to ordinary dense tensors, zeros included
  pruned-csr    the same weights as PyTorch CSR tensors, each layer a sparse x dense matmul
  shrunk        the dense model with --shrink-rate of its hidden neurons removed (neuron_prune +
                shrink), a smaller dense MLP; its accuracy is the one the prune@structured stage
                reached at that rate after fine-tuning (plots/prune/structured.csv): timing does
                not depend on the weights' values, so the benchmark does not retrain it

Latency is the median time of one batch-1 forward pass (torch.utils.benchmark, blocked_autorange);
throughput is 256 divided by the median time of one batch-256 pass; of --rounds such medians, taken
in turn across models, the smallest is kept. Numbers depend on the CPU, its load and the thread
count, so compare rows of one run, not runs on different machines.
"""

from __future__ import annotations

import argparse
import copy
import json
import warnings
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn
from torch.utils import benchmark

from nncompress import config
from nncompress.compress import codec
from nncompress.data import load_split
from nncompress.model import MLP, build_model, load_checkpoint
from nncompress.prune.structured import neuron_prune, shrink

BATCHES = (1, 256)  # latency, throughput


class CSRLinear(nn.Module):
    """A Linear layer whose weight is a CSR tensor: y = (W x^T + b)^T.

    Of the CPU paths tried (PyTorch 2.x), addmm(b, W_csr, x^T) was the fastest and matches the dense
    result. F.linear(x, W_csr, b) is accepted too, but at batch 256 it is no faster than the dense
    kernel; x @ W_csr.T is not supported (no strided transpose of a CSR tensor). The transposes are
    views, so no copies are made.
    """

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.weight = linear.weight.detach().to_sparse_csr()
        self.bias = linear.bias.detach()[:, None]  # a column, broadcast over the batch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.bias, self.weight, x.T).T


def to_csr(model: MLP) -> MLP:
    sparse = copy.deepcopy(model)
    sparse.fc1 = CSRLinear(model.fc1)  # type: ignore[assignment]
    sparse.fc2 = CSRLinear(model.fc2)  # type: ignore[assignment]
    return sparse.eval()


def nonzero_weights(model: MLP) -> int:
    """Nonzero entries of the two weight matrices (biases are never pruned, so not counted)."""
    total = 0
    for layer in (model.fc1, model.fc2):
        weight = layer.weight
        total += int(weight.values().count_nonzero() if weight.layout == torch.sparse_csr else weight.count_nonzero())
    return total


def shrunk_at(dense: MLP, rate: float) -> MLP:
    """The dense model with `rate` of its hidden neurons (the least important) removed, as a smaller MLP."""
    masked = copy.deepcopy(dense)  # neuron_prune masks in place; the dense row needs its own model
    neuron_prune(masked, rate)
    return shrink(masked).eval()


def structured_accuracy(csv: Path, rate: float) -> float | None:
    """Test accuracy of the fine-tuned structured model at `rate`, from the prune@structured stage."""
    if not csv.is_file():
        return None
    table = pd.read_csv(csv)
    row = table[(table["compression_rate"] - rate).abs() < 1e-9]
    return None if row.empty else float(row["test_accuracy"].iloc[0])


def median_seconds(model: nn.Module, x: torch.Tensor, threads: int, min_time: float) -> float:
    # Timer pins its own thread count (default 1), whatever torch.set_num_threads said.
    timer = benchmark.Timer("model(x)", globals={"model": model, "x": x}, num_threads=threads)
    timer.timeit(max(1, 4096 // len(x)))  # warm up (caches, allocator, clock) so row order does not matter
    return timer.blocked_autorange(min_run_time=min_time).median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/model.pt"), help="dense checkpoint")
    parser.add_argument("--compressed", type=Path, default=Path("models/model.nnc"), help="compressed model")
    parser.add_argument("--split-dir", type=Path, default=Path("data/split"), help="holds test.pt")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--shrink-rate", type=float, default=0.9, help="hidden neurons removed (default 0.9)")
    parser.add_argument("--structured-csv", type=Path, default=Path("plots/prune/structured.csv"))
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    parser.add_argument("--min-time", type=float, default=0.5, help="seconds per measurement (default 0.5)")
    parser.add_argument("--rounds", type=int, default=3, help="measurements per model and batch, best kept")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
    params = config.load(args.params)
    images, labels = load_split(args.split_dir, "test")

    with torch.inference_mode():
        dense = load_checkpoint(build_model(params.model), args.model).eval()
        pruned = codec.load(args.compressed)
        models: dict[str, MLP] = {
            "dense": dense,
            "pruned-dense": pruned,
            "pruned-csr": to_csr(pruned),
            "shrunk": shrunk_at(dense, args.shrink_rate),
        }
        # Same weights, different kernels: the CSR path must compute what the dense one does.
        for n in BATCHES + (len(images),):
            torch.testing.assert_close(models["pruned-csr"](images[:n]), pruned(images[:n]))

        # Round-robin rounds, keeping each model's fastest median: background load (a busy machine)
        # then slows every model alike, and only inflates, never deflates, a time.
        inputs = {n: images[:n].contiguous() for n in BATCHES}
        best = {(name, n): float("inf") for name in models for n in BATCHES}
        for _ in range(args.rounds):
            for (name, n), seconds in best.items():
                best[name, n] = min(seconds, median_seconds(models[name], inputs[n], args.threads, args.min_time))

        results: dict[str, dict[str, Any]] = {}
        for name, model in models.items():
            seconds = {n: best[name, n] for n in BATCHES}
            results[name] = {
                "nonzero_weights": nonzero_weights(model),
                "hidden_size": model.fc1.weight.shape[0],
                "test_accuracy": (model(images).argmax(1) == labels).float().mean().item()
                if name != "shrunk"
                else structured_accuracy(args.structured_csv, args.shrink_rate),
                "latency_b1_us": seconds[1] * 1e6,
                "throughput_b256_img_s": 256 / seconds[256],
            }

    base = results["dense"]
    print(f"CPU, {args.threads} thread(s), torch {torch.__version__}, {len(images)} test images\n")
    print("| model | nonzero weights | hidden | test acc. | latency b=1 (µs) | images/s b=256 | speed-up b=1 / b=256 |")
    print("|---|--:|--:|--:|--:|--:|--:|")
    for name, r in results.items():
        up1 = base["latency_b1_us"] / r["latency_b1_us"]
        up256 = r["throughput_b256_img_s"] / base["throughput_b256_img_s"]
        accuracy = "n/a" if r["test_accuracy"] is None else f"{r['test_accuracy']:.2%}"
        print(
            f"| {name} | {r['nonzero_weights']:,} | {r['hidden_size']} | {accuracy} "
            f"| {r['latency_b1_us']:.1f} | {r['throughput_b256_img_s']:,.0f} | {up1:.2f}× / {up256:.2f}× |"
        )
    print(
        f"\nshrunk: {args.shrink_rate:.0%} of the hidden neurons removed; its accuracy is prune@structured's "
        f"after fine-tuning at that rate ({args.structured_csv}), the benchmark times the untrained shape."
    )
    if args.json:
        meta = {
            "threads": args.threads,
            "min_time_s": args.min_time,
            "rounds": args.rounds,
            "torch": torch.__version__,
            "shrink_rate": args.shrink_rate,
        }
        args.json.write_text(json.dumps({"meta": meta, "models": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
