"""Stage split: train / validation / test tensors from the MNIST files, and a picture of samples."""

from __future__ import annotations

from nncompress.warm import delegate

delegate(__name__)  # run in a warm stage server if one is up (nncompress/warm.py), else cold

from nncompress import config, plots
from nncompress.data import make_splits, mnist, save_splits
from nncompress.runner import arguments, run_stage


def main() -> None:
    args = arguments(
        __doc__, checkpoint=False, data="data/mnist", out="data/split", samples="plots/samples.png"
    ).parse_args()
    params = config.load(args.params).split
    mnist.verify(args.data)
    splits = make_splits(mnist.load_raw(args.data), params)
    save_splits(splits, args.out)
    plots.sample_grid(splits["train"]["images"], splits["train"]["labels"], args.samples)
    for name, tensors in splits.items():
        print(f"{name}: {len(tensors['labels'])} images")


if __name__ == "__main__":
    run_stage(main)
