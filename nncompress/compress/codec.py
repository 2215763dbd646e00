"""The compressed model file (.nnc): sparse, weight-shared layers, entropy coded; never pickle.

Layout (little-endian), format version 3 (what `encode` writes):

    magic b"NNCZ" | version u8 | body length u32 | CRC-32 of body u32 | body

    body = varint n | n bytes of UTF-8 JSON: the network's `model` params section
         | varint: number of layers | per layer: varint nnz (kept weights), varint k (shared values)
         | range-coded stream (u32 words): every layer in turn, as below

The layers are the network's Linear and Conv2d layers (nncompress.prune.masks.prunable), in its
order. Their names and shapes are not stored: the loader rebuilds the network through the registry
(nncompress.nets: `model.arch` and its keys) and takes them from it. A Conv2d weight (out, in, kh,
kw) is coded as the out x (in * kh * kw) matrix of its kernels, row-major as the tensor lies, so a
mask row is one output unit and a column one input (for a conv, an input channel at one kernel
position). A varint is 7 bits a byte, low first, the high bit set on all bytes but the last.

No table of counts is stored: every model that is not uniform is adaptive, its counts learned from
the symbols coded before. Per layer, in this order:

  1. its k shared values, float32 exact: signs and exponents adaptive (counts carried from layer
     to layer), mantissas uniform;
  2. two flags choosing its models (one uniform symbol of 4): mask by rows, codes by sign;
  3. the kept-weight mask (unless nnz is 0 or every weight), row by row. By columns: a position's
     probability is its column's rate in the rows above, shrunk towards the layer's density. By
     rows: first each row's count (adaptive Elias-gamma bucket, uniform offset), then a position's
     probability is its row's count times its column's share of the kept weights above (rows of
     none or all skipped). The encoder takes the cheaper: by rows wins on sparse layers, whose
     rows' counts vary far more than a column model expects (many are empty);
  4. the codes (which shared value each kept weight takes, in row-major order): adaptive
     categorical, counts starting at 1; by sign, one table of counts per sign of the row's previous
     kept weight (and one for a row's first), which pays on first layers, whose units' weights
     mostly share a sign. The encoder takes the cheaper;
  5. if the layer has biases: per output unit whether its bias is stored (adaptive, with separate
     counts for units with and without kept weights, carried from layer to layer), then the stored
     biases as float16: signs and exponents adaptive, mantissas uniform.

A bias is not stored (it decodes as 0) when the network's output does not depend on it: a unit with
no path to the output, or a unit with no kept weight whose activation maps its bias to what it maps
0 to (a ReLU unit with a negative bias); see nncompress.compress.biases. The decoded network computes what the
encoder's computes, biases rounded to float16 as in every version.

The probabilities are computed from integer counts with +, x, / and clipping only (no exp or log,
which libraries round differently), so they are bit-identical on every machine; constriction's range
coder turns them into bits within a few bytes of their information. Reading a file only parses
numbers and JSON, so a hostile file cannot run code; the CRC catches corruption, and the decoder
checks every count it decodes against the varints and that no more than the coder's one word of
look-ahead follows the last symbol.

Versions 2 and 1 are still read. Version 2: body = meta length u32 | meta (UTF-8 JSON: the `model`
section, and per layer its name, weight shape, number of nonzero weights and code counts) | per
layer: centroids f32[k], bias f16[out] (none for a layer without bias) | range-coded stream: per
layer, the mask row by row (by columns, shrunk with weight 2), then the codes with the counts'
frequencies. Version 1 (the one-hidden-layer MLP): as version 2 with a u16 meta length and the
meta's `model` {hidden_size, activation, dropout}, layers fc1 and fc2.

This module holds the container (header, CRC, varints), the version-3 body around the layers, and
the API (encode, save, decode, from_bytes, read, load, describe). The rest is in:
  network.py       the layers a file holds, its model section, rebuilding the network it names;
  layer_coding.py  one layer in the version-3 stream (parts 1 to 5 above), both ways;
  entropy.py       the range coder's models: uniform, Bernoulli, adaptive counts, IEEE floats;
  biases.py        the biases the output does not depend on;
  legacy.py        the readers of versions 1 and 2.
"""

