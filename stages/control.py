"""Stage control: the dense model trained for the same extra epochs as the pruning methods'
fine-tuning budget, so gains from pruning-with-retraining are not just more training."""

from __future__ import annotations

from nncompress.warm import delegate

delegate(__name__)  # run in a warm stage server if one is up (nncompress/warm.py), else cold

import torch

from nncompress import config
from nncompress.data import load_splits
from nncompress.fileio import write_json
from nncompress.model import build_model, load_checkpoint
from nncompress.prune.retrain import Retrainer
from nncompress.runner import arguments, run_stage
from nncompress.training import accuracy, resolve_device


def main() -> None:
    args = arguments(__doc__, metrics="metrics/control.json").parse_args()
    params = config.load(args.params)
    opt = params.finetune
    device = resolve_device(opt.device, "finetune.device")
    model = load_checkpoint(build_model(params.model), args.model)
    train, val, test = load_splits(args.split_dir)
    before = accuracy(model, test)
    torch.manual_seed(0)
    Retrainer(train, val, opt, opt.epochs, device)(model)
    summary = {
        "test_accuracy": accuracy(model, test),
        "val_accuracy": accuracy(model, val),
        "dense_test_accuracy": before,
        "finetune_epochs": opt.epochs,
    }
    write_json(args.metrics, summary)
    print(
        f"dense model after {opt.epochs} more epochs: test {summary['test_accuracy']:.4f} "
        f"(before: {before:.4f}), validation {summary['val_accuracy']:.4f}"
    )


if __name__ == "__main__":
    run_stage(main)
