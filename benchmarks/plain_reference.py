"""The reference experiment as one plain PyTorch script: the yardstick for the DVC pipeline.

What the course notebook did, without its per-iteration logging: read the four MNIST files, train
the 784-256-10 sigmoid MLP for 40 epochs (SGD, lr 0.01, momentum 0.9, batches of 32 in file order)
on images 0..4095, then prune a fresh copy at rates 0, 0.1, ..., 0.9 with random and with
layer-wise magnitude pruning (torch.nn.utils.prune, no retraining), measuring validation
(images 4096..5119) and test accuracy at each rate. No package of this project is used.

Usage: python benchmarks/plain_reference.py MNIST_DIR
"""

from __future__ import annotations

import copy
import gzip
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.utils import prune


def idx(path: Path) -> np.ndarray:
    data = gzip.decompress(path.read_bytes())
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def main() -> None:
    folder = Path(sys.argv[1])
    images = torch.from_numpy(idx(folder / "train-images-idx3-ubyte.gz").reshape(-1, 784).astype(np.float32) / 255)
    labels = torch.from_numpy(idx(folder / "train-labels-idx1-ubyte.gz").astype(np.int64))
    test_x = torch.from_numpy(idx(folder / "t10k-images-idx3-ubyte.gz").reshape(-1, 784).astype(np.float32) / 255)
    test_y = torch.from_numpy(idx(folder / "t10k-labels-idx1-ubyte.gz").astype(np.int64))
    x, y, val_x, val_y = images[:4096], labels[:4096], images[4096:5120], labels[4096:5120]

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, 256), nn.Sigmoid(), nn.Dropout(0.15), nn.Linear(256, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(40):
        for i in range(0, len(x), 32):
            optimizer.zero_grad()
            loss_fn(model(x[i : i + 32]), y[i : i + 32]).backward()
            optimizer.step()
    print(f"dense: validation {accuracy(model, val_x, val_y):.4f}, test {accuracy(model, test_x, test_y):.4f}")

    for name, method in (("random", prune.random_unstructured), ("magnitude", prune.l1_unstructured)):
        for rate in [i / 10 for i in range(10)]:
            pruned = copy.deepcopy(model)
            for layer in (pruned[0], pruned[3]):
                method(layer, "weight", amount=rate)
            val, test = accuracy(pruned, val_x, val_y), accuracy(pruned, test_x, test_y)
            print(f"{name} {rate:.1f}: validation {val:.4f}, test {test:.4f}")


if __name__ == "__main__":
    main()
