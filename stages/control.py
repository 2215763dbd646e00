"""Stage control: the dense model trained for the same extra epochs as the pruning methods'
fine-tuning budget, so gains from pruning-with-retraining are not just more training."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from nncompress.cli import run_stage
from nncompress.data import load_split
from nncompress.fileio import write_json
from nncompress.methods import Retrainer
from nncompress.model import build_model, load_checkpoint
from nncompress.params import FinetuneParams, ModelParams, load_params, section
from nncompress.training import accuracy, resolve_device


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--model", type=Path, default=Path("models/model.pt"))
    parser.add_argument("--split-dir", type=Path, default=Path("data/split"))
    parser.add_argument("--metrics", type=Path, default=Path("metrics/control.json"))
    args = parser.parse_args()
    params = load_params(args.params)
    model_params = section(params, ModelParams, "model")
    opt = section(params, FinetuneParams, "finetune")
    device = resolve_device(opt.device, "finetune.device")
    model = load_checkpoint(build_model(model_params), args.model)
    train, val, test = (load_split(args.split_dir, name) for name in ("train", "val", "test"))
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
