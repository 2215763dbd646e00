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
class SparsityJob:
    """Every bit width at one sparsity, as a job: prune once, then share, code and decode per width.
    Seeded from (seed, sparsity) and (seed, sparsity, bits), so any process gives the same rows.
    `net` is the model section the files record (None: an MLP's, read from the model)."""

    prune: Callable[[float], torch.nn.Module]
    retrain: Retrainer | None
    val: Split
    test: Split
    dense_bytes: int
    dense_test_accuracy: float
    seed: int
    net: NetConfig | None = None

    def __call__(self, job: tuple[float, list[int]]) -> list[tuple[dict[str, Any], bytes]]:
        sparsity, widths = job
        torch.manual_seed(rate_seed(self.seed, sparsity))  # as the sweeps: same model as their row
        model = self.prune(sparsity)
        make_permanent(model)
        model = model.cpu().eval()
        pruned_acc = accuracy(model, self.test)
        results = []
        for bits in widths:
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
            results.append((row, data))
        return results


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

    `prune(sparsity)` returns the pruned, fine-tuned model; it runs once per sparsity, and each
    sparsity is one job for `workers` processes (0: every core) or Ray. Returns the table, sorted
    by (sparsity, bits), and each setting's file bytes. `net` is the network's model section, which
    each file records (params.yaml's; it may be left out for an MLP, whose section is read from it).
    """
    widths: dict[float, list[int]] = {}
    for sparsity, bits in sorted(settings):
        widths.setdefault(sparsity, []).append(bits)
    job = SparsityJob(prune, retrain, val, test, dense_bytes, dense_test_accuracy, seed, net)
    done = run_together(job, list(widths.items()), workers=workers, executor=executor, desc="compress")
    results = [result for per_sparsity in done for result in per_sparsity]
    files = {(row["sparsity"], row["bits"]): data for row, data in results}
    return pd.DataFrame([row for row, _ in results], columns=list(COLUMNS)), files
