"""The .nnc file: exact round trips of the shared weights, fp16 biases, atomic saves, and a
CheckpointError naming the file for every kind of bad file."""

from __future__ import annotations

import io
import json
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn.utils import parametrize

from nncompress.compress import codec
from nncompress.compress.quantize import share_weights, unshare_weights
from nncompress.errors import CheckpointError
from nncompress.model import MLP
from nncompress.prune.masks import make_permanent, prunable, unstructured

magnitude_prune = unstructured("magnitude", "layer")  # the old pruning.magnitude_prune


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


def repack(body: bytes, version: int = codec.VERSION) -> bytes:
    """A file around `body` with a correct header and CRC, as another encoder would write it."""
    return codec._HEAD.pack(codec.MAGIC, version, len(body), zlib.crc32(body)) + body


def split_body(data: bytes):
    """(meta dict, the bytes after the meta) of a file."""
    body = data[codec._HEAD.size :]
    (meta_len,) = struct.unpack_from("<H", body)
    meta = json.loads(body[2 : 2 + meta_len])
    return meta, body[2 + meta_len :]


def with_meta(meta, rest: bytes) -> bytes:
    raw = meta if isinstance(meta, bytes) else json.dumps(meta).encode()
    return repack(struct.pack("<H", len(raw)) + raw + rest)


@pytest.fixture(scope="module")
def small():
    """A small model and its file (a few KB), for the corruption tests."""
    model, layers = shared_model(hidden=16, bits=3, sparsity=(0.7, 0.3))
    return model, layers, codec.encode(model, layers)


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
    arch, state, decoded = codec.decode(codec.encode(model, layers))
    assert arch == {"hidden_size": hidden, "activation": activation, "dropout": 0.15}
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


@pytest.mark.parametrize(("hidden", "activation", "bits", "sparsity"), CASES[:6])
def test_biases_come_back_rounded_to_float16(hidden, activation, bits, sparsity):
    model, layers = shared_model(hidden, activation, bits, sparsity)
    _, state, _ = codec.decode(codec.encode(model, layers))
    for name, module in prunable(model):
        bias = state[f"{name}.bias"]
        assert bias.dtype == torch.float32
        assert torch.equal(bias, module.bias.detach().half().float())
    assert not torch.equal(state["fc1.bias"], model.fc1.bias.detach())  # they really were rounded


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
    arch, _, _ = codec.decode(codec.encode(model, layers))
    assert arch == {"hidden_size": 5, "activation": "tanh", "dropout": 0.0}


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
    assert (magic, version) == (b"NNCZ", 1)
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


