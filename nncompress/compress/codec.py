"""The compressed model file (.nnc): sparse, weight-shared layers, entropy coded; never pickle.

Layout (little-endian), format version 2 (what `encode` writes):

    magic b"NNCZ" | version u8 | body length u32 | CRC-32 of body u32 | body

    body = meta length u32 | meta (UTF-8 JSON: the network's `model` params section, and per layer
           its name, weight shape, number of nonzero weights and code counts)
         | per layer: centroids f32[k], bias f16[out] (none for a layer without bias)
         | range-coded stream (u32 words): per layer, the nonzero mask row by row, then the codes

The layers are the network's Linear and Conv2d layers (nncompress.prune.masks.prunable), in its
order; the loader rebuilds the network through the registry (nncompress.nets: `model.arch` and its
keys) and checks that its layers are the file's before loading the decoded weights. A Conv2d
weight (out, in, kh, kw) is coded as the out x (in * kh * kw) matrix of its kernels, row-major as
the tensor lies, so a mask column is one (in-channel, kernel position).

Positions are coded as a bitmask with an adaptive probability per column (an input pixel is kept
in about as many neurons as it was in the rows before), codes with their measured frequencies;
constriction's range coder turns these probabilities into bits at their entropy. Reading a file
only parses numbers and JSON, so a hostile file cannot run code; the CRC catches corruption.

Version 1 (the one-hidden-layer MLP only) is still read: its meta length is a u16 and its meta's
`model` is {hidden_size, activation, dropout}, layers fc1 and fc2; the rest is as above.
"""

from __future__ import annotations

import dataclasses
import json
import math
import struct
import zlib
from pathlib import Path
from typing import Any

import constriction
import numpy as np
import torch
from torch import nn

from nncompress.compress.quantize import MAX_BITS, SharedLayer
from nncompress.errors import CheckpointError
from nncompress.fileio import write_bytes
from nncompress.nets import NETS, NetConfig
from nncompress.nets.mlp import ACTIVATIONS, MAX_HIDDEN, MLP, MLPConfig
from nncompress.nets.registry import IN_FEATURES, NUM_CLASSES
from nncompress.prune.masks import prunable

MAGIC = b"NNCZ"
VERSION = 2  # what encode writes
VERSIONS = (1, 2)  # what decode reads
_HEAD = struct.Struct("<4sBII")  # magic, version, body length, CRC-32 of the body
_META_LEN = {1: struct.Struct("<H"), 2: struct.Struct("<I")}
_PRIOR = 2.0  # weight, in rows, of the layer's overall density in each column's estimate
MAX_PARAMETERS = 2**28  # a file may describe a network of at most this many parameters (1 GiB as fp32)
KINDS = {2: "Linear", 4: "Conv2d"}  # a layer's kind by the number of dimensions of its weight


class _Unregistered(ValueError):
    """The file's network is not in this process's registry: reported as such, not as a bad file."""


def _column_probabilities(ones_before: np.ndarray, row: int | np.ndarray, density: float) -> np.ndarray:
    """P(weight (row, j) is kept) from column j's rows above it, shrunk towards the layer density."""
    return (ones_before + _PRIOR * density) / (row + _PRIOR)


def _bernoulli() -> Any:
    return constriction.stream.model.Bernoulli(perfect=False)


def _categorical(counts: list[int]) -> Any:
    return constriction.stream.model.Categorical(np.asarray(counts, dtype=np.float64), perfect=False)


def _matrix(mask: np.ndarray) -> np.ndarray:
    """A weight's mask as the matrix the coder runs over: one row per output, a Conv2d's kernels flattened."""
    return mask.reshape(mask.shape[0], -1)


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


# --- the network a file records --------------------------------------------------------------------


def _key(name: str, param: str) -> str:
    return f"{name}.{param}" if name else param


