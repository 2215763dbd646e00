"""Versions 1 and 2 of the .nnc format, read only (the encoder writes version 3; the layouts are
described in nncompress.compress.codec): their JSON metadata checked on its own and against the
network it rebuilds, their raw tables read and their stream decoded (every mask by columns, shrunk
towards the layer's density with weight 2; the codes with the frequencies of the metadata's
counts). And the information a layer's symbols carry under these models (information_bits).
"""

from __future__ import annotations

import dataclasses
import json
import math
import struct
from typing import Any

import constriction
import numpy as np
import torch
from torch import nn

from nncompress.compress.entropy import range_decoder
from nncompress.compress.layer_coding import column_probabilities, decode_columns, matrix
from nncompress.compress.network import (
    KINDS,
    MAX_PARAMETERS,
    Decoded,
    build,
    rebuild,
    section_of,
    shapes_of,
    state_key,
)
from nncompress.compress.quantize import MAX_BITS, SharedLayer
from nncompress.nets import NetConfig
from nncompress.nets.mlp import ACTIVATIONS, MAX_HIDDEN, MLPConfig
from nncompress.nets.registry import IN_FEATURES, NUM_CLASSES

_META_LEN = {1: struct.Struct("<H"), 2: struct.Struct("<I")}
_PRIOR = 2.0  # weight, in rows, of the layer's overall density in each column's estimate


def _column_probabilities(ones_before: np.ndarray, row: int | np.ndarray, density: float) -> np.ndarray:
    """P(weight (row, j) is kept) under the mask model of versions 1 and 2."""
    return column_probabilities(ones_before, row, density, _PRIOR)


def _categorical(counts: list[int]) -> Any:
    """The model of a layer's codes: the frequencies of its code counts."""
    return constriction.stream.model.Categorical(np.asarray(counts, dtype=np.float64), perfect=False)


@dataclasses.dataclass(frozen=True)
class _Spec:
    """One layer as the file holds it."""

    name: str
    shape: tuple[int, ...]  # the weight's
    biases: int  # float16 biases in its table
    nnz: int
    counts: list[int]


def _check_layer(layer: Any) -> None:
    """A layer's name, shape, nnz and counts, checked on their own (shapes against the network later)."""
    if not isinstance(layer, dict) or set(layer) != {"name", "shape", "nnz", "counts"}:
        raise ValueError("a layer is not {name, shape, nnz, counts}")
    name, shape, nnz, counts = layer["name"], layer["shape"], layer["nnz"], layer["counts"]
    if not isinstance(name, str):
        raise ValueError(f"layer name {name!r} is not a string")
    if not isinstance(shape, list) or len(shape) not in KINDS or any(type(n) is not int or n < 1 for n in shape):
        raise ValueError(f"{name} has shape {shape!r}, not 2 or 4 positive sizes")
    if type(nnz) is not int or not 0 <= nnz <= math.prod(shape):
        raise ValueError(f"{name} has {nnz!r} nonzero weights")
    _check_counts(name, nnz, counts)


def _check_counts(name: str, nnz: int, counts: Any) -> None:
    valid = isinstance(counts, list) and len(counts) <= 2**MAX_BITS
    if not valid or any(type(c) is not int or c < 0 for c in counts):
        raise ValueError(f"{name} code counts are not up to {2**MAX_BITS} counts")
    if sum(counts) != nnz or (nnz and not counts):
        raise ValueError(f"{name} code counts do not add up to its {nnz} nonzero weights")


def _check_meta_v1(meta: Any) -> tuple[NetConfig, list[_Spec]]:
    """Validate the JSON of a version-1 file (the one-hidden-layer MLP); return (its section, layers)."""
    if not isinstance(meta, dict) or set(meta) != {"model", "layers"}:
        raise ValueError("metadata is not {model, layers}")
    arch, layers = meta["model"], meta["layers"]
    if not isinstance(arch, dict) or set(arch) != {"hidden_size", "activation", "dropout"}:
        raise ValueError("model metadata is not {hidden_size, activation, dropout}")
    hidden = arch["hidden_size"]
    if type(hidden) is not int or not 0 < hidden <= MAX_HIDDEN:
        raise ValueError(f"hidden_size {hidden!r} outside 1..{MAX_HIDDEN}")
    if arch["activation"] not in ACTIVATIONS:
        raise ValueError(f"unknown activation {arch['activation']!r}")
    if type(arch["dropout"]) not in (int, float) or not 0 <= arch["dropout"] < 1:
        raise ValueError(f"dropout {arch['dropout']!r} outside [0, 1)")
    expected = {"fc1": [hidden, IN_FEATURES], "fc2": [NUM_CLASSES, hidden]}
    names = [x.get("name") if isinstance(x, dict) else None for x in layers] if isinstance(layers, list) else None
    if names != list(expected):
        raise ValueError("layers are not fc1, fc2")
    specs = []
    for layer in layers:
        name, shape, nnz, counts = layer["name"], layer.get("shape"), layer.get("nnz"), layer.get("counts")
        if shape != expected[name]:
            raise ValueError(f"{name} has shape {shape!r}, expected {expected[name]}")
        if type(nnz) is not int or not 0 <= nnz <= shape[0] * shape[1]:
            raise ValueError(f"{name} has {nnz!r} nonzero weights")
        _check_counts(name, nnz, counts)
        specs.append(_Spec(name, tuple(shape), shape[0], nnz, counts))
    net = MLPConfig(hidden=[hidden], activation=arch["activation"], dropout=float(arch["dropout"]))
    return net, specs


