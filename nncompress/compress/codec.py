"""The compressed model file (.nnc): sparse, weight-shared layers, entropy coded; never pickle.

Layout (little-endian):

    magic b"NNCZ" | version u8 | body length u32 | CRC-32 of body u32 | body

    body = meta length u16 | meta (UTF-8 JSON: the MLP's shape, and per layer its name, shape,
           number of nonzero weights and code counts)
         | per layer: centroids f32[k], bias f16[rows]
         | range-coded stream (u32 words): per layer, the nonzero mask row by row, then the codes

Positions are coded as a bitmask with an adaptive probability per column (an input pixel is kept
in about as many neurons as it was in the rows before), codes with their measured frequencies;
constriction's range coder turns these probabilities into bits at their entropy. Reading a file
only parses numbers and JSON, so a hostile file cannot run code; the CRC catches corruption.
"""

from __future__ import annotations

import dataclasses
import json
import struct
import zlib
from pathlib import Path
from typing import Any

import constriction
import numpy as np
import torch

from nncompress.compress.quantize import MAX_BITS, SharedLayer
from nncompress.errors import CheckpointError
from nncompress.fileio import write_bytes
from nncompress.model import ACTIVATIONS, IN_FEATURES, MAX_HIDDEN, MLP, NUM_CLASSES

MAGIC = b"NNCZ"
VERSION = 1
_HEAD = struct.Struct("<4sBII")  # magic, version, body length, CRC-32 of the body
_META_LEN = struct.Struct("<H")
_PRIOR = 2.0  # weight, in rows, of the layer's overall density in each column's estimate


def _column_probabilities(ones_before: np.ndarray, row: int, density: float) -> np.ndarray:
    """P(weight (row, j) is kept) from column j's rows above it, shrunk towards the layer density."""
    return (ones_before + _PRIOR * density) / (row + _PRIOR)


def _bernoulli() -> Any:
    return constriction.stream.model.Bernoulli(perfect=False)


def _categorical(counts: list[int]) -> Any:
    return constriction.stream.model.Categorical(np.asarray(counts, dtype=np.float64), perfect=False)


def _encode_mask(encoder: Any, mask: np.ndarray) -> None:
    rows = mask.astype(np.int32)
    ones_before = np.cumsum(rows, axis=0) - rows  # per position: kept weights above it in its column
    row_index = np.arange(mask.shape[0], dtype=np.float64).reshape(-1, 1)
    probs = _column_probabilities(ones_before.astype(np.float64), row_index, mask.mean())
    encoder.encode(rows.ravel(), _bernoulli(), probs.ravel())


def _decode_mask(decoder: Any, shape: tuple[int, int], nnz: int) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    ones_before = np.zeros(shape[1], dtype=np.float64)
    density = nnz / (shape[0] * shape[1])
    for row in range(shape[0]):
        bits = decoder.decode(_bernoulli(), _column_probabilities(ones_before, row, density))
        mask[row] = bits.astype(bool)
        ones_before += bits
    return mask


def encode(model: MLP, layers: dict[str, SharedLayer]) -> bytes:
    """The file's bytes for `model`, whose Linear weights are the shared `layers` (biases kept as
    float16). The MLP's activation and dropout are recorded so the loader rebuilds the same model."""
    meta: dict[str, Any] = {
        "model": {
            "hidden_size": model.fc1.out_features,
            "activation": type(model.act).__name__.lower(),
            "dropout": model.dropout.p,
        },
        "layers": [],
    }
    tables, encoder = [], constriction.stream.queue.RangeEncoder()
    for name in ("fc1", "fc2"):
        layer, bias = layers[name], getattr(model, name).bias.detach().cpu().numpy()
        counts = np.bincount(layer.codes, minlength=len(layer.centroids)).tolist()
        nnz = int(layer.mask.sum())
        meta["layers"].append({"name": name, "shape": list(layer.mask.shape), "nnz": nnz, "counts": counts})
        tables += [layer.centroids.astype("<f4").tobytes(), bias.astype("<f2").tobytes()]
        _encode_mask(encoder, layer.mask)
        if len(layer.codes):
            encoder.encode(layer.codes.astype(np.int32), _categorical(counts))
    meta_bytes = json.dumps(meta, separators=(",", ":")).encode()
    words = encoder.get_compressed().astype("<u4").tobytes()
    body = _META_LEN.pack(len(meta_bytes)) + meta_bytes + b"".join(tables) + words
    return _HEAD.pack(MAGIC, VERSION, len(body), zlib.crc32(body)) + body


