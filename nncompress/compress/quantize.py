"""Weight sharing (Han et al. 2016): each layer's surviving weights become one of 2**bits shared
values found by k-means, then the shared values (centroids) are fine-tuned through the network.

The layers are those pruning acts on (nncompress.prune.masks.prunable): every Linear weight (out x
in) and every Conv2d kernel (out x in x kh x kw), each one tensor with its own shared values; a
conv kernel's entries are clustered one by one, as a Linear's weights are."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from nncompress.prune.masks import prunable

MAX_BITS = 8  # codes are stored as bytes


@dataclasses.dataclass
class SharedLayer:
    """A sparse, weight-shared weight tensor: weight[mask] = centroids[codes], the kept weights in
    row-major (C) order, which for a Conv2d kernel (out, in, kh, kw) is output channel by output
    channel, each in input-channel then kernel-row order."""

    mask: np.ndarray  # bool, the weight's shape (2-d for a Linear, 4-d for a Conv2d)
    codes: np.ndarray  # uint8, one per True in mask
    centroids: np.ndarray  # float32, at most 2**bits

    def dense(self) -> np.ndarray:
        weight = np.zeros(self.mask.shape, dtype=np.float32)
        weight[self.mask] = self.centroids[self.codes]
        return weight


def kmeans_share(weight: torch.Tensor, bits: int) -> SharedLayer:
    """Cluster the nonzero weights of a weight tensor of any shape into at most 2**bits values.

    Linear initialisation over [min, max], which Han et al. found best: it keeps centroids on the
    rare large weights that matter most. Deterministic (one k-means run from a fixed start).
    """
    from sklearn.cluster import KMeans  # here: scikit-learn takes a second to import, and only this needs it
    from sklearn.exceptions import ConvergenceWarning

    if not 1 <= bits <= MAX_BITS:
        raise ValueError(f"bits must be in 1..{MAX_BITS}, got {bits}")
    w = weight.detach().cpu().numpy().astype(np.float32)
    mask = w != 0
    values = w[mask].astype(np.float64)
    k = min(2**bits, len(np.unique(values)))
    if k == 0:
        return SharedLayer(mask, np.zeros(0, np.uint8), np.zeros(0, np.float32))
    init = np.linspace(values.min(), values.max(), k).reshape(-1, 1)
    with warnings.catch_warnings():  # fewer distinct clusters than k is fine: codes stay valid
        warnings.simplefilter("ignore", ConvergenceWarning)
        km = KMeans(n_clusters=k, init=init, n_init=1, random_state=0).fit(values.reshape(-1, 1))
    return SharedLayer(mask, km.labels_.astype(np.uint8), km.cluster_centers_.ravel().astype(np.float32))


class SharedWeight(nn.Module):
    """A parametrization that computes a layer's weight (a Linear's matrix or a Conv2d's kernel) from
    trainable centroids: gradients of the weights sharing a centroid add up on it, as in Deep
    Compression's centroid fine-tuning. Zeros stay zero and no weight changes cluster."""

    def __init__(self, layer: SharedLayer):
        super().__init__()
        self.centroids = nn.Parameter(torch.from_numpy(layer.centroids.copy()))
        self.register_buffer("codes", torch.from_numpy(layer.codes.astype(np.int64)))
        self.register_buffer("mask", torch.from_numpy(layer.mask.copy()))
        # The kept weights' flat positions, in the codes' (row-major) order. A scatter to them gives
        # what zeros.masked_scatter(mask, ...) gives, and the same gradients, bit for bit, without
        # scanning the mask at every step: 3 to 4 times faster through forward and backward.
        self.register_buffer("positions", torch.from_numpy(np.flatnonzero(layer.mask)), persistent=False)

    def forward(self, original: torch.Tensor) -> torch.Tensor:  # the original weight is ignored
        flat = torch.zeros(self.mask.numel(), dtype=self.centroids.dtype, device=self.centroids.device)
        return flat.scatter(0, self.positions, self.centroids[self.codes]).view(self.mask.shape)


def share_weights(model: nn.Module, bits: int) -> None:
    """Replace every Linear and Conv2d weight by its k-means shared version, with trainable centroids.
    Each layer's weight must be a plain tensor (pruning masks folded in: `make_permanent`)."""
    for _, module in prunable(model):
        layer = kmeans_share(module.weight, bits)
        parametrize.register_parametrization(module, "weight", SharedWeight(layer), unsafe=True)


def unshare_weights(model: nn.Module) -> dict[str, SharedLayer]:
    """Freeze the fine-tuned centroids into plain weights; return each layer's shared form, by the
    layer's name in the model (what the codec stores)."""
    layers = {}
    for name, module in prunable(model):
        shared = module.parametrizations.weight[0]
        layers[name] = SharedLayer(
            shared.mask.cpu().numpy(),
            shared.codes.cpu().numpy().astype(np.uint8),
            shared.centroids.detach().cpu().numpy().astype(np.float32),
        )
        parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    return layers