def _layers(model: nn.Module) -> list[tuple[str, nn.Linear | nn.Conv2d]]:
    """The layers a file holds (every Linear and Conv2d); a ValueError unless they are all the
    network's state: the format stores their weights and biases, nothing else."""
    layers = prunable(model)
    held = {_key(name, "weight") for name, _ in layers}
    held |= {_key(name, "bias") for name, module in layers if module.bias is not None}
    other = [key for key in model.state_dict() if key not in held]
    if not layers or other:
        found = f"state besides their weights and biases: {', '.join(other[:3])}{', ...' if len(other) > 3 else ''}"
        raise ValueError(
            "the .nnc format holds networks of Linear and Conv2d layers only; this one has "
            + (found if layers else "no Linear or Conv2d layer")
        )
    for name, module in layers:
        if module.weight.dim() not in KINDS:
            raise ValueError(f"layer {name} has a {module.weight.dim()}-d weight")
    return layers


def _shapes(model: nn.Module) -> list[tuple[str, tuple[int, ...], bool]]:
    """(name, weight shape, has a bias) of each layer a file holds, in the network's order."""
    return [(name, tuple(m.weight.shape), m.bias is not None) for name, m in _layers(model)]


def _build(net: NetConfig, device: str | None = None) -> nn.Module:
    """`net`'s network, without touching torch's global RNG; on the meta device (no memory, no
    initialisation cost) when `device` is "meta". What the network's own code raises is a ValueError."""
    try:
        with torch.random.fork_rng(devices=[]):
            if device is None:
                return net.build()
            with torch.device(device):
                return net.build()
    except Exception as exc:  # the network's code, maybe a user's: whatever it raises, one line
        raise ValueError(f"model.arch {net.arch}: building the network failed ({_one_line(exc)})") from None


def _probe(net: NetConfig) -> nn.Module | None:
    """`net`'s network on the meta device, to read its layers; None if its code cannot build there."""
    try:
        return _build(net, "meta")
    except ValueError:
        return None


def _mlp_section(model: MLP) -> MLPConfig:
    return MLPConfig(
        hidden=list(model.hidden_sizes), activation=type(model.act).__name__.lower(), dropout=float(model.dropout.p)
    )


def section(model: nn.Module, net: NetConfig | None = None) -> NetConfig:
    """The `model` section a file of `model` records: `net` (params.yaml's) when it builds a network
    with `model`'s layers; for an MLP, the mlp section of its own widths, activation and dropout
    (exact for the MLP, and right for one that structured pruning shrank). A ValueError if the
    format cannot hold `model` or no section describes it."""
    shapes = _shapes(model)
    if net is not None and not (isinstance(net, MLPConfig) and isinstance(model, MLP)):
        built = _probe(net)
        if built is None:  # a network whose code cannot run on the meta device
            built = _build(net)
        if _shapes(built) == shapes:
            _check_json(net)
            return net
        if not isinstance(model, MLP):
            raise ValueError(
                f"model.arch {net.arch} builds layers {_describe_shapes(_shapes(built))}, "
                f"the model has {_describe_shapes(shapes)}"
            )
    if isinstance(model, MLP):
        return _mlp_section(model)
    raise ValueError(f"a {type(model).__name__} needs its model section (net): only an MLP's is inferred")


def _describe_shapes(shapes: list[tuple[str, tuple[int, ...], bool]]) -> str:
    return ", ".join(f"{name} {list(shape)}" for name, shape, _ in shapes)


def _check_json(net: NetConfig) -> None:
    """A ValueError unless the section comes back from its JSON as itself (what the loader validates)."""
    try:
        back = NetConfig.model_validate(json.loads(json.dumps(net.model_dump(mode="json"))))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"model.arch {net.arch}: its section does not survive JSON ({_one_line(exc)})") from None
    if back != net:
        raise ValueError(f"model.arch {net.arch}: its section does not survive JSON ({back!r} != {net!r})")


