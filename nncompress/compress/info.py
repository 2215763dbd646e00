"""What `nncompress info` says about a .nnc file: format, network, per-layer sizes, ratio, checksum.

Any network a file holds (format version 1: the one-hidden-layer MLP; version 2: any registered
network of Linear and Conv2d layers), described by its model section and its layers."""

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


def summary(path: str | Path) -> str:
    """The report on the file at `path`; a bad file raises the loader's CheckpointError."""
    from nncompress.compress.grid import state_dict_bytes

    data = codec.read(path)
    contents = codec.describe(data, str(path))
    layout, layers = contents.layout, contents.layers
    parameters = sum(p.numel() for p in contents.model.parameters())
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

    dense = 4 * parameters
    state_dict = state_dict_bytes(contents.model)
    conv = [
        "  shape: a Conv2d's is out x in channels x kernel height x width, its mask coded as a matrix of",
        "  one row per output channel and one column per input channel and kernel position;",
    ]
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
            *(conv if any(len(shape) == 4 for shape in shapes) else []),
            "  bits/weight: bytes x 8 per kept weight (the last row: the whole file's).",
            f"dense fp32: {dense:,} bytes (4 x {parameters:,} parameters), {dense / len(data):.1f}x this file; "
            f"as a torch.save state_dict: {state_dict:,} bytes, {state_dict / len(data):.1f}x",
        ]
    )