def save(path: str | Path, model: MLP, layers: dict[str, SharedLayer]) -> int:
    """Write the file atomically; return its size in bytes."""
    data = encode(model, layers)
    write_bytes(path, data)
    return len(data)


def _check_meta(meta: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Validate the JSON against the one model this format holds; return (model, layers)."""
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
    for layer in layers:
        name, shape, nnz, counts = layer["name"], layer.get("shape"), layer.get("nnz"), layer.get("counts")
        if shape != expected[name]:
            raise ValueError(f"{name} has shape {shape!r}, expected {expected[name]}")
        if type(nnz) is not int or not 0 <= nnz <= shape[0] * shape[1]:
            raise ValueError(f"{name} has {nnz!r} nonzero weights")
        valid = isinstance(counts, list) and len(counts) <= 2**MAX_BITS
        if not valid or any(type(c) is not int or c < 0 for c in counts):
            raise ValueError(f"{name} code counts are not up to {2**MAX_BITS} counts")
        if sum(counts) != nnz or (nnz and not counts):
            raise ValueError(f"{name} code counts do not add up to its {nnz} nonzero weights")
    return arch, layers


def decode(data: bytes, source: str = "file") -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, SharedLayer]]:
    """Parse and check the bytes; return (model arguments, state_dict, shared layers).

    Every way a file can be wrong is a CheckpointError naming `source` and the problem.
    """
    if len(data) < _HEAD.size:
        raise CheckpointError(f"{source}: truncated ({len(data)} bytes, shorter than the {_HEAD.size}-byte header)")
    magic, version, length, crc = _HEAD.unpack_from(data)
    if magic != MAGIC:
        raise CheckpointError(f"{source}: not a compressed model file (starts with {magic!r}, expected {MAGIC!r})")
    if version != VERSION:
        raise CheckpointError(f"{source}: format version {version}, this reader supports version {VERSION}")
    body = data[_HEAD.size :]
    if len(body) != length:
        what = "truncated" if len(body) < length else "has trailing bytes"
        raise CheckpointError(f"{source}: {what} (header says {length} bytes of content, found {len(body)})")
    if zlib.crc32(body) != crc:
        raise CheckpointError(f"{source}: corrupted (CRC-32 mismatch)")
    try:
        return _decode_body(body)
    except (ValueError, KeyError, TypeError, RecursionError, AssertionError, struct.error, UnicodeDecodeError) as exc:
        # Only a file written by another encoder (its CRC is right) can get here; constriction
        # reports a stream its models cannot have produced with an AssertionError.
        raise CheckpointError(f"{source}: invalid content ({exc})") from None


def _decode_body(body: bytes) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, SharedLayer]]:
    (meta_len,) = _META_LEN.unpack_from(body)
    arch, metas = _check_meta(json.loads(body[_META_LEN.size : _META_LEN.size + meta_len].decode()))
    offset = _META_LEN.size + meta_len
    tables = []
    for meta in metas:
        k, rows = len(meta["counts"]), meta["shape"][0]
        end = offset + 4 * k + 2 * rows
        if end > len(body):
            raise ValueError("tables run past the end")
        centroids = np.frombuffer(body, "<f4", k, offset).astype(np.float32)
        bias = np.frombuffer(body, "<f2", rows, offset + 4 * k).astype(np.float32)
        tables.append((centroids, bias))
        offset = end
    if (len(body) - offset) % 4:
        raise ValueError("the coded stream is not whole 32-bit words")
    decoder = constriction.stream.queue.RangeDecoder(np.frombuffer(body, "<u4", offset=offset).astype(np.uint32))
    state, layers = {}, {}
    for meta, (centroids, bias) in zip(metas, tables, strict=True):
        name, nnz, counts = meta["name"], meta["nnz"], meta["counts"]
        mask = _decode_mask(decoder, tuple(meta["shape"]), nnz)
        if int(mask.sum()) != nnz:
            raise ValueError(f"{name}: mask holds {int(mask.sum())} weights, metadata says {nnz}")
        codes = decoder.decode(_categorical(counts), nnz).astype(np.uint8) if nnz else np.zeros(0, np.uint8)
        if nnz and np.bincount(codes, minlength=len(counts)).tolist() != counts:
            raise ValueError(f"{name}: decoded codes do not match their counts")
        layers[name] = SharedLayer(mask, codes, centroids)
        state[f"{name}.weight"] = torch.from_numpy(layers[name].dense())
        state[f"{name}.bias"] = torch.from_numpy(bias)
    return arch, state, layers


def from_bytes(data: bytes, source: str = "file") -> MLP:
    """The ordinary PyTorch MLP (eval mode) that a file's bytes hold."""
    arch, state, _ = decode(data, source)
    model = MLP(arch["hidden_size"], arch["activation"], arch["dropout"])
    model.load_state_dict(state)
    return model.eval()


def read(path: str | Path) -> bytes:
    """A .nnc file's bytes; a missing or unreadable file is a CheckpointError naming it."""
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing (run the compress stage first: dvc repro compress)") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror or exc})") from None


