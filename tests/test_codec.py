"""The .nnc file: exact round trips of the shared weights, fp16 biases, atomic saves, and a
CheckpointError naming the file for every kind of bad file. Format version 3 (what the encoder
writes) holds any registered network of Linear and Conv2d layers, the MLP with one or more hidden
layers, LeNet-300-100, LeNet-5 and a network a user registers; version-2 and version-1 files stay
readable, committed ones (tests/data/tiny_v1.nnc, tiny_v2.nnc, lenet5_v2.nnc) and ones written
here in the old layouts. What is special to version 3 (its layout, its models, the biases it leaves
out, its malformed files) is in tests/test_codec_v3.py."""

from __future__ import annotations

import io
import json
import pickle
import struct
import zlib
from pathlib import Path

import constriction
import numpy as np
import pytest
import torch
from conftest import tiny_mlp
from test_cli import lenet5_shared
from torch import nn
from torch.nn.utils import parametrize

from nncompress.compress import codec, entropy, layer_coding
from nncompress.compress.legacy import _categorical, _column_probabilities
from nncompress.compress.quantize import SharedLayer, share_weights, unshare_weights
from nncompress.errors import CheckpointError
from nncompress.model import MLP
from nncompress.nets import NETS, NetConfig, register
from nncompress.nets.mlp import MLPConfig
from nncompress.prune.masks import make_permanent, prunable, unstructured
from nncompress.schema import Positive

magnitude_prune = unstructured("magnitude", "layer")  # the old pruning.magnitude_prune
DATA = Path(__file__).parent / "data"
META_LEN = {1: "<H", 2: "<I"}  # the metadata's length: u16 in version 1, u32 in version 2


def shared_model(hidden=16, activation="sigmoid", bits=3, sparsity=(0.5, 0.5), dropout=0.15, seed=0):
    """A model whose layers have the given fraction of zero weights (at random places), weight-shared
    with `bits`; biases large and random, so few are exact in float16."""
    torch.manual_seed(seed)
    model = MLP(hidden_size=hidden, activation=activation, dropout=dropout)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for (_, module), rate in zip(prunable(model), sparsity, strict=True):
            keep = torch.rand(module.weight.shape, generator=g) >= rate
            module.weight.mul_(keep)
            module.bias.uniform_(-3.0, 3.0, generator=g)
    share_weights(model, bits)
    layers = unshare_weights(model)
    return model.eval(), layers


def fp16_biases(model):
    """A copy of `model` with its biases rounded to float16, as the file stores them."""
    copy = MLP(model.fc1.out_features, type(model.act).__name__.lower(), model.dropout.p)
    state = {k: (v.half().float() if k.endswith("bias") else v) for k, v in model.state_dict().items()}
    copy.load_state_dict(state)
    return copy.eval()


def inputs(n=64):
    return torch.rand(n, 784, generator=torch.Generator().manual_seed(2))


def unused_units(model: MLP, layers) -> dict[str, np.ndarray]:
    """Per layer of an MLP, the units whose bias its output does not depend on, found from its known
    order of layers (an oracle for the encoder, which assumes none): units with no chain of kept
    weights to the output, and under ReLU units with no kept weight and a float16 bias <= 0."""
    names = [name for name, _ in prunable(model)]
    reaches = np.ones(layers[names[-1]].mask.shape[0], bool)  # the outputs
    unused = {}
    for i in range(len(names) - 1, -1, -1):
        unused[names[i]] = ~reaches
        if i:  # a unit below reaches the output if it has a kept weight into a unit that does
            reaches = layers[names[i]].mask[reaches].any(axis=0)
    if isinstance(model.act, nn.ReLU):
        for name, module in prunable(model):
            if name != names[-1]:
                flat = ~layers[name].mask.any(axis=1) & (module.bias.detach().half().numpy() <= 0)
                unused[name] |= flat
    return unused


def decoded_biases(model: MLP, layers) -> dict[str, torch.Tensor]:
    """What the file's biases decode to: float16, but 0 for the units the output does not depend on."""
    unused = unused_units(model, layers)
    return {
        name: torch.where(torch.from_numpy(unused[name]), 0.0, module.bias.detach().half().float())
        for name, module in prunable(model)
    }


def repack(body: bytes, version: int = codec.VERSION) -> bytes:
    """A file around `body` with a correct header and CRC, as another encoder would write it."""
    return codec._HEAD.pack(codec.MAGIC, version, len(body), zlib.crc32(body)) + body


def split_body(data: bytes):
    """(meta dict, the bytes after the meta) of a version-1 or version-2 file."""
    head = struct.Struct(META_LEN[data[4]])
    body = data[codec._HEAD.size :]
    (meta_len,) = head.unpack_from(body)
    meta = json.loads(body[head.size : head.size + meta_len])
    return meta, body[head.size + meta_len :]


def with_meta(meta, rest: bytes, version: int = 2) -> bytes:
    """A version-2 (or `version`-1) file of the JSON `meta` and the bytes after it, its CRC right."""
    raw = meta if isinstance(meta, bytes) else json.dumps(meta).encode()
    return repack(struct.pack(META_LEN[version], len(raw)) + raw + rest, version)


def v3_parts(data: bytes) -> tuple[dict, list[tuple[int, int]], bytes]:
    """A version-3 file taken apart: (its model section, per layer (nnz, k), its coded stream)."""
    body = data[codec._HEAD.size :]
    length, offset = codec._read_varint(body, 0, "length")
    section = json.loads(body[offset : offset + length])
    count, offset = codec._read_varint(body, offset + length, "count")
    sizes = []
    for _ in range(count):
        nnz, offset = codec._read_varint(body, offset, "nnz")
        k, offset = codec._read_varint(body, offset, "k")
        sizes.append((nnz, k))
    return section, sizes, body[offset:]


def encode_mask_v2(encoder, mask: np.ndarray) -> None:
    """A mask as versions 1 and 2 coded it: by columns, shrunk towards the layer density with weight 2."""
    rows = mask.astype(np.int32)
    ones_before = np.cumsum(rows, axis=0) - rows
    row_index = np.arange(mask.shape[0], dtype=np.float64).reshape(-1, 1)
    probs = _column_probabilities(ones_before.astype(np.float64), row_index, mask.mean())
    encoder.encode(rows.ravel(), entropy.BERNOULLI, probs.ravel())


