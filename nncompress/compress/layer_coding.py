"""One layer in a version-3 .nnc file's range-coded stream: its models, the encoder's choice between
them, and the decoder's mirror of each (the format is described in nncompress.compress.codec).

In stream order: the layer's shared values (float32), two flags choosing its models, the kept-weight
mask (by columns or by rows), the codes (plain or by sign) and, if it has biases, which are stored
and the stored ones (float16). The models are nncompress.compress.entropy's; the counts of the
shared values' signs and exponents and of the stored flags are carried from layer to layer.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from nncompress.compress.entropy import (
    ADAPTIVE,
    BERNOULLI,
    UNIFORM,
    Float,
    Op,
    adaptive,
    cost,
    decode_adaptive,
    decode_floats,
    float_ops,
)

_FLAGS = 4  # per layer, one symbol of 4: bit 0, mask by rows (else by columns); bit 1, codes by sign
_COLUMN_PRIOR = 8.0  # mask by columns: weight, in rows, of the layer's density in a column's rate (2: +2% bytes)
_ROW_PRIOR = 0.5  # mask by rows: kept weights each column starts with (1: +0.4% bytes, 0.25: +0.2%)
_ROW_CAP = 0.9  # mask by rows: a count x a share passes 1 for a popular column in a dense row
_ROW_FLOOR = 1e-6  # and the least
# Each exponent's count starts small, as a layer's values share a few.
_F32 = Float("<f4", "<u4", 8, 23, 1 / 64)  # shared values
_F16 = Float("<f2", "<u2", 5, 10, 1 / 8)  # biases
PARTS = ("mask", "codes", "values", "biases")  # what a layer's share of the stream holds


def matrix(mask: np.ndarray) -> np.ndarray:
    """A weight's mask as the matrix the coder runs over: one row per output, a Conv2d's kernels flattened."""
    return mask.reshape(mask.shape[0], -1)


@dataclasses.dataclass
class Carried:
    """The adaptive counts carried from layer to layer through a file's stream."""

    values: tuple[np.ndarray, np.ndarray] = dataclasses.field(default_factory=_F32.counts)
    # whether a unit's bias is stored (symbol 1), one table for units with kept weights, one for units without
    stored: np.ndarray = dataclasses.field(default_factory=lambda: np.full((2, 2), 0.5))


@dataclasses.dataclass(frozen=True)
class Coded:
    """One layer as a version-3 stream holds it."""

    by_rows: bool  # the mask's model
    by_sign: bool  # the codes' model
    mask: np.ndarray  # bool, rows x columns
    codes: np.ndarray  # uint8
    centroids: np.ndarray  # float32
    stored: np.ndarray | None  # per unit, whether its bias is stored; None: no bias
    biases: np.ndarray  # float16, the stored ones

    def bias(self) -> np.ndarray:
        """The layer's decoded bias (float32): the stored ones, 0 for the others."""
        assert self.stored is not None
        bias = np.zeros(len(self.stored), np.float32)
        bias[self.stored] = self.biases.astype(np.float32)
        return bias


# --- the mask --------------------------------------------------------------------------------------


def column_probabilities(ones_before: np.ndarray, row: int | np.ndarray, density: float, prior: float) -> np.ndarray:
    """P(weight (row, j) is kept) from column j's rows above it, shrunk towards the layer density
    with weight `prior` (in rows)."""
    return (ones_before + prior * density) / (row + prior)


def decode_columns(decoder: Any, shape: tuple[int, int], nnz: int, prior: float) -> np.ndarray:
    """A mask matrix coded by columns (column_probabilities), row by row."""
    mask = np.zeros(shape, dtype=bool)
    ones_before = np.zeros(shape[1], dtype=np.float64)
    density = nnz / (shape[0] * shape[1])
    for row in range(shape[0]):
        bits = decoder.decode(BERNOULLI, column_probabilities(ones_before, row, density, prior))
        mask[row] = bits.astype(bool)
        ones_before += bits
    return mask


def _by_rows(above: np.ndarray, count: Any, kept_above: Any, columns: int) -> np.ndarray:
    """P(a position is kept) given its row's count: the count times the column's share of the kept
    weights in the rows above (each column starting with _ROW_PRIOR), capped."""
    return np.clip(count * (above + _ROW_PRIOR) / (kept_above + _ROW_PRIOR * columns), _ROW_FLOOR, _ROW_CAP)