def load(path: str | Path) -> MLP:
    """Read a .nnc file into an ordinary PyTorch MLP (eval mode)."""
    return from_bytes(read(path), str(Path(path)))


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where a file's bytes go, section by section (they add up to the file's size)."""

    version: int
    crc: int
    header: int  # magic, version, body length, CRC
    metadata: int  # the JSON and its length
    tables: dict[str, int]  # per layer: shared values (float32) and biases (float16)
    stream: int  # one range-coded stream holding every layer's mask and codes

    @property
    def total(self) -> int:
        return self.header + self.metadata + sum(self.tables.values()) + self.stream


@dataclasses.dataclass(frozen=True)
class Contents:
    """A checked file, taken apart: what `nncompress info` reports."""

    layout: Layout
    arch: dict[str, Any]  # the MLP's hidden_size, activation, dropout
    state: dict[str, torch.Tensor]  # the decoded state_dict
    layers: dict[str, SharedLayer]


def describe(data: bytes, source: str = "file") -> Contents:
    """Decode `data` with every check `decode` makes, and measure the file's sections."""
    arch, state, layers = decode(data, source)
    _, version, _, crc = _HEAD.unpack_from(data)
    (meta_len,) = _META_LEN.unpack_from(data, _HEAD.size)
    tables = {name: 4 * len(layer.centroids) + 2 * layer.mask.shape[0] for name, layer in layers.items()}
    metadata = _META_LEN.size + meta_len
    stream = len(data) - _HEAD.size - metadata - sum(tables.values())
    return Contents(Layout(version, crc, _HEAD.size, metadata, tables, stream), arch, state, layers)


def information_bits(layer: SharedLayer) -> tuple[float, float]:
    """(mask, codes): the bits a layer's symbols carry under the models the encoder codes them with.

    The range coder's output comes within a few bytes of their sum over all layers, so this is how
    the one shared stream splits between layers (an estimate: the coder rounds probabilities).
    """
    rows = layer.mask.astype(np.float64)
    ones_before = np.cumsum(rows, axis=0) - rows
    row_index = np.arange(layer.mask.shape[0], dtype=np.float64).reshape(-1, 1)
    p_kept = _column_probabilities(ones_before, row_index, layer.mask.mean()) if layer.mask.size else rows
    p = np.clip(np.where(layer.mask, p_kept, 1 - p_kept), 1e-12, 1.0)
    mask_bits = float(-np.log2(p).sum())
    counts = np.bincount(layer.codes, minlength=len(layer.centroids)).astype(np.float64)
    nonzero = counts[counts > 0]
    code_bits = float(-(nonzero * np.log2(nonzero / nonzero.sum())).sum()) if len(nonzero) else 0.0
    return mask_bits, code_bits