def encode_v2(model: nn.Module, layers, net: NetConfig | None = None) -> bytes:
    """Version-2 bytes, as the version-2 encoder wrote them (a u32 metadata length; the model section,
    every layer's name, shape, nnz and code counts in the JSON; raw tables; masks and codes in the
    stream). Checked below against files that encoder wrote (tests/data/tiny_v2.nnc, lenet5_v2.nnc)."""
    meta = {"model": codec.section(model, net).model_dump(mode="json"), "layers": []}
    tables, encoder = [], constriction.stream.queue.RangeEncoder()
    for name, module in prunable(model):
        layer = layers[name]
        bias = module.bias.detach().numpy() if module.bias is not None else np.zeros(0, np.float32)
        counts = np.bincount(layer.codes, minlength=len(layer.centroids)).tolist()
        nnz = int(layer.mask.sum())
        meta["layers"].append({"name": name, "shape": list(layer.mask.shape), "nnz": nnz, "counts": counts})
        tables += [layer.centroids.astype("<f4").tobytes(), bias.astype("<f2").tobytes()]
        encode_mask_v2(encoder, layer_coding.matrix(layer.mask))
        if len(layer.codes):
            encoder.encode(layer.codes.astype(np.int32), _categorical(counts))
    raw = json.dumps(meta, separators=(",", ":")).encode()
    words = encoder.get_compressed().astype("<u4").tobytes()
    return repack(struct.pack("<I", len(raw)) + raw + b"".join(tables) + words, 2)


def encode_v1(model: MLP, layers) -> bytes:
    """Version-1 bytes, in the layout the encoder wrote before version 2 (the one-hidden-layer MLP:
    a u16 metadata length, the model as {hidden_size, activation, dropout}); the coded stream is
    the same as version 2's. Checked below against a file that encoder wrote."""
    model_meta = {
        "hidden_size": model.fc1.out_features,
        "activation": type(model.act).__name__.lower(),
        "dropout": model.dropout.p,
    }
    meta = {"model": model_meta, "layers": []}
    tables, encoder = [], constriction.stream.queue.RangeEncoder()
    for name in ("fc1", "fc2"):
        layer, bias = layers[name], getattr(model, name).bias.detach().numpy()
        counts = np.bincount(layer.codes, minlength=len(layer.centroids)).tolist()
        nnz = int(layer.mask.sum())
        meta["layers"].append({"name": name, "shape": list(layer.mask.shape), "nnz": nnz, "counts": counts})
        tables += [layer.centroids.astype("<f4").tobytes(), bias.astype("<f2").tobytes()]
        encode_mask_v2(encoder, layer.mask)
        if len(layer.codes):
            encoder.encode(layer.codes.astype(np.int32), _categorical(counts))
    raw = json.dumps(meta, separators=(",", ":")).encode()
    words = encoder.get_compressed().astype("<u4").tobytes()
    return repack(struct.pack("<H", len(raw)) + raw + b"".join(tables) + words, 1)


def tiny_v1_model():
    """The model of tests/data/tiny_v1.nnc (conftest's tiny_mlp): the file was written by the
    version-1 encoder (as tests/test_cli.py's tiny_nnc made it)."""
    model, layers = tiny_mlp()
    return model.eval(), layers


@pytest.fixture(scope="module")
def small():
    """A small model and its file (a few KB), for the corruption tests."""
    model, layers = shared_model(hidden=16, bits=3, sparsity=(0.7, 0.3))
    return model, layers, codec.encode(model, layers)


@pytest.fixture(scope="module")
def small_v2(small):
    """The same model in a version-2 file."""
    model, layers, _ = small
    return model, layers, encode_v2(model, layers)


@pytest.fixture(scope="module")
def small_v1(small):
    """The same model in a version-1 file."""
    model, layers, _ = small
    return model, layers, encode_v1(model, layers)


@pytest.fixture(scope="module", params=[3, 2, 1], ids=["v3", "v2", "v1"])
def either(request, small, small_v2, small_v1):
    """The small model's file in any version: every kind of damage is refused in each."""
    return {3: small, 2: small_v2, 1: small_v1}[request.param]


@pytest.fixture(scope="module", params=[2, 1], ids=["v2", "v1"])
def legacy(request, small_v2, small_v1):
    """The small model's file in version 2 or 1, whose JSON metadata the tests below edit."""
    return small_v2 if request.param == 2 else small_v1


# --- round trips --------------------------------------------------------------------------------

CASES = [
    # hidden, activation, bits, (fc1 sparsity, fc2 sparsity)
    (16, "sigmoid", 1, (0.5, 0.5)),
    (16, "relu", 2, (0.0, 0.0)),
    (16, "tanh", 3, (0.9, 0.2)),
    (16, "sigmoid", 4, (1.0, 0.5)),
    (16, "relu", 5, (0.3, 1.0)),
    (8, "tanh", 8, (1.0, 1.0)),
    (1, "sigmoid", 2, (0.0, 0.0)),
    (7, "relu", 8, (0.0, 0.95)),
    (33, "tanh", 6, (0.99, 0.0)),
    (24, "sigmoid", 8, (0.8, 0.6)),
]


@pytest.mark.parametrize(("hidden", "activation", "bits", "sparsity"), CASES)
def test_decoded_weights_are_exactly_the_shared_weights(hidden, activation, bits, sparsity):
    model, layers = shared_model(hidden, activation, bits, sparsity)
    net, state, decoded = codec.decode(codec.encode(model, layers))
    assert net == MLPConfig(hidden=[hidden], activation=activation, dropout=0.15)
    assert set(state) == {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}
    for name, module in prunable(model):
        weight = state[f"{name}.weight"]
        assert weight.dtype == torch.float32
        assert torch.equal(weight, module.weight.detach())
        assert torch.equal(weight, torch.from_numpy(layers[name].dense()))
        rate = sparsity[0 if name == "fc1" else 1]
        if rate in (0.0, 1.0):  # a dense layer, or an all-zero one
            assert int(torch.count_nonzero(weight)) == (1 - rate) * weight.numel()
        assert len(torch.unique(weight[weight != 0])) <= 2**bits
        # decode(encode(x)) gives back the same shared layers
        assert np.array_equal(decoded[name].mask, layers[name].mask)
        assert np.array_equal(decoded[name].codes, layers[name].codes)
        assert np.array_equal(decoded[name].centroids, layers[name].centroids)
        assert decoded[name].codes.dtype == np.uint8
        assert decoded[name].centroids.dtype == np.float32


