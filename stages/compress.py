"""Stage compress: prune, share weights by k-means, fine-tune the shared values, entropy code.

Writes the shipped file (models/model.nnc) for params compress.sparsity and compress.bits, and codes
every setting of the sweep grid too, reporting the accuracy of each model as decoded from its bytes.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from nncompress import codec, compression, plots
from nncompress import model as model_lib
from nncompress.cli import run_stage
from nncompress.data import load_split
from nncompress.fileio import write_bytes, write_csv, write_json
from nncompress.methods import Retrainer, gradual, magnitude_by_scope, one_shot
from nncompress.params import (
    CompressParams,
    FinetuneParams,
    GradualPruneParams,
    ModelParams,
    load_params,
    section,
)
from nncompress.pruning import sparsity
from nncompress.training import accuracy, resolve_device


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--model", type=Path, default=Path("models/model.pt"))
    parser.add_argument("--split-dir", type=Path, default=Path("data/split"))
    parser.add_argument("--out", type=Path, default=Path("models/model.nnc"))
    parser.add_argument("--csv", type=Path, default=Path("plots/compress.csv"))
    parser.add_argument("--png", type=Path, default=Path("plots/compress.png"))
    parser.add_argument("--metrics", type=Path, default=Path("metrics/compress.json"))
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    params = load_params(args.params)
    model_params = section(params, ModelParams, "model")
    opt = section(params, FinetuneParams, "finetune")
    grad = section(params, GradualPruneParams, "prune_gradual")
    own = section(params, CompressParams, "compress")
    device = resolve_device(opt.device, "finetune.device")
    dense = model_lib.load_checkpoint(model_lib.build_model(model_params), args.model)
    state = {k: v.clone() for k, v in dense.state_dict().items()}
    train, val, test = (load_split(args.split_dir, name) for name in ("train", "val", "test"))

    retrain = Retrainer(train, val, opt, opt.epochs, device)
    if own.method == "gradual":
        method = gradual(magnitude_by_scope(grad.scope), retrain, grad.steps, grad.ramp)
    else:  # "global" or "layer": one-shot magnitude pruning with that scope, then fine-tuning
        method = one_shot(magnitude_by_scope(own.method), retrain)

    def prune(rate: float) -> model_lib.MLP:
        fresh = model_lib.build_model(model_params)
        fresh.load_state_dict(state)
        return method(fresh, rate)

    dense_bytes = compression.state_dict_bytes(dense)
    dense_acc = accuracy(dense, test)
    shipped = (own.sparsity, own.bits)
    settings = {(s, b) for s in own.sweep_sparsities for b in own.sweep_bits} | {shipped}
    centroid_opt = dataclasses.replace(opt, lr=own.centroid_lr)
    table, files = compression.compress_grid(
        sorted(settings),
        prune,
        Retrainer(train, val, centroid_opt, own.centroid_epochs, device),
        val,
        test,
        dense_bytes=dense_bytes,
        dense_test_accuracy=dense_acc,
        seed=own.seed,
    )

    write_bytes(args.out, files[shipped])
    restored = codec.load(args.out)  # what is reported is what the file on disk holds
    test_acc = accuracy(restored, test)
    size = args.out.stat().st_size
    row = table[(table["sparsity"] == own.sparsity) & (table["bits"] == own.bits)].iloc[0]
    write_csv(args.csv, table)
    plots.accuracy_vs_size(table, dense_bytes, dense_acc, shipped, args.png)
    write_json(
        args.metrics,
        {
            "dense_bytes": dense_bytes,
            "compressed_bytes": size,
            "ratio": dense_bytes / size,
            "test_accuracy": test_acc,
            "dense_test_accuracy": dense_acc,
            "accuracy_drop": 100 * (dense_acc - test_acc),
            "val_accuracy": accuracy(restored, val),
            "pruned_test_accuracy": float(row["pruned_test_accuracy"]),
            "sparsity": sparsity(restored)["total"],
            "bits": own.bits,
            "bits_per_weight": float(row["bits_per_weight"]),
        },
    )
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(
        f"\n{args.out}: {size} bytes, {dense_bytes / size:.1f}x smaller than the dense state_dict "
        f"({dense_bytes} bytes); test accuracy {test_acc:.4f} (dense {dense_acc:.4f})"
    )


if __name__ == "__main__":
    run_stage(main)