def _check_meta_v2(meta: Any) -> tuple[NetConfig, list[dict[str, Any]]]:
    """Validate the JSON of a version-2 file on its own; return (its section, layers)."""
    if not isinstance(meta, dict) or set(meta) != {"model", "layers"}:
        raise ValueError("metadata is not {model, layers}")
    layers = meta["layers"]
    if not isinstance(layers, list) or not layers:
        raise ValueError("layers are not a non-empty list")
    for layer in layers:
        _check_layer(layer)
    if sum(math.prod(layer["shape"]) for layer in layers) > MAX_PARAMETERS:
        raise ValueError(f"more than {MAX_PARAMETERS:,} weights")
    return section_of(meta["model"]), layers


def _match(model: nn.Module, layers: list[dict[str, Any]]) -> list[_Spec]:
    """The file's layers against the rebuilt network's: the same names, in order, and shapes."""
    shapes = shapes_of(model)
    names = [name for name, _, _ in shapes]
    if [layer["name"] for layer in layers] != names:
        raise ValueError(f"layers {[layer['name'] for layer in layers]} are not the network's {names}")
    for layer, (name, shape, _) in zip(layers, shapes, strict=True):
        if tuple(layer["shape"]) != shape:
            raise ValueError(f"{name} has shape {layer['shape']}, the network's is {list(shape)}")
    return [
        _Spec(name, shape, shape[0] if bias else 0, layer["nnz"], layer["counts"])
        for layer, (name, shape, bias) in zip(layers, shapes, strict=True)
    ]


def decode_body(body: bytes, version: int, crc: int) -> Decoded:
    """A version-1 or version-2 body: the metadata, the network it rebuilds, the tables, the stream."""
    head = _META_LEN[version]
    (meta_len,) = head.unpack_from(body)
    offset = head.size + meta_len
    if offset > len(body):
        raise ValueError("metadata runs past the end")
    meta = json.loads(body[head.size : offset].decode())
    if version == 1:
        net, specs = _check_meta_v1(meta)
        model = build(net)
    else:
        net, layers = _check_meta_v2(meta)
        model = rebuild(net, lambda probe: _match(probe, layers))
        specs = _match(model, layers)
    tables = []
    for spec in specs:
        k = len(spec.counts)
        end = offset + 4 * k + 2 * spec.biases
        if end > len(body):
            raise ValueError("tables run past the end")
        centroids = np.frombuffer(body, "<f4", k, offset).astype(np.float32)
        bias = np.frombuffer(body, "<f2", spec.biases, offset + 4 * k).astype(np.float32)
        tables.append((centroids, bias))
        offset = end
    decoder = range_decoder(body, offset)
    state, layers_out = {}, {}
    for spec, (centroids, bias) in zip(specs, tables, strict=True):
        name, nnz, counts = spec.name, spec.nnz, spec.counts
        rows = spec.shape[0]
        mask = decode_columns(decoder, (rows, math.prod(spec.shape) // rows), nnz, _PRIOR).reshape(spec.shape)
        if int(mask.sum()) != nnz:
            raise ValueError(f"{name}: mask holds {int(mask.sum())} weights, metadata says {nnz}")
        codes = decoder.decode(_categorical(counts), nnz).astype(np.uint8) if nnz else np.zeros(0, np.uint8)
        if nnz and np.bincount(codes, minlength=len(counts)).tolist() != counts:
            raise ValueError(f"{name}: decoded codes do not match their counts")
        layers_out[name] = SharedLayer(mask, codes, centroids)
        state[state_key(name, "weight")] = torch.from_numpy(layers_out[name].dense())
        if spec.biases:
            state[state_key(name, "bias")] = torch.from_numpy(bias)
    return Decoded.loading(
        model,
        state,
        version=version,
        crc=crc,
        metadata=head.size + meta_len,
        net=net,
        layers=layers_out,
        tables={spec.name: 4 * len(spec.counts) + 2 * spec.biases for spec in specs},
    )


def information_bits(layer: SharedLayer) -> tuple[float, float]:
    """(mask, codes): the bits a layer's symbols carry under the models of versions 1 and 2.

    The range coder's output comes within a few bytes of their sum over all layers, so this is how
    the one shared stream of such a file splits between layers (an estimate: the coder rounds
    probabilities). A version-3 file's are in its Layout (`describe`).
    """
    mask = matrix(layer.mask)
    rows = mask.astype(np.float64)
    ones_before = np.cumsum(rows, axis=0) - rows
    row_index = np.arange(mask.shape[0], dtype=np.float64).reshape(-1, 1)
    p_kept = _column_probabilities(ones_before, row_index, mask.mean()) if mask.size else rows
    p = np.clip(np.where(mask, p_kept, 1 - p_kept), 1e-12, 1.0)
    mask_bits = float(-np.log2(p).sum())
    counts = np.bincount(layer.codes, minlength=len(layer.centroids)).astype(np.float64)
    nonzero = counts[counts > 0]
    code_bits = float(-(nonzero * np.log2(nonzero / nonzero.sum())).sum()) if len(nonzero) else 0.0
    return mask_bits, code_bits