@pytest.mark.parametrize(("hidden", "activation", "bits", "sparsity"), CASES)
def test_biases_come_back_rounded_to_float16(hidden, activation, bits, sparsity):
    """Every bias the output depends on, rounded to float16; exactly the others (found here from the
    MLP's order of layers, which the encoder does not assume) come back as 0."""
    model, layers = shared_model(hidden, activation, bits, sparsity)
    _, state, _ = codec.decode(codec.encode(model, layers))
    expected = decoded_biases(model, layers)
    for name, _ in prunable(model):
        bias = state[f"{name}.bias"]
        assert bias.dtype == torch.float32
        assert torch.equal(bias, expected[name]), name
    if sparsity == (0.5, 0.5):
        assert torch.equal(state["fc1.bias"], model.fc1.bias.detach().half().float())  # every one stored
        assert not torch.equal(state["fc1.bias"], model.fc1.bias.detach())  # they really were rounded
    if sparsity[1] == 1.0:  # fc2 keeps nothing: no hidden unit reaches the output
        assert not state["fc1.bias"].any()


@pytest.mark.parametrize(("hidden", "activation", "bits", "sparsity"), CASES)
def test_loaded_model_computes_what_the_in_memory_model_computes(tmp_path, hidden, activation, bits, sparsity):
    model, layers = shared_model(hidden, activation, bits, sparsity, dropout=0.3)
    path = tmp_path / "model.nnc"
    codec.save(path, model, layers)
    loaded = codec.load(path)
    assert type(loaded) is MLP
    assert not loaded.training
    assert type(loaded.act) is type(model.act)
    assert loaded.dropout.p == 0.3
    assert loaded.fc1.out_features == hidden
    assert not any(parametrize.is_parametrized(m) for m in loaded.modules())
    x = inputs()
    with torch.no_grad():
        assert torch.equal(loaded(x), fp16_biases(model)(x))


def test_file_records_dropout_zero_and_other_activations():
    model, layers = shared_model(hidden=5, activation="tanh", dropout=0.0)
    net, _, _ = codec.decode(codec.encode(model, layers))
    assert net == MLPConfig(hidden=[5], activation="tanh", dropout=0.0)
    assert net.model_dump() == {"arch": "mlp", "hidden": [5], "activation": "tanh", "dropout": 0.0}


def test_encoding_is_deterministic():
    a = codec.encode(*shared_model(seed=3))
    b = codec.encode(*shared_model(seed=3))
    c = codec.encode(*shared_model(seed=4))
    assert a == b
    assert a != c


def test_file_starts_with_the_documented_header(small):
    _, _, data = small
    magic, version, length, crc = codec._HEAD.unpack_from(data)
    assert codec._HEAD.size == 13
    assert (magic, version) == (b"NNCZ", 3)
    assert length == len(data) - 13
    assert crc == zlib.crc32(data[13:])


def test_sparse_file_is_much_smaller_than_the_dense_state_dict():
    """784x256 at 95% sparsity and 4 bits: under 1/40 of torch.save, and far below the same model
    shared but not pruned."""
    torch.manual_seed(0)
    sparse = MLP()
    magnitude_prune(sparse, 0.95)
    make_permanent(sparse)
    state_bytes = io.BytesIO()
    torch.save(sparse.state_dict(), state_bytes)
    share_weights(sparse, 4)
    sparse_file = codec.encode(sparse, unshare_weights(sparse))
    torch.manual_seed(0)
    dense = MLP()
    share_weights(dense, 4)
    dense_file = codec.encode(dense, unshare_weights(dense))
    assert len(sparse_file) < state_bytes.getbuffer().nbytes / 40
    assert len(sparse_file) < len(dense_file) / 5
    # 4-bit codes for every one of the 203,264 weights, plus tables: about 4 bits per weight
    assert len(dense_file) < 203_264 * 4.2 / 8


# --- save / load --------------------------------------------------------------------------------


def test_save_returns_the_file_size_and_writes_the_encoded_bytes(tmp_path, small):
    model, layers, data = small
    path = tmp_path / "sub" / "model.nnc"
    size = codec.save(path, model, layers)
    assert size == path.stat().st_size == len(data)
    assert path.read_bytes() == data
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.nnc"]  # no temporary left


