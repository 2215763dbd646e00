"""Train / validation / test splits of MNIST, stored as uint8 tensors and loaded scaled to [0, 1]."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from nncompress.errors import DataError
from nncompress.fileio import save_torch

if TYPE_CHECKING:
    from nncompress.config import SplitConfig

SPLITS = ("train", "val", "test")
Split = tuple[torch.Tensor, torch.Tensor]  # images (N, 784) float32 in [0, 1], labels (N,) int64


def make_splits(raw: dict[str, np.ndarray], params: SplitConfig) -> dict[str, dict[str, torch.Tensor]]:
    """Slice the training file into train and validation, and take the test file's first images.

    Without shuffling this is the reference split: training-file images [offset, offset + train)
    to train and the next `val_size` to validate. With shuffling, the training file is permuted
    with `seed` first.
    """
    n_train_file = len(raw["train_images"])
    end = params.offset + params.train_size + params.val_size
    if end > n_train_file:
        raise DataError(f"the training file has {n_train_file} images, the split needs {end}")
    if params.test_size > len(raw["test_images"]):
        raise DataError(f"the test file has {len(raw['test_images'])} images, split.test_size is {params.test_size}")
    order = np.arange(n_train_file)
    if params.shuffle:
        order = np.random.default_rng(params.seed).permutation(n_train_file)
    train_idx = order[params.offset : params.offset + params.train_size]
    val_idx = order[params.offset + params.train_size : end]

    def pack(images: np.ndarray, labels: np.ndarray) -> dict[str, torch.Tensor]:
        return {
            "images": torch.from_numpy(np.ascontiguousarray(images)),
            "labels": torch.from_numpy(labels.astype(np.int64)),
        }

    return {
        "train": pack(raw["train_images"][train_idx], raw["train_labels"][train_idx]),
        "val": pack(raw["train_images"][val_idx], raw["train_labels"][val_idx]),
        "test": pack(raw["test_images"][: params.test_size], raw["test_labels"][: params.test_size]),
    }


def save_splits(splits: dict[str, dict[str, torch.Tensor]], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, tensors in splits.items():
        save_torch(out_dir / f"{name}.pt", tensors)


def load_split(split_dir: Path, name: str) -> Split:
    """Load one split as flat float images in [0, 1] and int64 labels."""
    path = split_dir / f"{name}.pt"
    if not path.is_file():
        raise DataError(f"{path}: missing (run the split stage first: dvc repro split)")
    try:
        data = torch.load(path, weights_only=True)
        images, labels = data["images"], data["labels"]
    except Exception as exc:  # torch raises many types for a bad file; all mean "unreadable"
        raise DataError(f"{path}: not a readable split file ({type(exc).__name__})") from None
    if not (
        isinstance(images, torch.Tensor)
        and isinstance(labels, torch.Tensor)
        and images.dtype == torch.uint8
        and images.shape[1:] == (28, 28)
        and labels.shape == (len(images),)
    ):
        raise DataError(f"{path}: expected uint8 images (N, 28, 28) and N labels")
    return images.reshape(len(images), -1).float().div_(255.0), labels


def load_splits(split_dir: Path) -> tuple[Split, Split, Split]:
    """The train, validation and test splits."""
    train, val, test = (load_split(split_dir, name) for name in SPLITS)
    return train, val, test
