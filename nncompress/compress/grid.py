"""Deep-Compression-style pipeline for one model: prune, share weights, code; and its size/accuracy grid.

Any network the .nnc format holds (Linear and Conv2d layers, nncompress.compress.codec): the file
records the network's model section, so each row's accuracy is that of the network decoded from it."""

from __future__ import annotations

import copy
import dataclasses
import io
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd
import torch

from nncompress.compress import codec
from nncompress.compress.quantize import SharedLayer, share_weights, unshare_weights
from nncompress.data import Split
from nncompress.macs import macs
from nncompress.nets import NetConfig
from nncompress.parallel import run_together
from nncompress.prune.masks import count_weights, make_permanent
from nncompress.prune.retrain import Retrainer
from nncompress.sweep import rate_seed
from nncompress.training import accuracy

COLUMNS = (
    "sparsity",
    "bits",
    "nonzero_weights",
    "macs",
    "bytes",
    "ratio",
    "bits_per_weight",
    "pruned_test_accuracy",
    "test_accuracy",
    "val_accuracy",
    "accuracy_drop",
)


def fp32_bytes(model: torch.nn.Module) -> int:
    """4 bytes per parameter: the dense network as the papers count it (Han et al. 2016 and after),
    which every ratio here divides by."""
    return 4 * sum(p.numel() for p in model.parameters())


def state_dict_bytes(model: torch.nn.Module) -> int:
    """Size of the fp32 state_dict as torch.save writes it: what shipping the dense model costs."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def setting_seed(seed: int, sparsity: float, bits: int) -> int:
    return rate_seed(seed, sparsity, bits)


def share_and_finetune(
    pruned: torch.nn.Module, bits: int, retrain: Retrainer | None
) -> tuple[torch.nn.Module, dict[str, SharedLayer]]:
    """k-means weight sharing on a copy of `pruned`, then centroid (and bias) fine-tuning."""
    model = copy.deepcopy(pruned)
    share_weights(model, bits)
    if retrain is not None and retrain.epochs > 0:
        retrain(model)
    layers = unshare_weights(model)
    return model.cpu().eval(), layers


def decoded(data: bytes) -> torch.nn.Module:
    """The model exactly as a user gets it from the file's bytes (rebuilt through the registry)."""
    return codec.from_bytes(data)


@dataclasses.dataclass(frozen=True)
class PruneJob:
    """One sparsity as a job: the pruned, fine-tuned model (pruning folded in, on the CPU, in eval
    mode) and its test accuracy. Seeded from (seed, sparsity), as the sweeps: the same model as
    their row at that rate, whichever process makes it."""

    prune: Callable[[float], torch.nn.Module]
    test: Split
    seed: int

    def __call__(self, sparsity: float) -> tuple[torch.nn.Module, float]:
        torch.manual_seed(rate_seed(self.seed, sparsity))
        model = self.prune(sparsity)
        make_permanent(model)
        model = model.cpu().eval()
        return model, accuracy(model, self.test)


@dataclasses.dataclass(frozen=True)
class SettingJob:
    """One (sparsity, bits) setting as a job: share the pruned model's weights, fine-tune the
    shared values, code, decode and evaluate. Seeded from (seed, sparsity, bits), so any process
    gives the same row and bytes. `net` is the model section the files record (None: an MLP's,
    read from the model)."""

    pruned: dict[float, tuple[torch.nn.Module, float]]  # PruneJob's result per sparsity
    retrain: Retrainer | None
    val: Split
    test: Split
    dense_bytes: int
    dense_test_accuracy: float
    seed: int
    net: NetConfig | None = None

    def __call__(self, setting: tuple[float, int]) -> tuple[dict[str, Any], bytes]:
        sparsity, bits = setting
        model, pruned_acc = self.pruned[sparsity]
        torch.manual_seed(setting_seed(self.seed, sparsity, bits))
        shared, layers = share_and_finetune(model, bits, self.retrain)
        data = codec.encode(shared, layers, self.net)
        restored = decoded(data)
        test_acc = accuracy(restored, self.test)
        nonzero, _ = count_weights(restored)
        row = {
            "sparsity": sparsity,
            "bits": bits,
            "nonzero_weights": nonzero,
            "macs": macs(restored),
            "bytes": len(data),
            "ratio": self.dense_bytes / len(data),
            "bits_per_weight": 8 * len(data) / max(nonzero, 1),
            "pruned_test_accuracy": pruned_acc,
            "test_accuracy": test_acc,
            "val_accuracy": accuracy(restored, self.val),
            "accuracy_drop": 100 * (self.dense_test_accuracy - test_acc),
        }
        return row, data


def compress_grid(
    settings: Sequence[tuple[float, int]],
    prune: Callable[[float], torch.nn.Module],
    retrain: Retrainer | None,
    val: Split,
    test: Split,
    *,
    dense_bytes: int,
    dense_test_accuracy: float,
    seed: int = 0,
    workers: int = 1,
    executor: str = "local",
    net: NetConfig | None = None,
) -> tuple[pd.DataFrame, dict[tuple[float, int], bytes]]:
    """Code every (sparsity, bits) setting; one row each, with the accuracy of the decoded model.

    `prune(sparsity)` returns the pruned, fine-tuned model; it runs once per sparsity. Then every
    setting shares, fine-tunes and codes that model. Both are jobs for `workers` processes (0: every
    core) or Ray, the sparsities first, then the settings: a few sparsities split unevenly over the
    workers, but their settings (a width each) split evenly, and each worker's retrain together.
    Returns the table, sorted by (sparsity, bits), and each setting's file bytes. `net` is the
    network's model section, which each file records (params.yaml's; it may be left out for an MLP,
    whose section is read from it).
    """
    ordered = sorted(set(settings))
    sparsities = sorted({sparsity for sparsity, _ in ordered})
    run = {"workers": workers, "executor": executor}
    pruned = run_together(PruneJob(prune, test, seed), sparsities, desc="compress: prune", **run)
    job = SettingJob(
        dict(zip(sparsities, pruned, strict=True)), retrain, val, test, dense_bytes, dense_test_accuracy, seed, net
    )
    results = run_together(job, ordered, desc="compress: share", **run)
    files = {(row["sparsity"], row["bits"]): data for row, data in results}
    return pd.DataFrame([row for row, _ in results], columns=list(COLUMNS)), files