def test_save_is_atomic_when_writing_fails(tmp_path, small, monkeypatch):
    model, layers, data = small
    path = tmp_path / "model.nnc"
    path.write_bytes(b"previous contents")

    def half_then_fail(self, content):
        with open(self, "wb") as fh:
            fh.write(content[: len(content) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", half_then_fail)
    with pytest.raises(OSError, match="No space"):
        codec.save(path, model, layers)
    monkeypatch.undo()
    assert path.read_bytes() == b"previous contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.nnc"]


def test_save_replaces_the_file_rather_than_writing_into_it(tmp_path, small):
    """A reader holding the old file keeps the whole old file: the new one is a new inode."""
    model, layers, data = small
    path = tmp_path / "model.nnc"
    path.write_bytes(b"old")
    with open(path, "rb") as reader:
        codec.save(path, model, layers)
        assert reader.read() == b"old"
    assert path.read_bytes() == data


def test_load_of_a_missing_file(tmp_path):
    path = tmp_path / "nope.nnc"
    with pytest.raises(CheckpointError) as info:
        codec.load(path)
    message = str(info.value)
    assert message.startswith(str(path))
    assert "missing" in message
    assert "\n" not in message


def test_load_of_a_directory(tmp_path):
    with pytest.raises(CheckpointError, match="cannot read"):
        codec.load(tmp_path)


def expect_error(tmp_path, data: bytes, *words: str) -> str:
    """load() of a file holding `data` raises a one-line CheckpointError naming it and `words`."""
    path = tmp_path / "bad.nnc"
    path.write_bytes(data)
    with pytest.raises(CheckpointError) as info:
        codec.load(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert "\n" not in message
    for word in words:
        assert word in message
    return message


def test_truncated_files(tmp_path, either):
    _, _, data = either
    head = codec._HEAD.size
    for n in sorted({0, 3, head - 1, head, head + 1, len(data) // 2, len(data) - 4, len(data) - 1}):
        message = expect_error(tmp_path, data[:n], "truncated")
        if n < head:
            assert f"({n} bytes" in message
        else:
            assert f"found {n - head})" in message


def test_wrong_magic(tmp_path, either):
    _, _, data = either
    expect_error(tmp_path, b"NNCX" + data[4:], "not a compressed model file", "NNCX")


@pytest.mark.parametrize("version", [0, 4, 5, 255])
def test_wrong_version(tmp_path, either, version):
    _, _, data = either
    body = data[codec._HEAD.size :]
    message = expect_error(tmp_path, repack(body, version), f"format version {version}", "supports versions 1, 2 and 3")
    assert ("written by a newer nncompress" in message) == (version > 3)


def test_a_higher_version_is_refused_in_one_line():
    body = b"\x02{}"
    with pytest.raises(CheckpointError) as info:
        codec.decode(repack(body, 4), "new.nnc")
    assert str(info.value) == (
        "new.nnc: format version 4, this reader supports versions 1, 2 and 3 "
        "(written by a newer nncompress: upgrade to read it)"
    )


@pytest.mark.parametrize("extra", [b"\0", b"garbage", b"\0\0\0\0"])
def test_trailing_bytes(tmp_path, either, extra):
    _, _, data = either
    expect_error(tmp_path, data + extra, "trailing bytes")


def test_a_pickle_file(tmp_path, small):
    model, _, _ = small
    expect_error(tmp_path, pickle.dumps(model.state_dict()), "not a compressed model file")


def test_a_torch_save_file(tmp_path, small):
    model, _, _ = small
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    expect_error(tmp_path, buffer.getvalue(), "not a compressed model file")


def test_every_flipped_byte_is_caught(either):
    """Each single-byte change anywhere in the file is refused (header checks or the CRC)."""
    _, _, data = either
    assert len(data) < 10_000
    missed = []
    for pos in range(len(data)):
        for flip in (0x01, 0x80, 0xFF):
            bad = bytearray(data)
            bad[pos] ^= flip
            try:
                codec.decode(bytes(bad), "m.nnc")
            except CheckpointError as exc:
                assert str(exc).startswith("m.nnc: ")
            else:
                missed.append((pos, flip))
    assert missed == []


def test_a_flipped_body_byte_is_a_crc_error(tmp_path, either):
    _, _, data = either
    bad = bytearray(data)
    bad[len(data) // 2] ^= 0x10
    expect_error(tmp_path, bytes(bad), "corrupted", "CRC-32")


def _meta_bodies(version: int) -> dict[str, bytes]:
    length = struct.Struct(META_LEN[version])
    return {
        "empty": b"",
        "one-byte": b"\x05",
        "meta-past-end": length.pack(5) + b"{}",
        "not-utf8": length.pack(4) + b"\xff\xfe\xfd\xfc",
        "not-json": length.pack(10) + b"not json!!",
        "huge-meta-length": length.pack(2 ** (8 * length.size) - 1) + b"{}",
        "empty-object": length.pack(2) + b"{}",
        "a-list": length.pack(2) + b"[]",
        "deep": length.pack(60_000) + b"[" * 30_000 + b"]" * 30_000,  # past the JSON parser's recursion limit
    }


@pytest.mark.parametrize("name", list(_meta_bodies(2)))
@pytest.mark.parametrize("version", [2, 1])
def test_correct_crc_but_unreadable_meta(tmp_path, version, name):
    body = _meta_bodies(version)[name]
    expect_error(tmp_path, repack(body, version), "invalid content")


_DELETE = object()


def _edit(path, value):
    def edit(meta):
        target = meta
        for key in path[:-1]:
            target = target[key]
        if value is _DELETE:
            del target[path[-1]]
        else:
            target[path[-1]] = value
        return meta

    return edit


# Version 1: the one-hidden-layer MLP's {hidden_size, activation, dropout}, layers fc1 and fc2.
META_EDITS_V1 = {
    "list": lambda meta: [meta],
    "extra-key": _edit(["extra"], 1),
    "no-layers": _edit(["layers"], _DELETE),
    "model-not-dict": _edit(["model"], [16]),
    "model-v2": _edit(["model"], {"arch": "mlp", "hidden": [16], "activation": "sigmoid", "dropout": 0.15}),
    "hidden-zero": _edit(["model", "hidden_size"], 0),
    "hidden-bool": _edit(["model", "hidden_size"], True),
    "hidden-float": _edit(["model", "hidden_size"], 16.0),
    "hidden-huge": _edit(["model", "hidden_size"], 10**9),
    "activation": _edit(["model", "activation"], "gelu"),
    "activation-list": _edit(["model", "activation"], ["relu"]),
    "dropout-one": _edit(["model", "dropout"], 1.0),
    "dropout-negative": _edit(["model", "dropout"], -0.1),
    "dropout-string": _edit(["model", "dropout"], "0.1"),
    "dropout-bool": _edit(["model", "dropout"], False),
    "layers-not-list": _edit(["layers"], {"fc1": 1}),
    "layers-swapped": lambda meta: {**meta, "layers": meta["layers"][::-1]},
    "layer-missing": lambda meta: {**meta, "layers": meta["layers"][:1]},
    "layer-not-dict": lambda meta: {**meta, "layers": [meta["layers"][0], "fc2"]},
    "shape": _edit(["layers", 0, "shape"], [16, 785]),
    "shape-missing": _edit(["layers", 0, "shape"], _DELETE),
    "nnz-negative": _edit(["layers", 0, "nnz"], -1),
    "nnz-too-many": _edit(["layers", 1, "nnz"], 161),
    "nnz-string": _edit(["layers", 0, "nnz"], "3"),
    "counts-sum": lambda meta: _edit(["layers", 0, "counts"], [c + 1 for c in meta["layers"][0]["counts"]])(meta),
    "counts-negative": _edit(["layers", 1, "counts"], [-1, 1]),
    "counts-float": lambda meta: _edit(["layers", 1, "counts"], [float(c) for c in meta["layers"][1]["counts"]])(meta),
    "counts-too-long": lambda meta: _edit(["layers", 1, "counts"], [meta["layers"][1]["nnz"]] + [0] * 256)(meta),
    "counts-not-list": _edit(["layers", 1, "counts"], 5),
    "counts-empty": _edit(["layers", 1, "counts"], []),
}

# Version 2: the network's model section (validated as params.yaml's), its layers checked against
# the network it builds.
META_EDITS_V2 = {
    **{k: v for k, v in META_EDITS_V1.items() if not k.startswith(("model-", "hidden-", "activation", "dropout"))},
    "no-model": _edit(["model"], _DELETE),
    "model-not-dict": _edit(["model"], [16]),
    "model-v1": _edit(["model"], {"hidden_size": 16, "activation": "sigmoid", "dropout": 0.15}),
    "model-unknown-key": _edit(["model", "hidden_size"], 16),
    "arch-missing": _edit(["model", "arch"], _DELETE),
    "arch-not-string": _edit(["model", "arch"], 5),
    "hidden-missing": _edit(["model", "hidden"], _DELETE),
    "hidden-int": _edit(["model", "hidden"], 16),
    "hidden-empty": _edit(["model", "hidden"], []),
    "hidden-zero": _edit(["model", "hidden"], [0]),
    "hidden-bool": _edit(["model", "hidden"], [True]),
    "hidden-float": _edit(["model", "hidden"], [16.0]),
    "hidden-huge": _edit(["model", "hidden"], [10**9]),
    "hidden-other": _edit(["model", "hidden"], [17]),  # a valid network, not the file's layers
    "hidden-two": _edit(["model", "hidden"], [16, 16]),  # one layer more than the file
    "activation": _edit(["model", "activation"], "gelu"),
    "activation-list": _edit(["model", "activation"], ["relu"]),
    "dropout-one": _edit(["model", "dropout"], 1.0),
    "dropout-negative": _edit(["model", "dropout"], -0.1),
    "dropout-bool": _edit(["model", "dropout"], False),
    "lenet300": _edit(["model"], {"arch": "lenet300"}),  # a registered network, other layers
    "lenet5": _edit(["model"], {"arch": "lenet5"}),
    "lenet5-key": _edit(["model"], {"arch": "lenet5", "hidden": [16]}),
    "layers-empty": _edit(["layers"], []),
    "layer-twice": lambda meta: {**meta, "layers": [*meta["layers"], meta["layers"][-1]]},
    "layer-extra-key": _edit(["layers", 0, "kind"], "Linear"),
    "name-other": _edit(["layers", 0, "name"], "fc0"),
    "name-not-string": _edit(["layers", 0, "name"], 1),
    "shape-transposed": _edit(["layers", 0, "shape"], [784, 16]),
    "shape-3d": _edit(["layers", 0, "shape"], [16, 784, 1]),
    "shape-4d": _edit(["layers", 0, "shape"], [16, 784, 1, 1]),
    "shape-zero": _edit(["layers", 0, "shape"], [0, 784]),
    "shape-float": _edit(["layers", 0, "shape"], [16.0, 784]),
    "shape-string": _edit(["layers", 0, "shape"], "16x784"),
    "shape-huge": _edit(["layers", 0, "shape"], [2**20, 2**20]),
}


@pytest.mark.parametrize("edit", sorted(META_EDITS_V1))
def test_correct_crc_but_invalid_meta_v1(tmp_path, small_v1, edit):
    _, _, data = small_v1
    meta, rest = split_body(data)
    expect_error(tmp_path, with_meta(META_EDITS_V1[edit](meta), rest, 1), "invalid content")


@pytest.mark.parametrize("edit", sorted(META_EDITS_V2))
def test_correct_crc_but_invalid_meta(tmp_path, small_v2, edit):
    _, _, data = small_v2
    meta, rest = split_body(data)
    expect_error(tmp_path, with_meta(META_EDITS_V2[edit](meta), rest), "invalid content")


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        ("hidden-zero", "model.hidden[0] must be in 1..65536, got 0"),
        ("activation", "model.activation must be one of sigmoid, relu, tanh, got 'gelu'"),
        ("arch-missing", "missing key model.arch"),
        ("lenet5-key", "unknown key model.hidden"),
        ("hidden-other", "fc1 has shape [16, 784], the network's is [17, 784]"),
        ("hidden-two", "layers ['fc1', 'fc2'] are not the network's ['fc1', 'fc2', 'fc3']"),
        ("lenet5", "layers ['fc1', 'fc2'] are not the network's ['conv1', 'conv2', 'fc1', 'fc2']"),
        ("shape-transposed", "fc1 has shape [784, 16], the network's is [16, 784]"),
        ("shape-3d", "fc1 has shape [16, 784, 1], not 2 or 4 positive sizes"),
        ("shape-huge", "more than 268,435,456 weights"),
    ],
)
def test_invalid_meta_says_what_is_wrong(tmp_path, small_v2, edit, words):
    _, _, data = small_v2
    meta, rest = split_body(data)
    expect_error(tmp_path, with_meta(META_EDITS_V2[edit](meta), rest), "invalid content", words)


def test_an_unregistered_network_is_named(tmp_path, small_v2):
    """A file of a network this process does not know (another user's, or a typo): one line naming it."""
    _, _, data = small_v2
    meta, rest = split_body(data)
    meta["model"] = {"arch": "resnet18", "depth": 18}
    message = expect_error(tmp_path, with_meta(meta, rest))
    assert message.endswith(
        ": holds a network of model.arch 'resnet18', which is not registered (registered: lenet300, lenet5, mlp)"
    )


def test_a_network_too_large_to_allocate_is_refused_before_it_is_built(tmp_path, small_v2, monkeypatch):
    """Shapes consistent with a network of 10**10 parameters: refused from its layers on the meta
    device, without allocating it."""
    _, _, data = small_v2
    meta, rest = split_body(data)
    meta["model"]["hidden"] = [65_536, 65_536, 65_536]
    allocated = []
    real_build = MLPConfig.build
    monkeypatch.setattr(MLPConfig, "build", lambda self: allocated.append(torch.empty(0).device) or real_build(self))
    expect_error(
        tmp_path,
        with_meta(meta, rest),
        "invalid content",
        "layers ['fc1', 'fc2'] are not the network's ['fc1', 'fc2', 'fc3', 'fc4']",
    )
    assert allocated == [torch.device("meta")]
    meta["layers"] = [
        {"name": f"fc{i + 1}", "shape": shape, "nnz": 0, "counts": []}
        for i, shape in enumerate([[65_536, 784], [65_536, 65_536], [65_536, 65_536], [10, 65_536]])
    ]
    expect_error(tmp_path, with_meta(meta, rest), "invalid content", "more than 268,435,456 weights")


def test_repacked_original_meta_still_loads(legacy):
    """The helpers above change only what each case edits: unedited, the file decodes."""
    model, _, data = legacy
    meta, rest = split_body(data)
    _, state, _ = codec.decode(with_meta(meta, rest, data[4]))
    assert torch.equal(state["fc1.weight"], model.fc1.weight.detach())


def test_correct_crc_but_tables_cut_short(tmp_path, legacy):
    _, _, data = legacy
    meta, rest = split_body(data)
    tables = 4 * sum(len(x["counts"]) for x in meta["layers"]) + 2 * (16 + 10)
    expect_error(tmp_path, with_meta(meta, rest[: tables - 2], data[4]), "invalid content", "past the end")


@pytest.mark.parametrize("extra", [1, 2, 3])
def test_correct_crc_but_stream_not_whole_words(tmp_path, either, extra):
    _, _, data = either
    body = data[codec._HEAD.size :] + b"\0" * extra
    expect_error(tmp_path, repack(body, data[4]), "invalid content", "32-bit words")


def test_correct_crc_but_stream_cut_short(tmp_path, either):
    _, _, data = either
    expect_error(tmp_path, repack(data[codec._HEAD.size : -8], data[4]), "invalid content")


def test_correct_crc_but_corrupted_stream_is_a_checkpoint_error(legacy):
    """A file from another (buggy) encoder: valid header, CRC and meta, garbage in the coded stream.
    Whatever the range decoder makes of it, the reader must answer with a CheckpointError."""
    _, _, data = legacy
    meta, rest = split_body(data)
    tables = 4 * sum(len(x["counts"]) for x in meta["layers"]) + 2 * (16 + 10)
    body = data[codec._HEAD.size :]
    stream_start = len(body) - (len(rest) - tables)
    wrong = []
    for pos in range(stream_start, len(body), 29):
        bad = bytearray(body)
        bad[pos] ^= 0xFF
        try:
            codec.decode(repack(bytes(bad), data[4]), "m.nnc")
        except CheckpointError:
            pass
        except Exception as exc:  # noqa: BLE001 - any other exception is the failure being tested
            wrong.append((pos, type(exc).__name__, str(exc)))
    assert wrong == []


def test_correct_crc_but_consistent_wrong_hidden_size_is_a_checkpoint_error(legacy):
    """Meta that passes every check (the network it names has the layers it lists) but does not
    describe the tables and stream that follow."""
    _, _, data = legacy
    errors = {}
    for hidden in (12, 15, 17, 20):
        meta, rest = split_body(data)
        if data[4] == 1:
            meta["model"]["hidden_size"] = hidden
        else:
            meta["model"]["hidden"] = [hidden]
        meta["layers"][0]["shape"] = [hidden, 784]
        meta["layers"][1]["shape"] = [10, hidden]
        meta["layers"][1]["nnz"] = min(meta["layers"][1]["nnz"], 10 * hidden)
        meta["layers"][1]["counts"] = [meta["layers"][1]["nnz"]]
        try:
            codec.decode(with_meta(meta, rest, data[4]), "m.nnc")
        except CheckpointError:
            continue
        except Exception as exc:  # noqa: BLE001
            errors[hidden] = f"{type(exc).__name__}: {exc}"
    assert errors == {}


def test_decode_names_its_source(either):
    _, _, data = either
    with pytest.raises(CheckpointError, match=r"^weights\.nnc: truncated"):
        codec.decode(data[:-1], "weights.nnc")
    with pytest.raises(CheckpointError, match=r"^file: truncated"):
        codec.decode(data[:5])


def test_reading_never_unpickles(tmp_path, either, monkeypatch):
    """load() parses numbers and JSON only: neither pickle nor torch.load is ever called."""
    _, _, data = either

    def forbidden(*args, **kwargs):
        raise AssertionError("unpickling called")

    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    path = tmp_path / "m.nnc"
    path.write_bytes(data)
    assert type(codec.load(path)) is MLP


# --- versions 1 and 2 -------------------------------------------------------------------------


def test_the_committed_version_1_file_decodes_to_its_mlp():
    """tests/data/tiny_v1.nnc, written by the version-1 encoder, decodes to the MLP it held."""
    data = (DATA / "tiny_v1.nnc").read_bytes()
    assert data[4] == 1
    model, layers = tiny_v1_model()
    assert encode_v1(model, layers) == data  # encode_v1 writes what that encoder wrote
    net, state, decoded = codec.decode(data, "tiny_v1.nnc")
    assert net == MLPConfig(hidden=[4], activation="relu", dropout=0.1)
    assert list(state) == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    for key, tensor in model.state_dict().items():
        assert torch.equal(state[key], tensor if key.endswith("weight") else tensor.half().float()), key
    for name, layer in layers.items():
        assert np.array_equal(decoded[name].mask, layer.mask)
        assert np.array_equal(decoded[name].codes, layer.codes)
        assert np.array_equal(decoded[name].centroids, layer.centroids)
    loaded = codec.load(DATA / "tiny_v1.nnc")
    assert type(loaded) is MLP and not loaded.training
    assert [name for name, _ in loaded.named_modules()] == ["", "fc1", "act", "dropout", "fc2"]
    assert type(loaded.act) is nn.ReLU and loaded.dropout.p == 0.1
    x = inputs()
    with torch.no_grad():
        assert torch.equal(loaded(x), fp16_biases(model)(x))


def check_decoded(net: NetConfig, model: nn.Module, layers, decoded, loaded: nn.Module) -> None:
    """A file of `model` decoded: its shared layers are `layers`, and the network `loaded` from it
    (in eval mode) computes what `net`'s network computes with `model`'s weights and float16 biases."""
    for name, layer in layers.items():
        assert decoded[name].mask.shape == layer.mask.shape
        assert np.array_equal(decoded[name].mask, layer.mask)
        assert np.array_equal(decoded[name].codes, layer.codes)
        assert np.array_equal(decoded[name].centroids, layer.centroids)
    assert type(loaded) is type(model) and not loaded.training
    expected = net.build().eval()
    expected.load_state_dict(
        {k: v if k.endswith("weight") else v.half().float() for k, v in model.state_dict().items()}
    )
    x = inputs()
    with torch.no_grad():
        assert torch.equal(loaded(x), expected(x))


def check_version_2_file(name: str, net: NetConfig, model: nn.Module, layers) -> None:
    """tests/data/`name`, written by the version-2 encoder, is what encode_v2 writes and decodes to
    the network it held: its weights, its float16 biases (every one stored), its outputs."""
    data = (DATA / name).read_bytes()
    assert data[4] == 2
    assert encode_v2(model, layers, net) == data  # encode_v2 writes what that encoder wrote
    decoded_net, state, decoded = codec.decode(data, name)
    assert decoded_net == net
    assert list(state) == list(model.state_dict())
    for key, tensor in model.state_dict().items():
        assert torch.equal(state[key], tensor if key.endswith("weight") else tensor.half().float()), key
    check_decoded(net, model, layers, decoded, codec.load(DATA / name))


def test_the_committed_version_2_files_decode_to_their_networks():
    """tests/data/tiny_v2.nnc (conftest's tiny_mlp, as tests/test_cli.py's tiny_nnc wrote it before
    version 3) and lenet5_v2.nnc (test_cli's fixed LeNet-5)."""
    model, layers = tiny_mlp()
    check_version_2_file("tiny_v2.nnc", MLPConfig(hidden=[4], activation="relu", dropout=0.1), model, layers)
    net, model, layers = lenet5_shared()
    check_version_2_file("lenet5_v2.nnc", net, model, layers)


@pytest.mark.parametrize(("hidden", "activation", "bits", "sparsity"), CASES)
def test_the_same_model_decodes_alike_from_every_version(hidden, activation, bits, sparsity):
    """Versions 1, 2 and 3 of the same model: the same section, weights and shared layers, and the
    same biases but for those version 3 leaves out; versions 1 and 2 differ in their header's
    version and metadata only (the tables and coded stream are the same)."""
    model, layers = shared_model(hidden, activation, bits, sparsity)
    v1, v2, v3 = encode_v1(model, layers), encode_v2(model, layers), codec.encode(model, layers)
    (net1, state1, layers1), (net2, state2, layers2) = codec.decode(v1), codec.decode(v2)
    net3, state3, layers3 = codec.decode(v3)
    assert net1 == net2 == net3 == MLPConfig(hidden=[hidden], activation=activation, dropout=0.15)
    assert list(state1) == list(state2) == list(state3)
    assert all(torch.equal(state1[k], state2[k]) for k in state1)
    biases = decoded_biases(model, layers)
    for key in state1:
        expected = state1[key] if key.endswith("weight") else biases[key.removesuffix(".bias")]
        assert torch.equal(state3[key], expected), key
    for name in layers:
        for other in (layers2, layers3):
            assert np.array_equal(layers1[name].mask, other[name].mask)
            assert np.array_equal(layers1[name].codes, other[name].codes)
            assert np.array_equal(layers1[name].centroids, other[name].centroids)
    assert len(v3) < len(v2)
    (meta1, rest1), (meta2, rest2) = split_body(v1), split_body(v2)
    assert rest1 == rest2
    assert meta1["layers"] == meta2["layers"]
    assert meta2["model"] == {"arch": "mlp", "hidden": [hidden], "activation": activation, "dropout": 0.15}
    assert len(v2) - len(v1) == 2 + len(json.dumps(meta2["model"], separators=(",", ":"))) - len(
        json.dumps(meta1["model"], separators=(",", ":"))
    )


# --- every network: the registered ones and a user's -------------------------------------------


class ConvNet(nn.Module):
    """A user's network: a conv without bias, a strided and padded conv with a non-square kernel,
    a Linear head; layers under names of their own (features.0, features.2, head)."""

    def __init__(self, channels: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, channels, 3, bias=False),  # 28x28 -> 26x26
            nn.ReLU(),
            nn.Conv2d(channels, 2 * channels, (3, 2), stride=2, padding=1),  # -> 13x14
            nn.ReLU(),
        )
        self.head = nn.Linear(2 * channels * 13 * 14, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x.reshape(len(x), 1, 28, 28)).flatten(1))


@pytest.fixture
def convnet():
    """ConvNet registered as a user registers a network, removed from the registry afterwards."""
    assert "convnet" not in NETS

    @register("convnet")
    class ConvNetConfig(NetConfig):
        channels: Positive

        def build(self) -> ConvNet:
            return ConvNet(self.channels)

    try:
        yield ConvNetConfig
    finally:
        NETS.pop("convnet", None)


NETWORKS = {
    "mlp-one": MLPConfig(hidden=[24], activation="tanh", dropout=0.2),
    "mlp-two": MLPConfig(hidden=[32, 16], activation="relu", dropout=0.0),
    "mlp-three": MLPConfig(hidden=[20, 12, 6], activation="sigmoid", dropout=0.5),
    "lenet300": NETS["lenet300"](),
    "lenet5": NETS["lenet5"](),
}


def shared_network(net: NetConfig, sparsity: float = 0.8, bits: int = 4, seed: int = 0):
    """`net`'s network, each layer magnitude-pruned to `sparsity` and weight-shared with `bits`;
    biases large and random (few exact in float16)."""
    torch.manual_seed(seed)
    model = net.build()
    magnitude_prune(model, sparsity)
    make_permanent(model)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for _, module in prunable(model):
            if module.bias is not None:
                module.bias.uniform_(-3.0, 3.0, generator=g)
    share_weights(model, bits)
    return model.eval(), unshare_weights(model)


def check_round_trip(net: NetConfig, model: nn.Module, layers, data: bytes) -> nn.Module:
    """The file holds exactly `model`: its section, shared layers, weights, fp16 biases (or 0 for
    those the output does not depend on) and so its outputs."""
    assert data[4] == 3
    decoded_net, state, decoded = codec.decode(data)
    assert decoded_net == net
    assert list(state) == list(net.build().state_dict())  # in the network's order
    for key, tensor in model.state_dict().items():
        assert state[key].dtype == torch.float32
        if key.endswith("weight"):
            assert torch.equal(state[key], tensor), key
        else:
            assert torch.all((state[key] == tensor.half().float()) | (state[key] == 0)), key
    assert set(decoded) == set(layers) == {name for name, _ in prunable(model)}
    loaded = codec.from_bytes(data)
    assert not any(parametrize.is_parametrized(m) for m in loaded.modules())
    check_decoded(net, model, layers, decoded, loaded)
    return loaded


@pytest.mark.parametrize("name", list(NETWORKS))
def test_every_registered_network_round_trips_exactly(name):
    net = NETWORKS[name]
    model, layers = shared_network(net)
    data = codec.encode(model, layers, net)
    check_round_trip(net, model, layers, data)
    assert codec.encode(model, layers, net) == data  # deterministic
    if name == "lenet5":
        assert {n: layers[n].mask.ndim for n in layers} == {"conv1": 4, "conv2": 4, "fc1": 2, "fc2": 2}


def test_an_mlp_needs_no_section_and_a_shrunk_one_records_its_own_widths():
    """An MLP's section is read from it (so params.yaml's mlp section with other widths, as after
    structured pruning, still gives the file of the network it holds)."""
    net = MLPConfig(hidden=[32, 16], activation="relu", dropout=0.0)
    model, layers = shared_network(net)
    assert codec.encode(model, layers) == codec.encode(model, layers, net)
    wider = MLPConfig(hidden=[256, 16], activation="relu", dropout=0.0)
    assert codec.decode(codec.encode(model, layers, wider))[0] == net
    # LeNet-300-100 is an MLP too: without its section it is recorded as the mlp it is
    lenet300, lenet_layers = shared_network(NETS["lenet300"](), sparsity=0.95, bits=2)
    as_mlp = MLPConfig(hidden=[300, 100], activation="relu", dropout=0.0)
    check_round_trip(as_mlp, lenet300, lenet_layers, codec.encode(lenet300, lenet_layers))


@pytest.mark.parametrize(("channels", "bits", "sparsity"), [(2, 1, 0.5), (3, 4, 0.9), (4, 8, 0.0), (1, 3, 0.99)])
def test_a_users_conv_network_round_trips_exactly(convnet, channels, bits, sparsity):
    net = convnet(channels=channels)
    model, layers = shared_network(net, sparsity, bits, seed=channels)
    data = codec.encode(model, layers, net)
    loaded = check_round_trip(net, model, layers, data)
    assert type(loaded) is ConvNet
    assert loaded.features[0].bias is None  # no biases stored for it
    assert {name: layer.mask.shape for name, layer in layers.items()} == {
        "features.0": (channels, 1, 3, 3),
        "features.2": (2 * channels, channels, 3, 2),
        "head": (10, 2 * channels * 13 * 14),
    }
    section, sizes, _ = v3_parts(data)
    assert section == {"arch": "convnet", "channels": channels}
    assert sizes == [(int(layer.mask.sum()), len(layer.centroids)) for layer in layers.values()]
    layout = codec.describe(data).layout
    assert layout.total == len(data) and layout.tables == {}
    assert set(layout.information) == set(layers)
    assert set(layout.biases) == {"features.2", "head"}  # features.0 has none
    assert layout.biases["features.2"][1] == 2 * channels and layout.biases["head"] == (10, 10)
    assert layout.information["features.0"]["biases"] == 0


def test_a_conv_mask_is_coded_per_input_channel_and_kernel_position(convnet):
    """Output channels that keep the same kernel positions cost little: the mask's column model
    runs over (input channel, kernel position), as over a Linear's inputs."""
    rng = np.random.default_rng(0)
    same = np.zeros((64, 8, 5, 5), dtype=bool)
    same[:, rng.random((8, 5, 5)) < 0.2] = True  # every output channel keeps the same positions
    scattered = rng.permuted(same.reshape(64, -1), axis=1).reshape(same.shape)  # same density, anywhere
    assert same.sum() == scattered.sum()
    bits, bits_v2 = {}, {}
    for name, mask in (("same", same), ("scattered", scattered)):
        bits[name] = min(
            entropy.cost(layer_coding._mask_ops(layer_coding.matrix(mask), by_rows)) for by_rows in (False, True)
        )
        layer = SharedLayer(mask, np.zeros(int(mask.sum()), np.uint8), np.float32([0.5]))
        bits_v2[name], _ = codec.information_bits(layer)  # the model of versions 1 and 2
    assert bits["same"] < bits["scattered"] / 5
    assert bits_v2["same"] < bits_v2["scattered"] / 5


def test_decoding_leaves_torchs_rng_as_it_was(convnet):
    net = convnet(channels=2)
    data = codec.encode(*shared_network(net), net)
    torch.manual_seed(5)
    before = torch.get_rng_state()
    codec.from_bytes(data)
    codec.decode(data)
    assert torch.equal(torch.get_rng_state(), before)


def test_the_encoder_refuses_what_the_format_cannot_hold(convnet):
    class Normed(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(784, 10)
            self.norm = nn.BatchNorm1d(10)

        def forward(self, x):
            return self.norm(self.fc(x))

    model = Normed()
    with pytest.raises(ValueError, match=r"Linear and Conv2d layers only; this one has state besides .*norm\.weight"):
        codec.encode(
            model, {"fc": SharedLayer(np.ones((10, 784), bool), np.zeros(7840, np.uint8), np.ones(1, np.float32))}
        )
    net = convnet(channels=2)
    model, layers = shared_network(net)
    with pytest.raises(ValueError, match="needs its model section"):
        codec.encode(model, layers)
    with pytest.raises(
        ValueError, match=r"model\.arch convnet builds layers .*features\.0 \[3, 1, 3, 3\].*the model has"
    ):
        codec.encode(model, layers, convnet(channels=3))
    with pytest.raises(ValueError, match="shared layers"):
        codec.encode(model, {k: v for k, v in layers.items() if k != "head"}, net)


def test_a_file_naming_a_network_the_format_cannot_hold_is_refused(tmp_path, small_v2, unholdable_networks):
    """A registered network with state besides its layers (here a BatchNorm), or whose code fails."""
    _, _, data = small_v2
    meta, rest = split_body(data)
    meta["model"] = {"arch": "normed"}
    expect_error(tmp_path, with_meta(meta, rest), "invalid content", "Linear and Conv2d layers only", "norm.weight")
    meta["model"] = {"arch": "broken"}
    expect_error(
        tmp_path,
        with_meta(meta, rest),
        "invalid content",
        "building the network failed (RuntimeError: no such layer)",
    )
