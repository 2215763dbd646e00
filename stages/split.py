"""Stage split: train / validation / test tensors from the MNIST files, and a picture of samples."""

from __future__ import annotations

import argparse
from pathlib import Path

from nncompress import mnist, plots
from nncompress.cli import run_stage
from nncompress.data import make_splits, save_splits
from nncompress.params import SplitParams, load_params, section


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--data", type=Path, default=Path("data/mnist"))
    parser.add_argument("--out", type=Path, default=Path("data/split"))
    parser.add_argument("--samples", type=Path, default=Path("plots/samples.png"))
    args = parser.parse_args()
    params = section(load_params(args.params), SplitParams, "split")
    mnist.verify(args.data)
    splits = make_splits(mnist.load_raw(args.data), params)
    save_splits(splits, args.out)
    plots.sample_grid(splits["train"]["images"], splits["train"]["labels"], args.samples)
    for name, tensors in splits.items():
        print(f"{name}: {len(tensors['labels'])} images")


if __name__ == "__main__":
    run_stage(main)