def _one_line(exc: Exception) -> str:
    from pydantic import ValidationError

    from nncompress.schema import describe

    if isinstance(exc, ValidationError):
        return describe(exc, NetConfig, ("model",)).removeprefix("params.yaml: ")
    text = str(exc).splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# --- encoding --------------------------------------------------------------------------------------


def encode(model: nn.Module, layers: dict[str, SharedLayer], net: NetConfig | None = None) -> bytes:
    """The file's bytes (format version 2) for `model`, whose Linear and Conv2d weights are the
    shared `layers` (biases kept as float16). `net` is the model section that builds the network
    (see `section`; for an MLP it may be left out), so the loader rebuilds the same network."""
    recorded = section(model, net)
    modules = _layers(model)
    if set(layers) != {name for name, _ in modules}:
        raise ValueError(f"shared layers {sorted(layers)} are not the network's {[name for name, _ in modules]}")
    meta: dict[str, Any] = {"model": recorded.model_dump(mode="json"), "layers": []}
    tables, encoder = [], constriction.stream.queue.RangeEncoder()
    for name, module in modules:
        layer = layers[name]
        if layer.mask.shape != tuple(module.weight.shape):
            raise ValueError(f"{name}: shared layer of shape {layer.mask.shape}, weight {tuple(module.weight.shape)}")
        bias = module.bias.detach().cpu().numpy() if module.bias is not None else np.zeros(0, np.float32)
        counts = np.bincount(layer.codes, minlength=len(layer.centroids)).tolist()
        nnz = int(layer.mask.sum())
        meta["layers"].append({"name": name, "shape": list(layer.mask.shape), "nnz": nnz, "counts": counts})
        tables += [layer.centroids.astype("<f4").tobytes(), bias.astype("<f2").tobytes()]
        _encode_mask(encoder, _matrix(layer.mask))
        if len(layer.codes):
            encoder.encode(layer.codes.astype(np.int32), _categorical(counts))
    meta_bytes = json.dumps(meta, separators=(",", ":")).encode()
    words = encoder.get_compressed().astype("<u4").tobytes()
    body = _META_LEN[VERSION].pack(len(meta_bytes)) + meta_bytes + b"".join(tables) + words
    return _HEAD.pack(MAGIC, VERSION, len(body), zlib.crc32(body)) + body


def save(path: str | Path, model: nn.Module, layers: dict[str, SharedLayer], net: NetConfig | None = None) -> int:
    """Write the file atomically; return its size in bytes."""
    data = encode(model, layers, net)
    write_bytes(path, data)
    return len(data)


# --- decoding --------------------------------------------------------------------------------------


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


def _section_of(data: Any) -> NetConfig:
    """The file's model section, validated as params.yaml's is; an unregistered arch is _Unregistered."""
    if not isinstance(data, dict):
        raise ValueError("the model section is not a mapping")
    arch = data.get("arch")
    if isinstance(arch, str) and arch not in NETS:
        raise _Unregistered(
            f"holds a network of model.arch {arch!r}, which is not registered (registered: {', '.join(sorted(NETS))})"
        )
    try:
        return NetConfig.model_validate(data)
    except ValueError as exc:  # pydantic's ValidationError, in params.yaml's one-line words
        raise ValueError(_one_line(exc)) from None


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
    return _section_of(meta["model"]), layers


def _match(model: nn.Module, layers: list[dict[str, Any]]) -> list[_Spec]:
    """The file's layers against the rebuilt network's: the same names, in order, and shapes."""
    shapes = _shapes(model)
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


def _rebuild(net: NetConfig, layers: list[dict[str, Any]]) -> tuple[nn.Module, list[_Spec]]:
    """The network of the file's section, checked against its layers before and after it is allocated."""
    probe = _probe(net)
    if probe is not None:
        _match(probe, layers)
        parameters = sum(p.numel() for p in probe.parameters())
        if parameters > MAX_PARAMETERS:
            raise ValueError(f"model.arch {net.arch}: {parameters:,} parameters, more than {MAX_PARAMETERS:,}")
    model = _build(net)
    return model, _match(model, layers)


