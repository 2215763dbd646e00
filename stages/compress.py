"""Stage compress: prune, share weights by k-means, fine-tune the shared values, entropy code.

Writes the shipped file (models/model.nnc) for params compress.sparsity and compress.bits, and codes
every setting of the sweep grid too, reporting the accuracy of each model as decoded from its bytes.
Any network of Linear and Conv2d layers (model.arch); the file records its model section.
"""

from __future__ import annotations

from nncompress.warm import delegate

delegate(__name__)  # run in a warm stage server if one is up (nncompress/warm.py), else cold

from pathlib import Path

import torch
from torch import nn

from nncompress import config, plots
from nncompress import model as model_lib
from nncompress.compress import codec, grid
from nncompress.data import load_splits
from nncompress.errors import ParamError
from nncompress.fileio import write_bytes, write_csv, write_json
from nncompress.macs import macs
from nncompress.prune import Context
from nncompress.prune.masks import sparsity
from nncompress.prune.retrain import Retrainer
from nncompress.prune.structured import Refused, neuron_prune, shrink
from nncompress.runner import arguments, run_stage
from nncompress.training import accuracy, resolve_device

OUTPUTS = {"out": "models/model.nnc", "csv": "plots/compress.csv", "png": "plots/compress.png"}
STRUCTURED = "structured"  # the method that rebuilds the network smaller


def check_structured(params: config.Params, path: Path) -> None:
    """A ParamError unless structured pruning handles model.arch and a .nnc file can record the
    smaller network it makes of it (the file's model section is read from the layers of an MLP only):
    tried on a freshly built network at the grid's largest sparsity."""
    own = params.compress
    refusal = f"{path}: compress.method {STRUCTURED} does not work with model.arch {params.model.arch}"
    with torch.random.fork_rng(devices=[]):  # the seeded runs stay as they were
        probe = model_lib.build_model(params.model)
        try:
            neuron_prune(probe, max([own.sparsity, *own.sweep_sparsities]))
            small = shrink(probe)
        except Refused as exc:
            raise ParamError(f"{refusal}: {exc}") from None
    try:
        codec.section(small, params.model)
    except ValueError:
        raise ParamError(
            f"{refusal}: a .nnc file cannot record the smaller {type(small).__name__} it makes "
            "(a file's model section is inferred for an MLP only)"
        ) from None


def main() -> None:
    args = arguments(__doc__, metrics="metrics/compress.json", **OUTPUTS).parse_args()
    params = config.load(args.params)
    own = params.compress
    device = resolve_device(params.finetune.device, "finetune.device")
    if own.method == STRUCTURED:  # before any work
        check_structured(params, args.params)
    dense = model_lib.load_checkpoint(model_lib.build_model(params.model), args.model)
    try:  # before any work: a network the file format cannot hold
        codec.section(dense, params.model)
    except ValueError as exc:
        raise ParamError(
            f"{args.params}: model.arch {params.model.arch} cannot be written as a .nnc file: {exc}"
        ) from None
    train, val, test = load_splits(args.split_dir)
    context = Context(params, train, val, device, own.finetune_epochs)
    method_config = params.method(own.method)
    if own.finetune_epochs is not None and method_config.budget(context) != own.finetune_epochs:
        raise ParamError(
            f"{args.params}: compress.finetune_epochs replaces finetune.epochs, which compress.method "
            f"{own.method} does not use (its budget is its own section's): set it to null"
        )
    method = method_config.build(context)

    fresh = model_lib.copier(params.model, dense)

    def prune(rate: float) -> nn.Module:
        return method(fresh(), rate)

    dense_bytes = grid.fp32_bytes(dense)  # the papers' count; torch.save's file is reported beside it
    saved_bytes = grid.state_dict_bytes(dense)
    dense_acc = accuracy(dense, test)
    shipped = (own.sparsity, own.bits)
    settings = {(s, b) for s in own.sweep_sparsities for b in own.sweep_bits} | {shipped}
    centroid_device = resolve_device(own.centroid.device, "compress.centroid.device")
    table, files = grid.compress_grid(
        sorted(settings),
        prune,
        Retrainer(train, val, own.centroid, own.centroid.epochs, centroid_device),
        val,
        test,
        dense_bytes=dense_bytes,
        dense_test_accuracy=dense_acc,
        seed=own.seed,
        workers=params.sweep.workers,
        executor=params.sweep.executor,
        net=params.model,
    )

    write_bytes(args.out, files[shipped])
    restored = codec.load(args.out)  # what is reported is what the file on disk holds
    test_acc = accuracy(restored, test)
    size = args.out.stat().st_size
    row = table[(table["sparsity"] == own.sparsity) & (table["bits"] == own.bits)].iloc[0]
    shipped_sparsity = sparsity(restored)
    write_csv(args.csv, table)
    plots.accuracy_vs_size(table, dense_bytes, dense_acc, shipped, args.png)
    write_json(
        args.metrics,
        {
            "dense_bytes": dense_bytes,
            "state_dict_bytes": saved_bytes,
            "compressed_bytes": size,
            "ratio": dense_bytes / size,
            "state_dict_ratio": saved_bytes / size,
            "test_accuracy": test_acc,
            "dense_test_accuracy": dense_acc,
            "accuracy_drop": 100 * (dense_acc - test_acc),
            "val_accuracy": accuracy(restored, val),
            "pruned_test_accuracy": float(row["pruned_test_accuracy"]),
            "sparsity": shipped_sparsity.pop("total"),
            "layer_sparsity": shipped_sparsity,  # per prunable layer (global pruning spreads it unevenly)
            "macs": macs(restored),  # per image, nonzero weights only
            "bits": own.bits,
            "finetune_epochs": method_config.budget(context),  # the method's retraining per sparsity
            "bits_per_weight": float(row["bits_per_weight"]),
        },
    )
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(
        f"\n{args.out}: {size} bytes, {dense_bytes / size:.1f}x smaller than the dense network's fp32 "
        f"parameters ({dense_bytes} bytes; {saved_bytes / size:.1f}x its torch.save state_dict); "
        f"test accuracy {test_acc:.4f} (dense {dense_acc:.4f})"
    )


if __name__ == "__main__":
    run_stage(main)
