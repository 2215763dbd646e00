"""What `nncompress info` says about a .nnc file: format, network, per-layer sizes, ratio, checksum.

Any network a file holds (format version 1: the one-hidden-layer MLP; versions 2 and 3: any
registered network of Linear and Conv2d layers), described by its model section and its layers.
A version-3 file keeps everything but its model section and a few numbers in one coded stream:
its table splits the stream by layer and part (mask, codes, values) where older files' tables
show raw tables beside the stream."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from torch import nn

from nncompress.compress import codec
from nncompress.nets import NetConfig


def _split(total: int, weights: list[float]) -> list[int]:
    """`total` split in proportion to `weights` (equally if all are 0), the parts adding up to it."""
    if not sum(weights):
        weights = [1.0] * len(weights)
    parts = [round(total * w / sum(weights)) for w in weights]
    parts[parts.index(max(parts))] += total - sum(parts)
    return parts


def _table(rows: list[list[str]], left: int) -> list[str]:
    """Rows of cells as aligned text: the first `left` columns left-aligned, the rest right-aligned."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    cells = [
        [c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        for row in rows
    ]
    return ["  ".join(row).rstrip() for row in cells]


def _kept(nnz: int, size: int) -> str:
    return f"{nnz:,} of {size:,} ({nnz / size:.1%})" if size else "0 of 0"


def _shared(k: int) -> str:
    """The number of shared values and the bits an index into them takes."""
    bits = math.ceil(math.log2(k)) if k > 1 else 0
    return f"{k} ({bits} bit{'' if bits == 1 else 's'})" if k else "none"


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return str(value)


def network(net: NetConfig, model: nn.Module) -> str:
    """The network in one line: its model section (arch, then its keys), its class, for a network of
    Linear layers only its widths, and its parameter count."""
    fields = net.model_dump(mode="json")
    keys = "".join(f", {key} {_value(value)}" for key, value in fields.items() if key != "arch")
    linear = [m for m in model.modules() if isinstance(m, nn.Linear)]
    conv = any(isinstance(m, nn.Conv2d) for m in model.modules())
    widths = (
        ""
        if conv or not linear
        else " " + " -> ".join(map(str, [linear[0].in_features, *(m.out_features for m in linear)]))
    )
    parameters = sum(p.numel() for p in model.parameters())
    return f"model.arch {net.arch}{keys} ({type(model).__name__}{widths}, {parameters:,} parameters)"


_CONV = [
    "  shape: a Conv2d's is out x in channels x kernel height x width, its mask coded as a matrix of",
    "  one row per output channel and one column per input channel and kernel position;",
]


def _dense(contents: codec.Contents, size: int) -> str:
    """The last line: the file against the dense network's fp32 weights and its torch.save state_dict."""
    from nncompress.compress.grid import state_dict_bytes

    parameters = sum(p.numel() for p in contents.model.parameters())
    dense, state_dict = 4 * parameters, state_dict_bytes(contents.model)
    return (
        f"dense fp32: {dense:,} bytes (4 x {parameters:,} parameters), {dense / size:.1f}x this file; "
        f"as a torch.save state_dict: {state_dict:,} bytes, {state_dict / size:.1f}x"
    )