@dataclasses.dataclass(frozen=True)
class _Decoded:
    version: int
    crc: int
    metadata: int  # bytes of the meta and its length
    net: NetConfig
    model: nn.Module  # eval mode, the decoded weights loaded
    state: dict[str, torch.Tensor]
    layers: dict[str, SharedLayer]
    tables: dict[str, int]  # bytes per layer: shared values and biases


def _versions() -> str:
    return " and ".join(str(v) for v in VERSIONS) if len(VERSIONS) == 2 else ", ".join(map(str, VERSIONS))


def _decode(data: bytes, source: str) -> _Decoded:
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
        return _decode_body(body, version, crc)
    except _Unregistered as exc:
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


def _decode_body(body: bytes, version: int, crc: int) -> _Decoded:
    head = _META_LEN[version]
    (meta_len,) = head.unpack_from(body)
    offset = head.size + meta_len
    if offset > len(body):
        raise ValueError("metadata runs past the end")
    meta = json.loads(body[head.size : offset].decode())
    if version == 1:
        net, specs = _check_meta_v1(meta)
        model = _build(net)
    else:
        net, layers = _check_meta_v2(meta)
        model, specs = _rebuild(net, layers)
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
    if (len(body) - offset) % 4:
        raise ValueError("the coded stream is not whole 32-bit words")
    decoder = constriction.stream.queue.RangeDecoder(np.frombuffer(body, "<u4", offset=offset).astype(np.uint32))
    state, layers_out = {}, {}
    for spec, (centroids, bias) in zip(specs, tables, strict=True):
        name, nnz, counts = spec.name, spec.nnz, spec.counts
        rows = spec.shape[0]
        mask = _decode_mask(decoder, (rows, math.prod(spec.shape) // rows), nnz).reshape(spec.shape)
        if int(mask.sum()) != nnz:
            raise ValueError(f"{name}: mask holds {int(mask.sum())} weights, metadata says {nnz}")
        codes = decoder.decode(_categorical(counts), nnz).astype(np.uint8) if nnz else np.zeros(0, np.uint8)
        if nnz and np.bincount(codes, minlength=len(counts)).tolist() != counts:
            raise ValueError(f"{name}: decoded codes do not match their counts")
        layers_out[name] = SharedLayer(mask, codes, centroids)
        state[_key(name, "weight")] = torch.from_numpy(layers_out[name].dense())
        if spec.biases:
            state[_key(name, "bias")] = torch.from_numpy(bias)
    model.load_state_dict(state)
    state = {key: state[key] for key in model.state_dict()}  # in the network's order
    return _Decoded(
        version,
        crc,
        head.size + meta_len,
        net,
        model.eval(),
        state,
        layers_out,
        {spec.name: 4 * len(spec.counts) + 2 * spec.biases for spec in specs},
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
    the registered network its section names for version 2."""
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
    net: NetConfig  # the network's model section (a version-1 file's: its MLP's)
    model: nn.Module  # the decoded network, eval mode
    state: dict[str, torch.Tensor]  # the decoded state_dict
    layers: dict[str, SharedLayer]


def describe(data: bytes, source: str = "file") -> Contents:
    """Decode `data` with every check `decode` makes, and measure the file's sections."""
    d = _decode(data, source)
    stream = len(data) - _HEAD.size - d.metadata - sum(d.tables.values())
    layout = Layout(d.version, d.crc, _HEAD.size, d.metadata, d.tables, stream)
    return Contents(layout, d.net, d.model, d.state, d.layers)


def information_bits(layer: SharedLayer) -> tuple[float, float]:
    """(mask, codes): the bits a layer's symbols carry under the models the encoder codes them with.

    The range coder's output comes within a few bytes of their sum over all layers, so this is how
    the one shared stream splits between layers (an estimate: the coder rounds probabilities).
    """
    mask = _matrix(layer.mask)
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