def _bucket(counts: np.ndarray) -> np.ndarray:
    """Row counts as Elias-gamma buckets: count c is in bucket b when 2**b <= c + 1 < 2**(b + 1)."""
    return np.array([(int(c) + 1).bit_length() - 1 for c in counts], np.int64)


def _bucket_range(bucket: np.ndarray, columns: int) -> tuple[np.ndarray, np.ndarray]:
    """(first count, number of counts) of each bucket, for rows of `columns` weights."""
    first = (1 << bucket) - 1
    return first, np.minimum(1 << bucket, columns + 1 - first)


def _mask_ops(mask: np.ndarray, by_rows: bool) -> list[Op]:
    """A layer's mask matrix (neither empty nor full) under the model by rows or by columns."""
    rows, columns = mask.shape
    kept = mask.astype(np.float64)
    above = np.cumsum(kept, axis=0) - kept  # per position: kept weights above it in its column
    if not by_rows:
        row = np.arange(rows, dtype=np.float64).reshape(-1, 1)
        probs = column_probabilities(above, row, int(mask.sum()) / mask.size, _COLUMN_PRIOR)
        return [Op("bernoulli", mask.ravel(), probs.ravel())]
    counts = mask.sum(axis=1)
    bucket = _bucket(counts)
    first, size = _bucket_range(bucket, columns)
    wide = size > 1  # a bucket of one count needs no offset
    partial = (counts > 0) & (counts < columns)  # a row of none or all is known from its count
    kept_above = (np.cumsum(counts) - counts).reshape(-1, 1)
    probs = _by_rows(above, counts.reshape(-1, 1), kept_above, columns)
    return [
        adaptive(bucket, np.ones((1, (columns + 1).bit_length()))),
        Op("uniform", (counts - first)[wide], size[wide].astype(np.int32)),
        Op("bernoulli", mask[partial].ravel(), probs[partial].ravel()),
    ]


def _decode_mask(decoder: Any, shape: tuple[int, int], nnz: int, by_rows: bool) -> np.ndarray:
    """A mask matrix coded by _mask_ops (nothing coded for none or all kept); its counts checked."""
    rows, columns = shape
    if nnz in (0, rows * columns):
        return np.full(shape, bool(nnz))
    if not by_rows:
        return decode_columns(decoder, shape, nnz, _COLUMN_PRIOR)
    bucket = decode_adaptive(decoder, np.zeros(rows, np.int64), np.ones((1, (columns + 1).bit_length())))
    counts, size = _bucket_range(bucket, columns)
    wide = size > 1
    if wide.any():
        counts[wide] += decoder.decode(UNIFORM, size[wide].astype(np.int32))
    if int(counts.sum()) != nnz:
        raise ValueError(f"row counts add up to {int(counts.sum())} weights, the layer has {nnz}")
    mask = np.zeros(shape, dtype=bool)
    above = np.zeros(columns, dtype=np.float64)
    kept_above = 0
    for row, count in enumerate(counts.tolist()):
        if count == columns:
            bits = np.ones(columns, np.int64)
        elif count:
            bits = decoder.decode(BERNOULLI, _by_rows(above, count, kept_above, columns))
            if int(bits.sum()) != count:
                raise ValueError(f"row {row} holds {int(bits.sum())} kept weights, its count says {count}")
        else:
            continue
        mask[row] = bits.astype(bool)
        above += bits
        kept_above += count
    return mask


# --- the codes -------------------------------------------------------------------------------------


def _first_in_row(mask: np.ndarray) -> np.ndarray:
    """Per kept weight (row-major), whether it is the first of its row."""
    rows = np.nonzero(mask)[0]
    return np.r_[True, rows[1:] != rows[:-1]] if len(rows) else np.zeros(0, bool)


def _code_ops(codes: np.ndarray, mask: np.ndarray, centroids: np.ndarray, by_sign: bool) -> list[Op]:
    """The codes of a layer's kept weights, adaptive; by sign, one table per sign of the row's previous weight."""
    k = len(centroids)
    if not len(codes) or k < 2:  # nothing to say: no weight, or one value
        return []
    if not by_sign:
        return [adaptive(codes, np.ones((1, k)))]
    positive = (centroids > 0)[codes.astype(np.int64)].astype(np.int64)
    contexts = np.where(_first_in_row(mask), 2, np.r_[0, positive[:-1]])
    return [adaptive(codes, np.ones((3, k)), contexts)]


