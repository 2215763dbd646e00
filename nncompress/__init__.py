"""Reproducible pruning and compression of neural networks (the DVC pipeline's shared package).

config, schema   params.yaml: its typed sections and one-line errors
data/            MNIST download and verification, train / validation / test splits
model, training  the network, checkpoints, SGD training and evaluation
prune/           pruning: criteria and scope (masks), schedules, retraining, and the
                 registry of named methods (prune/methods/, one module each)
sweep            a method swept over compression rates, its CSV table and JSON metrics
parallel         independent jobs (sweep points, compress settings) on every core or on Ray
compress/        weight sharing, the .nnc file format (and what `nncompress info` says of it),
                 the size/accuracy grid
export           ONNX export checked by ONNX Runtime, latencies: the export stage
cli, predict     the `nncompress` command (info, export, eval) and any model file as logits
plots            the pictures
runner, fileio   what every stage script shares: one-line errors, atomic writes
"""

__version__ = "0.3.0"
