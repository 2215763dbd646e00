"""Stage train: the reference MLP trained with SGD; checkpoint, metrics, curves and their PNGs."""

from __future__ import annotations

from nncompress.warm import delegate

delegate(__name__)  # run in a warm stage server if one is up (nncompress/warm.py), else cold

import pandas as pd

from nncompress import config, plots
from nncompress.data import load_splits
from nncompress.fileio import write_csv, write_json
from nncompress.model import save_checkpoint
from nncompress.runner import arguments, run_stage
from nncompress.training import accuracy, resolve_device, train_model

CURVE_COLUMNS = ["iteration", "epoch", "loss", "train_accuracy", "val_accuracy"]


def main() -> None:
    args = arguments(
        __doc__,
        metrics="metrics/train.json",
        curve="plots/train_curve.csv",
        loss_png="plots/loss.png",
        accuracy_png="plots/accuracy.png",
    ).parse_args()
    params = config.load(args.params)
    device = resolve_device(params.train.device, "train.device")
    train, val, test = load_splits(args.split_dir)
    model, log = train_model(params.model, params.train, train, val, device=device)
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
