"""PNG pictures of the data, the training run and the sweeps (DVC renders the CSVs interactively)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display needed

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from nncompress.fileio import atomic_path  # noqa: E402


def _save(fig: Figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def sample_grid(images: torch.Tensor, labels: torch.Tensor, path: Path, rows: int = 3, cols: int = 6) -> None:
    """The first rows x cols images with their labels, as the reference showed them."""
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.3, rows * 1.5))
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(images):
            ax.imshow(images[i].reshape(28, 28).numpy(), cmap="gray_r")
            ax.set_title(str(int(labels[i])), fontsize=10)
    fig.suptitle(f"First {rows * cols} training images")
    _save(fig, path)


def loss_curve(log: pd.DataFrame, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(log["iteration"], log["loss"], color="tab:red")
    ax.set(xlabel="iteration", ylabel="cross-entropy loss", title="Training loss")
    ax.grid(alpha=0.3)
    _save(fig, path)


def accuracy_curve(log: pd.DataFrame, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(log["iteration"], log["train_accuracy"], label="train")
    ax.plot(log["iteration"], log["val_accuracy"], label="validation")
    ax.set(xlabel="iteration", ylabel="accuracy", title="Train / validation accuracy")
    ax.grid(alpha=0.3)
    ax.legend()
    _save(fig, path)


def accuracy_vs_rate(
    tables: Mapping[str, pd.DataFrame],
    aucs: Mapping[str, float],
    path: Path,
    references: Mapping[str, float] | None = None,
) -> None:
    """Test accuracy of every method against compression rate (left) and against the fraction of
    weights kept on a log scale (right), where 90-99% sparsity is legible. Shaded bands are +-1 std
    over seeds; dashed lines are reference accuracies such as the dense model's."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for method, table in tables.items():
        kept = 1 - table["compression_rate"]
        mean, std = table["test_accuracy"], table.get("test_accuracy_std")
        for ax, x in ((left, table["compression_rate"]), (right, kept)):
            (line,) = ax.plot(x, mean, marker="o", markersize=3, label=f"{method} (AUC {aucs[method]:.3f})")
            if std is not None and (std > 0).any():
                ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    for (name, value), style in zip((references or {}).items(), ("--", ":", "-."), strict=False):
        for ax in (left, right):
            ax.axhline(value, linestyle=style, linewidth=1, color="gray", label=f"{name} ({value:.3f})")
    left.set(xlabel="compression rate (fraction of weights removed)", ylabel="test accuracy", ylim=(0, 1))
    right.set(xlabel="fraction of weights kept (log scale)", ylabel="test accuracy", xscale="log")
    right.invert_xaxis()
    right.set_ylim(0.5, max(0.95, *(references or {}).values(), *(t["test_accuracy"].max() for t in tables.values())))
    for ax in (left, right):
        ax.grid(alpha=0.3, which="both")
    left.legend(loc="lower left", fontsize=8)
    fig.suptitle("Test accuracy vs compression")
    _save(fig, path)


def accuracy_vs_size(
    table: pd.DataFrame, dense_bytes: int, dense_accuracy: float, shipped: tuple[float, int], path: Path
) -> None:
    """Test accuracy of each decoded file against its size (log scale), one line per bit width,
    with the dense model, the 0.5-point tolerance and the 50x / 100x sizes marked."""
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for bits, group in table.groupby("bits"):
        group = group.sort_values("bytes")
        ax.plot(group["bytes"], group["test_accuracy"], marker="o", markersize=3, label=f"{bits} bits")
    ship = table[(table["sparsity"] == shipped[0]) & (table["bits"] == shipped[1])]
    ax.plot(
        ship["bytes"],
        ship["test_accuracy"],
        marker="*",
        markersize=14,
        color="black",
        linestyle="none",
        label=f"shipped: {shipped[0]:.0%} sparse, {shipped[1]} bits",
    )
    ax.plot(
        [dense_bytes],
        [dense_accuracy],
        marker="s",
        color="gray",
        linestyle="none",
        label=f"dense, 4 B per parameter ({dense_bytes / 1000:.0f} kB)",
    )
    ax.axhline(dense_accuracy - 0.005, linestyle="--", linewidth=1, color="gray", label="dense - 0.5 points")
    for factor, style in ((50, ":"), (100, "-.")):
        ax.axvline(dense_bytes / factor, linestyle=style, linewidth=1, color="tab:red", label=f"{factor}x smaller")
    ax.set(xscale="log", xlabel="file size in bytes (log scale)", ylabel="test accuracy (decoded model)")
    low = max(0.5, min(table["test_accuracy"].min(), dense_accuracy - 0.01) - 0.01)
    ax.set_ylim(low, max(table["test_accuracy"].max(), dense_accuracy) + 0.005)
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("Accuracy vs file size: pruning + weight sharing + entropy coding")
    _save(fig, path)
