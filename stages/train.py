"""Stage train: the reference MLP trained with SGD; checkpoint, metrics, curves and their PNGs."""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import torch

from nncompress import plots
from nncompress.cli import run_stage
from nncompress.data import load_split
from nncompress.fileio import write_csv, write_json
from nncompress.model import build_model, save_checkpoint
from nncompress.params import ModelParams, TrainParams, load_params, section
from nncompress.training import accuracy, fit, resolve_device

CURVE_COLUMNS = ["iteration", "epoch", "loss", "train_accuracy", "val_accuracy"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--split-dir", type=Path, default=Path("data/split"))
    parser.add_argument("--model", type=Path, default=Path("models/model.pt"))
    parser.add_argument("--metrics", type=Path, default=Path("metrics/train.json"))
    parser.add_argument("--curve", type=Path, default=Path("plots/train_curve.csv"))
    parser.add_argument("--loss-png", type=Path, default=Path("plots/loss.png"))
    parser.add_argument("--accuracy-png", type=Path, default=Path("plots/accuracy.png"))
    args = parser.parse_args()
    params = load_params(args.params)
    model_params = section(params, ModelParams, "model")
    train_params = section(params, TrainParams, "train")
    device = resolve_device(train_params.device, "train.device")
    train, val, test = (load_split(args.split_dir, name) for name in ("train", "val", "test"))

    torch.manual_seed(train_params.seed)  # weight init and dropout
    model = build_model(model_params)
    log = fit(
        model,
        train,
        val,
        epochs=train_params.epochs,
        batch_size=train_params.batch_size,
        lr=train_params.lr,
        momentum=train_params.momentum,
        shuffle=train_params.shuffle,
        seed=train_params.seed,
        log_every=train_params.log_every,
        device=device,
    )
    model.cpu()  # checkpoints and evaluation on the CPU, wherever training ran
    curve = pd.DataFrame(log, columns=CURVE_COLUMNS)
    summary = {
        "train_accuracy": accuracy(model, train),
        "val_accuracy": accuracy(model, val),
        "test_accuracy": accuracy(model, test),
        "final_loss": float(curve["loss"].iloc[-1]) if len(curve) else None,
        "iterations": int(curve["iteration"].iloc[-1]) if len(curve) else 0,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    save_checkpoint(model, args.model)
    write_csv(args.curve, curve)
    write_json(args.metrics, summary)
    plots.loss_curve(curve, args.loss_png)
    plots.accuracy_curve(curve, args.accuracy_png)
    print(
        f"train accuracy {summary['train_accuracy']:.4f}, validation {summary['val_accuracy']:.4f}, "
        f"test {summary['test_accuracy']:.4f}"
    )


if __name__ == "__main__":
    run_stage(main)