from __future__ import annotations

import dataclasses
import json
import math
import struct
import zlib
from pathlib import Path

import constriction
import numpy as np
import torch
from torch import nn

from nncompress.compress.biases import unused_biases
from nncompress.compress.entropy import range_decoder
from nncompress.compress.layer_coding import PARTS, Carried, bits_by_part, decode_layer, encode_layer, matrix
from nncompress.compress.legacy import decode_body, information_bits
from nncompress.compress.network import (
    KINDS,
    MAX_PARAMETERS,
    Decoded,
    Unregistered,
    check_size,
    layers_of,
    rebuild,
    section,
    section_of,
    shapes_of,
    state_key,
)
from nncompress.compress.quantize import MAX_BITS, SharedLayer
from nncompress.errors import CheckpointError
from nncompress.fileio import write_bytes
from nncompress.nets import NetConfig

__all__ = [
    "KINDS",
    "MAGIC",
    "MAX_PARAMETERS",
    "PARTS",
    "VERSION",
    "VERSIONS",
    "Contents",
    "Layout",
    "decode",
    "describe",
    "encode",
    "from_bytes",
    "information_bits",
    "load",
    "read",
    "save",
    "section",
]

MAGIC = b"NNCZ"
VERSION = 3  # what encode writes
VERSIONS = (1, 2, 3)  # what decode reads
_HEAD = struct.Struct("<4sBII")  # magic, version, body length, CRC-32 of the body


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _read_varint(data: bytes, offset: int, what: str) -> tuple[int, int]:
    """(the varint at `offset`, the offset after it); a ValueError if it is cut short or over 5 bytes."""
    value = 0
    for i in range(5):
        if offset + i >= len(data):
            raise ValueError(f"{what} runs past the end")
        byte = data[offset + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, offset + i + 1
    raise ValueError(f"{what} is longer than 5 bytes")


# --- encoding --------------------------------------------------------------------------------------


def _check_shared(name: str, layer: SharedLayer, module: nn.Linear | nn.Conv2d) -> None:
    """A ValueError unless `layer` is a shared form the file can hold of `module`'s weight."""
    if layer.mask.shape != tuple(module.weight.shape):
        raise ValueError(f"{name}: shared layer of shape {layer.mask.shape}, weight {tuple(module.weight.shape)}")
    k = len(layer.centroids)
    if layer.centroids.ndim != 1 or k > 2**MAX_BITS:
        raise ValueError(f"{name}: {k} shared values, at most {2**MAX_BITS}")
    codes = np.asarray(layer.codes)
    if codes.shape != (int(layer.mask.sum()),) or (len(codes) and not 0 <= codes.min() <= codes.max() < k):
        raise ValueError(f"{name}: codes are not one index into its {k} shared values per kept weight")


def encode(model: nn.Module, layers: dict[str, SharedLayer], net: NetConfig | None = None) -> bytes:
    """The file's bytes (format version 3) for `model`, whose Linear and Conv2d weights are the
    shared `layers` (biases kept as float16, but for those the output does not depend on, which
    decode as 0). `net` is the model section that builds the network (see `section`; for an MLP it
    may be left out), so the loader rebuilds the same network."""
    recorded = section(model, net)
    modules = layers_of(model)
    if set(layers) != {name for name, _ in modules}:
        raise ValueError(f"shared layers {sorted(layers)} are not the network's {[name for name, _ in modules]}")
    biases = {}
    for name, module in modules:
        _check_shared(name, layers[name], module)
        if module.bias is not None:
            biases[name] = module.bias.detach().cpu().numpy().astype("<f2")
    unused = unused_biases(model, layers, biases)
    model_json = json.dumps(recorded.model_dump(mode="json"), separators=(",", ":")).encode()
    meta = [_varint(len(model_json)), model_json, _varint(len(modules))]
    encoder, carried = constriction.stream.queue.RangeEncoder(), Carried()
    for name, _ in modules:
        layer = layers[name]
        mask, codes, centroids = matrix(layer.mask), layer.codes.astype(np.uint8), layer.centroids.astype("<f4")
        stored = ~unused.get(name, np.zeros(len(mask), bool)) if name in biases else None
        kept = biases[name][stored] if stored is not None else np.zeros(0, "<f2")
        encode_layer(encoder, mask, codes, centroids, stored, kept, carried)
        meta += [_varint(int(mask.sum())), _varint(len(centroids))]
    body = b"".join(meta) + encoder.get_compressed().astype("<u4").tobytes()
    return _HEAD.pack(MAGIC, VERSION, len(body), zlib.crc32(body)) + body


def save(path: str | Path, model: nn.Module, layers: dict[str, SharedLayer], net: NetConfig | None = None) -> int:
    """Write the file atomically; return its size in bytes."""
    data = encode(model, layers, net)
    write_bytes(path, data)
    return len(data)


# --- decoding --------------------------------------------------------------------------------------


def _versions() -> str:
    return ", ".join(map(str, VERSIONS[:-1])) + f" and {VERSIONS[-1]}"


def _decode(data: bytes, source: str) -> Decoded:
    if len(data) < _HEAD.size:
        raise CheckpointError(f"{source}: truncated ({len(data)} bytes, shorter than the {_HEAD.size}-byte header)")
    magic, version, length, crc = _HEAD.unpack_from(data)
    if magic != MAGIC:
        raise CheckpointError(f"{source}: not a compressed model file (starts with {magic!r}, expected {MAGIC!r})")
    if version not in VERSIONS:
        newer = " (written by a newer nncompress: upgrade to read it)" if version > max(VERSIONS) else ""
        raise CheckpointError(f"{source}: format version {version}, this reader supports versions {_versions()}{newer}")
    body = data[_HEAD.size :]
    if len(body) != length:
        what = "truncated" if len(body) < length else "has trailing bytes"
        raise CheckpointError(f"{source}: {what} (header says {length} bytes of content, found {len(body)})")
    if zlib.crc32(body) != crc:
        raise CheckpointError(f"{source}: corrupted (CRC-32 mismatch)")
    try:
        return _decode_v3(body, crc) if version == 3 else decode_body(body, version, crc)
    except Unregistered as exc:
        raise CheckpointError(f"{source}: {exc}") from None
    except (
        ValueError,
        KeyError,
        TypeError,
        RecursionError,
        AssertionError,
        RuntimeError,
        struct.error,
        UnicodeDecodeError,
    ) as exc:
        # Only a file written by another encoder (its CRC is right) can get here; constriction
        # reports a stream its models cannot have produced with an AssertionError.
        raise CheckpointError(f"{source}: invalid content ({exc})") from None


def _decode_v3(body: bytes, crc: int) -> Decoded:
    """A version-3 body: the section, the network it builds, the varints checked against it, the stream."""
    length, offset = _read_varint(body, 0, "the model section's length")
    if offset + length > len(body):
        raise ValueError("the model section runs past the end")
    net = section_of(json.loads(body[offset : offset + length].decode()))
    model = rebuild(net, shapes_of)
    check_size(net, model)
    shapes = shapes_of(model)
    count, offset = _read_varint(body, offset + length, "the number of layers")
    if count != len(shapes):
        names = [name for name, _, _ in shapes]
        raise ValueError(f"{count} layers, but model.arch {net.arch} has {len(names)}: {', '.join(names)}")
    sizes = []
    for name, shape, _ in shapes:
        nnz, offset = _read_varint(body, offset, f"{name}'s number of kept weights")
        k, offset = _read_varint(body, offset, f"{name}'s number of shared values")
        if nnz > math.prod(shape):
            raise ValueError(f"{name} has {nnz:,} kept weights, more than its {math.prod(shape):,}")
        if k > 2**MAX_BITS or (nnz and not k):
            raise ValueError(f"{name} has {k} shared values for {nnz:,} kept weights (1 to {2**MAX_BITS} unless none)")
        sizes.append((nnz, k))
    decoder = range_decoder(body, offset)
    carried, state, layers, coded = Carried(), {}, {}, {}
    for (name, shape, has_bias), (nnz, k) in zip(shapes, sizes, strict=True):
        rows = shape[0]
        layer = coded[name] = decode_layer(decoder, name, (rows, math.prod(shape) // rows), nnz, k, has_bias, carried)
        layers[name] = SharedLayer(layer.mask.reshape(shape), layer.codes, layer.centroids.astype(np.float32))
        state[state_key(name, "weight")] = torch.from_numpy(layers[name].dense())
        if has_bias:
            state[state_key(name, "bias")] = torch.from_numpy(layer.bias())
    if not decoder.maybe_exhausted():
        raise ValueError("the coded stream does not end after the last layer")
    return Decoded.loading(
        model, state, version=3, crc=crc, metadata=offset, net=net, layers=layers, tables={}, coded=coded
    )


def decode(data: bytes, source: str = "file") -> tuple[NetConfig, dict[str, torch.Tensor], dict[str, SharedLayer]]:
    """Parse and check the bytes; return (the network's model section, state_dict, shared layers).
    A version-1 file's section is the mlp one of its MLP.

    Every way a file can be wrong is a CheckpointError naming `source` and the problem.
    """
    decoded = _decode(data, source)
    return decoded.net, decoded.state, decoded.layers


def from_bytes(data: bytes, source: str = "file") -> nn.Module:
    """The ordinary PyTorch network (eval mode) that a file's bytes hold, built through the registry."""
    return _decode(data, source).model


def read(path: str | Path) -> bytes:
    """A .nnc file's bytes; a missing or unreadable file is a CheckpointError naming it."""
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing (run the compress stage first: dvc repro compress)") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror or exc})") from None


def load(path: str | Path) -> nn.Module:
    """Read a .nnc file into an ordinary PyTorch network (eval mode): the MLP of a version-1 file,
    the registered network its section names for versions 2 and 3."""
    return from_bytes(read(path), str(Path(path)))


# --- a file's sections, for `nncompress info` ------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where a file's bytes go, section by section (they add up to the file's size)."""

    version: int
    crc: int
    header: int  # magic, version, body length, CRC
    metadata: int  # the JSON and its length; version 3: the model section, its length and the varints
    tables: dict[str, int]  # versions 1 and 2, per layer: shared values (float32) and biases (float16)
    stream: int  # one range-coded stream: every layer's mask and codes (version 3: and values and biases)
    # Version 3, per layer: the information its symbols carry under the coder's models, in bits, by
    # part (PARTS: mask, codes, shared values, biases), and (stored, units) of a layer with biases.
    information: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
    biases: dict[str, tuple[int, int]] = dataclasses.field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.header + self.metadata + sum(self.tables.values()) + self.stream


@dataclasses.dataclass(frozen=True)
class Contents:
    """A checked file, taken apart: what `nncompress info` reports."""

    layout: Layout
    net: NetConfig  # the network's model section (a version-1 file's: its MLP's)
    model: nn.Module  # the decoded network, eval mode
    state: dict[str, torch.Tensor]  # the decoded state_dict
    layers: dict[str, SharedLayer]


def describe(data: bytes, source: str = "file") -> Contents:
    """Decode `data` with every check `decode` makes, and measure the file's sections."""
    d = _decode(data, source)
    stream = len(data) - _HEAD.size - d.metadata - sum(d.tables.values())
    carried = Carried()  # the decoded symbols under the models again: what each carries
    information = {name: bits_by_part(layer, carried) for name, layer in d.coded.items()}
    biases = {
        name: (int(layer.stored.sum()), len(layer.stored))
        for name, layer in d.coded.items()
        if layer.stored is not None
    }
    layout = Layout(d.version, d.crc, _HEAD.size, d.metadata, d.tables, stream, information, biases)
    return Contents(layout, d.net, d.model, d.state, d.layers)
