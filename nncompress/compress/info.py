"""What `nncompress info` says about a .nnc file: format, network, per-layer sizes, ratio, checksum."""

from __future__ import annotations

import math
from pathlib import Path

from nncompress.compress import codec


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


def summary(path: str | Path) -> str:
    """The report on the file at `path`; a bad file raises the loader's CheckpointError."""
    from nncompress.compress.grid import state_dict_bytes

    data = codec.read(path)
    contents = codec.describe(data, str(path))
    layout, arch, layers = contents.layout, contents.arch, contents.layers
    parameters = sum(t.numel() for t in contents.state.values())
    sizes = [layers[name].mask.size for name in layers]
    shapes = [layers[name].mask.shape for name in layers]
    stream = _split(layout.stream, [sum(codec.information_bits(layer)) for layer in layers.values()])

    rows = [["layer", "shape", "kept weights", "shared values", "tables B", "stream B", "total B", "bits/weight"]]
    for (name, layer), size, shape, coded in zip(layers.items(), sizes, shapes, stream, strict=True):
        nnz, k = int(layer.mask.sum()), len(layer.centroids)
        total = layout.tables[name] + coded
        rows.append(
            [
                name,
                f"{shape[0]} x {shape[1]}",
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
            _kept(kept, sum(sizes)),
            "",
            f"{tables:,}",
            f"{layout.stream:,}",
            f"{tables + layout.stream:,}",
            f"{8 * len(data) / kept:.2f}" if kept else "-",
        ]
    )

    dense = 4 * parameters
    state_dict = state_dict_bytes(codec.from_bytes(data, str(path)))
    widths = " -> ".join(str(n) for n in [shapes[0][1], *(shape[0] for shape in shapes)])
    return "\n".join(
        [
            f"{path}: nncompress model file, format version {layout.version}, {len(data):,} bytes, "
            f"checksum OK (CRC-32 0x{layout.crc:08x})",
            f"network: MLP {widths}, {arch['activation']} activation, dropout {arch['dropout']:g} "
            f"({parameters:,} parameters)",
            "",
            *_table(rows, left=4),
            "",
            f"file: {len(data):,} bytes = header {layout.header} + metadata {layout.metadata:,} "
            f"+ tables {tables:,} + coded stream {layout.stream:,}",
            "  tables: a layer's shared values (float32) and biases (float16), exact;",
            "  stream: one range-coded stream of every layer's kept-weight mask and value codes, split here",
            "  in proportion to the information each layer's symbols carry (~: an estimate);",
            "  bits/weight: bytes x 8 per kept weight (the last row: the whole file's).",
            f"dense fp32: {dense:,} bytes (4 x {parameters:,} parameters), {dense / len(data):.1f}x this file; "
            f"as a torch.save state_dict: {state_dict:,} bytes, {state_dict / len(data):.1f}x",
        ]
    )