def _decode_codes(decoder: Any, mask: np.ndarray, centroids: np.ndarray, by_sign: bool) -> np.ndarray:
    """Codes coded by _code_ops, one by one: with the sign model, each one's context is its predecessor's."""
    n, k = int(mask.sum()), len(centroids)
    if not n or k < 2:
        return np.zeros(n, np.uint8)
    if not by_sign:
        return decode_adaptive(decoder, np.zeros(n, np.int64), np.ones((1, k))).astype(np.uint8)
    counts = np.ones((3, k))
    positive = (centroids > 0).tolist()
    first = _first_in_row(mask).tolist()
    codes = [0] * n
    for t in range(n):
        context = 2 if first[t] else int(positive[codes[t - 1]])
        symbol = int(decoder.decode(ADAPTIVE, counts[context : context + 1])[0])
        codes[t] = symbol
        counts[context, symbol] += 1
    return np.array(codes, np.uint8)


# --- a layer ---------------------------------------------------------------------------------------


def _layer_ops(layer: Coded, carried: Carried) -> dict[str, list[Op]]:
    """A layer's ops in stream order, by part (the flags go with the mask); `carried` updated."""
    flags = Op("uniform", np.array([int(layer.by_rows) + 2 * int(layer.by_sign)]), np.array([_FLAGS], np.int32))
    nnz = int(layer.mask.sum())
    ops = {  # in the stream's order
        "values": float_ops(layer.centroids, _F32, carried.values),
        "mask": [flags, *(_mask_ops(layer.mask, layer.by_rows) if 0 < nnz < layer.mask.size else [])],
        "codes": _code_ops(layer.codes, layer.mask, layer.centroids, layer.by_sign),
        "biases": [],
    }
    if layer.stored is not None:
        empty = ~layer.mask.any(axis=1)
        ops["biases"] = [
            adaptive(layer.stored.astype(np.int64), carried.stored, empty),
            *float_ops(layer.biases, _F16, _F16.counts()),
        ]
    return ops


def _choose(mask: np.ndarray, codes: np.ndarray, centroids: np.ndarray) -> tuple[bool, bool]:
    """(by rows, by sign): for the mask and the codes, the model that codes them in fewer bits."""
    by_rows = 0 < mask.sum() < mask.size and cost(_mask_ops(mask, True)) < cost(_mask_ops(mask, False))
    by_sign = cost(_code_ops(codes, mask, centroids, True)) < cost(_code_ops(codes, mask, centroids, False))
    return bool(by_rows), bool(by_sign)


def encode_layer(
    encoder: Any,
    mask: np.ndarray,
    codes: np.ndarray,
    centroids: np.ndarray,
    stored: np.ndarray | None,
    biases: np.ndarray,
    carried: Carried,
) -> None:
    """Code a layer: its mask matrix, codes (uint8) and shared values (float32), the mask and the
    codes each under the cheaper of their models, and if it has biases which are `stored` and those
    `biases` (float16); `carried` updated."""
    by_rows, by_sign = _choose(mask, codes, centroids)
    for ops in _layer_ops(Coded(by_rows, by_sign, mask, codes, centroids, stored, biases), carried).values():
        for op in ops:
            op.encode(encoder)


def decode_layer(
    decoder: Any, name: str, shape: tuple[int, int], nnz: int, k: int, has_bias: bool, carried: Carried
) -> Coded:
    """The layer `name` (a mask matrix of `shape` keeping `nnz` weights, `k` shared values) as the
    stream holds it, decoded and its mask's count checked; `carried` updated."""
    centroids = decode_floats(decoder, k, _F32, carried.values)
    flags = int(decoder.decode(UNIFORM, np.array([_FLAGS], np.int32))[0])
    by_rows, by_sign = bool(flags & 1), bool(flags & 2)
    mask = _decode_mask(decoder, shape, nnz, by_rows)
    if int(mask.sum()) != nnz:
        raise ValueError(f"{name}: mask holds {int(mask.sum())} weights, the file says {nnz}")
    codes = _decode_codes(decoder, mask, centroids, by_sign)
    stored, biases = None, np.zeros(0, "<f2")
    if has_bias:
        stored = decode_adaptive(decoder, (~mask.any(axis=1)).astype(np.int64), carried.stored).astype(bool)
        biases = decode_floats(decoder, int(stored.sum()), _F16, _F16.counts())
    return Coded(by_rows, by_sign, mask, codes, centroids, stored, biases)


def bits_by_part(layer: Coded, carried: Carried) -> dict[str, float]:
    """Per part (PARTS), the information in bits of a layer's symbols under the stream's models;
    `carried` updated as the stream does."""
    ops = _layer_ops(layer, carried)
    return {part: cost(ops[part]) for part in PARTS}