def summary(path: str | Path) -> str:
    """The report on the file at `path`; a bad file raises the loader's CheckpointError."""
    data = codec.read(path)
    contents = codec.describe(data, str(path))
    if contents.layout.version >= 3:
        return _summary_v3(str(path), data, contents)
    layout, layers = contents.layout, contents.layers
    sizes = [layers[name].mask.size for name in layers]
    shapes = [layers[name].mask.shape for name in layers]
    stream = _split(layout.stream, [sum(codec.information_bits(layer)) for layer in layers.values()])

    header = ["layer", "kind", "shape", "kept weights", "shared values", "tables B", "stream B", "total B"]
    rows = [[*header, "bits/weight"]]
    for (name, layer), size, shape, coded in zip(layers.items(), sizes, shapes, stream, strict=True):
        nnz, k = int(layer.mask.sum()), len(layer.centroids)
        total = layout.tables[name] + coded
        rows.append(
            [
                name,
                codec.KINDS[len(shape)],
                " x ".join(map(str, shape)),
                _kept(nnz, size),
                _shared(k),
                f"{layout.tables[name]:,}",
                f"~{coded:,}",
                f"~{total:,}",
                f"~{8 * total / nnz:.2f}" if nnz else "-",
            ]
        )
    kept = sum(int(layer.mask.sum()) for layer in layers.values())
    tables = sum(layout.tables.values())
    rows.append(
        [
            "all",
            "",
            "",
            _kept(kept, sum(sizes)),
            "",
            f"{tables:,}",
            f"{layout.stream:,}",
            f"{tables + layout.stream:,}",
            f"{8 * len(data) / kept:.2f}" if kept else "-",
        ]
    )
    return "\n".join(
        [
            f"{path}: nncompress model file, format version {layout.version}, {len(data):,} bytes, "
            f"checksum OK (CRC-32 0x{layout.crc:08x})",
            f"network: {network(contents.net, contents.model)}",
            "",
            *_table(rows, left=5),
            "",
            f"file: {len(data):,} bytes = header {layout.header} + metadata {layout.metadata:,} "
            f"+ tables {tables:,} + coded stream {layout.stream:,}",
            "  tables: a layer's shared values (float32) and biases (float16), exact;",
            "  stream: one range-coded stream of every layer's kept-weight mask and value codes, split here",
            "  in proportion to the information each layer's symbols carry (~: an estimate);",
            *(_CONV if any(len(shape) == 4 for shape in shapes) else []),
            "  bits/weight: bytes x 8 per kept weight (the last row: the whole file's).",
            _dense(contents, len(data)),
        ]
    )


def _summary_v3(path: str, data: bytes, contents: codec.Contents) -> str:
    """A version-3 file: its stream split by layer and part (values: shared values and biases)."""
    layout, layers = contents.layout, contents.layers
    bits = [[i["mask"], i["codes"], i["values"] + i["biases"]] for i in (layout.information[n] for n in layers)]
    cells = iter(_split(layout.stream, [b for row in bits for b in row]))  # adding up to the stream
    coded = {name: [next(cells) for _ in range(3)] for name in layers}

    header = ["layer", "kind", "shape", "kept weights", "shared values", "biases", "mask B", "codes B"]
    rows = [[*header, "values B", "total B", "bits/weight"]]
    for name, layer in layers.items():
        shape, nnz, total = layer.mask.shape, int(layer.mask.sum()), sum(coded[name])
        rows.append(
            [
                name,
                codec.KINDS[len(shape)],
                " x ".join(map(str, shape)),
                _kept(nnz, layer.mask.size),
                _shared(len(layer.centroids)),
                _stored(*layout.biases.get(name, (0, 0))),
                *(f"~{bytes_:,}" for bytes_ in coded[name]),
                f"~{total:,}",
                f"~{8 * total / nnz:.2f}" if nnz else "-",
            ]
        )
    kept = sum(int(layer.mask.sum()) for layer in layers.values())
    rows.append(
        [
            "all",
            "",
            "",
            _kept(kept, sum(layer.mask.size for layer in layers.values())),
            "",
            _stored(*(sum(pair[i] for pair in layout.biases.values()) for i in (0, 1))),
            *(f"~{sum(row[i] for row in coded.values()):,}" for i in range(3)),
            f"{layout.stream:,}",
            f"{8 * len(data) / kept:.2f}" if kept else "-",
        ]
    )
    conv = any(layer.mask.ndim == 4 for layer in layers.values())
    return "\n".join(
        [
            f"{path}: nncompress model file, format version {layout.version}, {len(data):,} bytes, "
            f"checksum OK (CRC-32 0x{layout.crc:08x})",
            f"network: {network(contents.net, contents.model)}",
            "",
            *_table(rows, left=6),
            "",
            f"file: {len(data):,} bytes = header {layout.header} + metadata {layout.metadata:,} "
            f"+ coded stream {layout.stream:,}",
            "  metadata: the model section (JSON) and each layer's numbers of kept weights and shared values;",
            "  stream: one range-coded stream of every layer's kept-weight mask, codes (which shared value",
            "  each kept weight takes) and values (shared values as float32 and biases as float16, exact),",
            "  split here in proportion to the information each part's symbols carry (~: an estimate);",
            "  biases: those stored; the output does not depend on the others, which decode as 0;",
            *(_CONV if conv else []),
            "  bits/weight: bytes x 8 per kept weight (the last row: the whole file's).",
            _dense(contents, len(data)),
        ]
    )


def _stored(stored: int, units: int) -> str:
    return f"{stored:,} of {units:,}" if units else "none"