def test_truncated_files(tmp_path, small):
    _, _, data = small
    head = codec._HEAD.size
    for n in sorted({0, 3, head - 1, head, head + 1, len(data) // 2, len(data) - 4, len(data) - 1}):
        message = expect_error(tmp_path, data[:n], "truncated")
        if n < head:
            assert f"({n} bytes" in message
        else:
            assert f"found {n - head})" in message


def test_wrong_magic(tmp_path, small):
    _, _, data = small
    expect_error(tmp_path, b"NNCX" + data[4:], "not a compressed model file", "NNCX")


@pytest.mark.parametrize("version", [0, 2, 255])
def test_wrong_version(tmp_path, small, version):
    _, _, data = small
    body = data[codec._HEAD.size :]
    expect_error(tmp_path, repack(body, version), f"format version {version}", "supports version 1")


@pytest.mark.parametrize("extra", [b"\0", b"garbage", b"\0\0\0\0"])
def test_trailing_bytes(tmp_path, small, extra):
    _, _, data = small
    expect_error(tmp_path, data + extra, "trailing bytes")


def test_a_pickle_file(tmp_path, small):
    model, _, _ = small
    expect_error(tmp_path, pickle.dumps(model.state_dict()), "not a compressed model file")


def test_a_torch_save_file(tmp_path, small):
    model, _, _ = small
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    expect_error(tmp_path, buffer.getvalue(), "not a compressed model file")


def test_every_flipped_byte_is_caught(small):
    """Each single-byte change anywhere in the file is refused (header checks or the CRC)."""
    _, _, data = small
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


def test_a_flipped_body_byte_is_a_crc_error(tmp_path, small):
    _, _, data = small
    bad = bytearray(data)
    bad[len(data) // 2] ^= 0x10
    expect_error(tmp_path, bytes(bad), "corrupted", "CRC-32")


@pytest.mark.parametrize(
    "body",
    [b"", b"\x05", b"\x05\x00{}", b"\x04\x00\xff\xfe\xfd\xfc", b"\x0a\x00not json!!", b"\xff\xff{}"],
    ids=["empty", "one-byte", "meta-past-end", "not-utf8", "not-json", "huge-meta-length"],
)
def test_correct_crc_but_unreadable_meta(tmp_path, body):
    expect_error(tmp_path, repack(body), "invalid content")


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


META_EDITS = {
    "list": lambda meta: [meta],
    "extra-key": _edit(["extra"], 1),
    "no-layers": _edit(["layers"], _DELETE),
    "model-not-dict": _edit(["model"], [16]),
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


@pytest.mark.parametrize("edit", sorted(META_EDITS))
def test_correct_crc_but_invalid_meta(tmp_path, small, edit):
    _, _, data = small
    meta, rest = split_body(data)
    expect_error(tmp_path, with_meta(META_EDITS[edit](meta), rest), "invalid content")


def test_repacked_original_meta_still_loads(small):
    """The helpers above change only what each case edits: unedited, the file decodes."""
    model, _, data = small
    meta, rest = split_body(data)
    _, state, _ = codec.decode(with_meta(meta, rest))
    assert torch.equal(state["fc1.weight"], model.fc1.weight.detach())


def test_correct_crc_but_tables_cut_short(tmp_path, small):
    _, _, data = small
    meta, rest = split_body(data)
    tables = 4 * sum(len(x["counts"]) for x in meta["layers"]) + 2 * (16 + 10)
    expect_error(tmp_path, with_meta(meta, rest[: tables - 2]), "invalid content", "past the end")


@pytest.mark.parametrize("extra", [1, 2, 3])
def test_correct_crc_but_stream_not_whole_words(tmp_path, small, extra):
    _, _, data = small
    expect_error(tmp_path, repack(data[codec._HEAD.size :] + b"\0" * extra), "invalid content", "32-bit words")


def test_correct_crc_but_stream_cut_short(tmp_path, small):
    _, _, data = small
    expect_error(tmp_path, repack(data[codec._HEAD.size : -8]), "invalid content")


def test_correct_crc_but_corrupted_stream_is_a_checkpoint_error(small):
    """A file from another (buggy) encoder: valid header, CRC and meta, garbage in the coded stream.
    Whatever the range decoder makes of it, the reader must answer with a CheckpointError."""
    _, _, data = small
    meta, rest = split_body(data)
    tables = 4 * sum(len(x["counts"]) for x in meta["layers"]) + 2 * (16 + 10)
    body = data[codec._HEAD.size :]
    stream_start = len(body) - (len(rest) - tables)
    wrong = []
    for pos in range(stream_start, len(body), 29):
        bad = bytearray(body)
        bad[pos] ^= 0xFF
        try:
            codec.decode(repack(bytes(bad)), "m.nnc")
        except CheckpointError:
            pass
        except Exception as exc:  # noqa: BLE001 - any other exception is the failure being tested
            wrong.append((pos, type(exc).__name__, str(exc)))
    assert wrong == []


def test_correct_crc_but_consistent_wrong_hidden_size_is_a_checkpoint_error(small):
    """Meta that passes every check but does not describe the tables and stream that follow."""
    _, _, data = small
    errors = {}
    for hidden in (12, 15, 17, 20):
        meta, rest = split_body(data)
        meta["model"]["hidden_size"] = hidden
        meta["layers"][0]["shape"] = [hidden, 784]
        meta["layers"][1]["shape"] = [10, hidden]
        meta["layers"][1]["nnz"] = min(meta["layers"][1]["nnz"], 10 * hidden)
        meta["layers"][1]["counts"] = [meta["layers"][1]["nnz"]]
        try:
            codec.decode(with_meta(meta, rest), "m.nnc")
        except CheckpointError:
            continue
        except Exception as exc:  # noqa: BLE001
            errors[hidden] = f"{type(exc).__name__}: {exc}"
    assert errors == {}


def test_decode_names_its_source(small):
    _, _, data = small
    with pytest.raises(CheckpointError, match=r"^weights\.nnc: truncated"):
        codec.decode(data[:-1], "weights.nnc")
    with pytest.raises(CheckpointError, match=r"^file: truncated"):
        codec.decode(data[:5])


def test_reading_never_unpickles(tmp_path, small, monkeypatch):
    """load() parses numbers and JSON only: neither pickle nor torch.load is ever called."""
    _, _, data = small

    def forbidden(*args, **kwargs):
        raise AssertionError("unpickling called")

    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    path = tmp_path / "m.nnc"
    path.write_bytes(data)
    assert type(codec.load(path)) is MLP
