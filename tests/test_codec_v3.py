"""Format version 3 of the .nnc file: its layout, its adaptive models (every choice the encoder can
make decodes exactly), the biases it leaves out (only those the output does not depend on, found
without knowing the network's order of layers), and a one-line CheckpointError for every malformed
file a buggy encoder could write (a correct CRC around wrong content). The round trips of every
network and the damage every version must survive are in tests/test_codec.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import registered
from test_codec import (
    DATA,
    decoded_biases,
    expect_error,
    inputs,
    repack,
    shared_model,
    shared_network,
    unused_units,
    v3_parts,
)
from torch import nn

from nncompress.compress import codec, layer_coding
from nncompress.compress.quantize import SharedLayer, share_weights, unshare_weights
from nncompress.errors import CheckpointError
from nncompress.model import MLP
from nncompress.nets import NETS
from nncompress.nets.mlp import MLPConfig
from nncompress.prune.masks import prunable


@pytest.fixture(scope="module")
def small():
    """A 784-16-10 sigmoid MLP, 3 bits, 70% / 30% sparse, and its version-3 file."""
    model, layers = shared_model(hidden=16, bits=3, sparsity=(0.7, 0.3))
    return model, layers, codec.encode(model, layers)


def v3_file(section: bytes, count: int, sizes: list[tuple[int, int]], stream: bytes) -> bytes:
    """A version-3 file of these parts, its header and CRC right (as another encoder would write it)."""
    varints = b"".join(codec._varint(n) for pair in sizes for n in pair)
    return repack(codec._varint(len(section)) + section + codec._varint(count) + varints + stream, 3)


def rebuilt(data: bytes, **changes) -> bytes:
    """`data` (a version-3 file) with some of its parts replaced: section (a dict), count, sizes, stream."""
    section, sizes, stream = v3_parts(data)
    section = changes.get("section", section)
    raw = section if isinstance(section, bytes) else json.dumps(section, separators=(",", ":")).encode()
    return v3_file(raw, changes.get("count", len(sizes)), changes.get("sizes", sizes), changes.get("stream", stream))


# --- layout -------------------------------------------------------------------------------------


def test_the_file_is_laid_out_as_documented(small):
    """Header, the model section's JSON (varint length), the number of layers and each one's nnz and
    k (varints), then the coded stream in whole 32-bit words; nothing else (no names, no shapes)."""
    model, layers, data = small
    magic, version, length, crc = codec._HEAD.unpack_from(data)
    assert (magic, version, length) == (b"NNCZ", 3, len(data) - 13)
    section, sizes, stream = v3_parts(data)
    assert section == {"arch": "mlp", "hidden": [16], "activation": "sigmoid", "dropout": 0.15}
    assert sizes == [(int(layer.mask.sum()), len(layer.centroids)) for layer in layers.values()]
    assert len(stream) % 4 == 0 and stream
    assert rebuilt(data) == data
    layout = codec.describe(data).layout
    assert layout.metadata == len(data) - 13 - len(stream)
    assert layout.stream == len(stream)
    # the metadata is the JSON and a few bytes of varints: its length, the count, nnz and k per layer
    varints = 2 + sum(len(codec._varint(nnz)) + len(codec._varint(k)) for nnz, k in sizes)
    assert layout.metadata == len(json.dumps(section, separators=(",", ":"))) + varints
    assert varints <= 8


def test_varints():
    for n in (0, 1, 127, 128, 300, 16_383, 16_384, 2**28, 2**35 - 1):
        raw = codec._varint(n)
        assert len(raw) == max(1, (n.bit_length() + 6) // 7)
        assert codec._read_varint(raw + b"\xff", 0, "n") == (n, len(raw))
    with pytest.raises(ValueError, match="n runs past the end"):
        codec._read_varint(b"\x80\x80", 0, "n")
    with pytest.raises(ValueError, match="n is longer than 5 bytes"):
        codec._read_varint(b"\x80" * 5 + b"\x01", 0, "n")


def test_the_information_of_the_symbols_is_the_streams_size():
    """describe's bits per layer and part are what the coder spends: within a few bytes in all."""
    net = NETS["lenet5"]()
    model, layers = shared_network(net, sparsity=0.95, bits=4)
    data = codec.encode(model, layers, net)
    layout = codec.describe(data).layout
    bits = sum(sum(parts.values()) for parts in layout.information.values())
    assert 0 <= layout.stream - bits / 8 < 16


# --- the models ---------------------------------------------------------------------------------


def _varied_layers() -> tuple[MLP, dict[str, SharedLayer]]:
    """A two-hidden-layer relu MLP whose layers are all kinds the models meet: empty and full rows,
    a layer with one shared value, one with none kept, codes whose signs follow their rows."""
    torch.manual_seed(0)
    net = MLPConfig(hidden=[12, 6], activation="relu", dropout=0.0)
    model = net.build().eval()
    rng = np.random.default_rng(1)
    masks = {
        "fc1": rng.random((12, 784)) < 0.05,
        "fc2": rng.random((6, 12)) < 0.5,
        "fc3": np.zeros((10, 6), bool),
    }
    masks["fc1"][[2, 5]] = False  # empty rows
    masks["fc1"][7] = True  # a full row
    layers = {}
    for name, mask in masks.items():
        n = int(mask.sum())
        k = {"fc1": 16, "fc2": 1, "fc3": 0}[name]
        rows = np.nonzero(mask)[0]
        codes = ((rows % 2) * 8 + rng.integers(0, 8, n)) % max(k, 1)  # a row's codes on one side
        centroids = np.linspace(-1, 1, k, dtype=np.float32)
        layers[name] = SharedLayer(mask, codes.astype(np.uint8), centroids)
    with torch.no_grad():
        for name, module in prunable(model):
            module.weight.copy_(torch.from_numpy(layers[name].dense()))
            module.bias.uniform_(-1, 1)
    return model, layers


@pytest.mark.parametrize("by_rows", [False, True])
@pytest.mark.parametrize("by_sign", [False, True])
def test_every_choice_of_models_decodes_exactly(monkeypatch, by_rows, by_sign):
    """The encoder picks each layer's models by their cost; whichever it picks, the file decodes."""
    model, layers = _varied_layers()
    monkeypatch.setattr(layer_coding, "_choose", lambda mask, codes, centroids: (by_rows, by_sign))
    data = codec.encode(model, layers)
    decoded = codec._decode(data, "m.nnc")
    for name, layer in layers.items():
        assert np.array_equal(decoded.layers[name].mask, layer.mask)
        assert np.array_equal(decoded.layers[name].codes, layer.codes)
        assert np.array_equal(decoded.layers[name].centroids, layer.centroids)
        assert (decoded.coded[name].by_rows, decoded.coded[name].by_sign) == (by_rows, by_sign)
    x = inputs()
    with torch.no_grad():
        expected = model.eval()
        for _, module in prunable(expected):
            module.bias.copy_(module.bias.half().float())
        assert torch.equal(decoded.model(x), expected(x))


def test_the_encoder_picks_the_cheaper_models():
    """By rows for a sparse layer with empty rows, by columns for a dense one; by sign for codes
    whose sign follows the row, not for codes drawn at random."""
    rng = np.random.default_rng(0)
    sparse = rng.random((200, 300)) < 0.05
    sparse[rng.random(200) < 0.3] = False
    dense = rng.random((10, 300)) < 0.6
    centroids = np.float32([-0.3, -0.1, 0.1, 0.3])
    signed = (np.nonzero(sparse)[0] % 2 * 2 + rng.integers(0, 2, int(sparse.sum()))).astype(np.uint8)
    random = rng.integers(0, 4, int(sparse.sum())).astype(np.uint8)
    assert layer_coding._choose(sparse, signed, centroids) == (True, True)
    assert layer_coding._choose(sparse, random, centroids) == (True, False)
    assert layer_coding._choose(dense, rng.integers(0, 4, int(dense.sum())).astype(np.uint8), centroids)[0] is False


# --- biases the output does not depend on -------------------------------------------------------


def _with_mask(layer: SharedLayer, mask: np.ndarray) -> SharedLayer:
    """`layer` keeping the weights of `mask`: its codes where it kept them, code 0 where it did not."""
    codes = np.zeros(layer.mask.shape, np.uint8)
    codes[layer.mask] = layer.codes
    return SharedLayer(mask, codes[mask], layer.centroids)


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh"])
def test_exactly_the_biases_the_output_does_not_depend_on_are_left_out(activation):
    """In a three-layer MLP: units with no kept weight out, a unit whose only way out is through such
    a unit, and units with no kept weight in (only a ReLU's flat side lets a negative bias go)."""
    net = MLPConfig(hidden=[20, 8], activation=activation, dropout=0.0)
    model, layers = shared_network(net, sparsity=0.5, bits=3, seed=3)
    masks = {name: layer.mask.copy() for name, layer in layers.items()}
    masks["fc3"][:, [0, 1]] = False  # fc2 units 0 and 1 reach nothing
    masks["fc3"][0, 2] = True  # fc2 unit 2 does
    masks["fc2"][:, [3, 4]] = False  # fc1 units 3 and 4 reach nothing
    masks["fc2"][:, 8] = False
    masks["fc2"][0, 8] = True  # fc1 unit 8 reaches fc2 unit 0 only, so nothing
    masks["fc2"][2, [5, 6]] = True  # fc1 units 5 and 6 reach fc2 unit 2 ...
    masks["fc1"][[5, 6]] = False  # ... but take no input
    with torch.no_grad():
        for name, module in prunable(model):
            layers[name] = _with_mask(layers[name], masks[name])
            module.weight.copy_(torch.from_numpy(layers[name].dense()))
        model.fc1.bias[5], model.fc1.bias[6] = -0.5, 0.5
    unused = unused_units(model, layers)
    assert unused["fc2"][[0, 1]].all() and not unused["fc2"][2]
    assert unused["fc1"][[3, 4, 8]].all()
    assert unused["fc1"][5] == (activation == "relu") and not unused["fc1"][6]
    data = codec.encode(model, layers, net)
    _, state, _ = codec.decode(data)
    for name, bias in decoded_biases(model, layers).items():
        assert torch.equal(state[f"{name}.bias"], bias), name
    assert codec.describe(data).layout.biases == {
        name: (int((~units).sum()), len(units)) for name, units in unused.items()
    }
    loaded, expected = codec.from_bytes(data), net.build().eval()
    expected.load_state_dict(
        {k: v if k.endswith("weight") else v.half().float() for k, v in model.state_dict().items()}
    )
    x = torch.cat([inputs(), 5 * torch.randn(64, 784, generator=torch.Generator().manual_seed(9))])
    with torch.no_grad():
        assert torch.equal(loaded(x), expected(x))


def test_a_lenet5_at_high_sparsity_loses_no_output_with_its_left_out_biases():
    """A conv net: the decoded network computes what the encoder's computes, on any input."""
    net = NETS["lenet5"]()
    model, layers = shared_network(net, sparsity=0.995, bits=2, seed=1)
    data = codec.encode(model, layers, net)
    stored = codec.describe(data).layout.biases
    assert sum(n for n, _ in stored.values()) < sum(units for _, units in stored.values())  # some left out
    loaded, expected = codec.from_bytes(data), net.build().eval()
    expected.load_state_dict(
        {k: v if k.endswith("weight") else v.half().float() for k, v in model.state_dict().items()}
    )
    g = torch.Generator().manual_seed(4)
    x = torch.cat([torch.rand(64, 784, generator=g), 3 * torch.randn(64, 784, generator=g)])
    with torch.no_grad():
        assert torch.equal(loaded(x), expected(x))


def test_a_bias_the_output_needs_only_on_some_inputs_is_kept():
    """A ReLU unit with no kept weight and a positive bias feeds a unit that random inputs leave off
    but large pixels 0 and 1 turn on: its bias matters there, so it is stored (found on the open
    network, not on inputs that happen to switch the later unit off)."""
    net = MLPConfig(hidden=[4, 2], activation="relu", dropout=0.0)
    model = net.build().eval()
    with torch.no_grad():
        for _, module in prunable(model):
            module.weight.zero_()
            module.bias.zero_()
        model.fc1.bias[0] = 0.5  # unit 0: no kept weight, relu(0.5) != relu(0)
        model.fc1.weight[1, [0, 1]] = 1.0  # unit 1: on only when pixels 0 and 1 add up to more than 100
        model.fc1.bias[1] = -100.0
        model.fc1.weight[2, 5] = 1.0
        model.fc2.weight[0, [0, 1]] = 1.0  # fc2 unit 0: relu(0.5 + unit 1 - 1), off unless unit 1 is on
        model.fc2.bias[0] = -1.0
        model.fc2.weight[1, 2] = 1.0
        model.fc3.weight[:, [0, 1]] = 1.0
    layers = {
        name: SharedLayer(kept, np.zeros(int(kept.sum()), np.uint8), np.array([1.0], np.float32))
        for name, kept in ((name, module.weight.detach().numpy() != 0) for name, module in prunable(model))
    }
    data = codec.encode(model, layers, net)
    _, state, _ = codec.decode(data)
    assert state["fc1.bias"][0] == 0.5
    x = torch.zeros(2, 784)
    x[1, [0, 1]] = 60.0
    with torch.no_grad():
        assert torch.equal(codec.from_bytes(data)(x), model(x))
        assert not torch.equal(model(x)[0], model(x)[1])  # the second input does reach the unit


class LinearInTheMiddle(nn.Module):
    """fc3(relu(fc2(fc1(x)))): fc1's units have no activation, so a unit of it with no kept weight
    passes its bias on whatever its sign."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(784, 12)
        self.fc2 = nn.Linear(12, 2)
        self.fc3 = nn.Linear(2, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(torch.relu(self.fc2(self.fc1(x))))


def shared_as_is(model: nn.Module) -> dict[str, SharedLayer]:
    """Each prunable layer's nonzero weights as they are, its distinct values its shared values."""
    layers = {}
    for name, module in prunable(model):
        weight = module.weight.detach().numpy()
        kept = weight != 0
        centroids = np.unique(weight[kept]).astype(np.float32)
        layers[name] = SharedLayer(kept, np.searchsorted(centroids, weight[kept]).astype(np.uint8), centroids)
    return layers


def test_a_bias_that_a_unit_without_activation_passes_on_is_kept():
    """fc1 unit 0 (no kept weight, bias -10, no activation) can switch fc2's ReLU off in any network
    made positive, and unit 1 (bias +0.5) feeds only that ReLU, on only when pixel 2 is large: both
    biases matter, so both are stored, and the decoded network computes what the encoder's does."""
    with registered("linear_in_the_middle", LinearInTheMiddle) as net_cls:
        net = net_cls()
        model = net.build().eval()
        with torch.no_grad():
            for _, module in prunable(model):
                module.weight.zero_()
                module.bias.zero_()
            model.fc1.bias[0], model.fc1.bias[1] = -10.0, 0.5
            for unit in range(2, 12):
                model.fc1.weight[unit, unit] = 1.0  # units 2..11 read pixels 2..11
            model.fc2.weight[0, [0, 1, 2]] = torch.tensor([0.01, 1.0, 1.0])
            model.fc2.bias[0] = -100.0
            model.fc2.weight[1, [0, *range(2, 12)]] = 1.0
            model.fc3.weight.fill_(1.0)
        data = codec.encode(model, shared_as_is(model), net)
        _, state, _ = codec.decode(data)
        assert state["fc1.bias"][0] == -10.0 and state["fc1.bias"][1] == 0.5
        x = torch.zeros(2, 784)
        x[1, 2] = 200.0
        with torch.no_grad():
            assert torch.equal(codec.from_bytes(data)(x), model(x))


class Negated(nn.Module):
    """A forward that breaks the positive-network reasoning: fc2(relu(-fc1(x))), so at the positive
    point every hidden ReLU is off and every hidden bias looks unreachable."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(784, 8)
        self.fc2 = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(-self.fc1(x)))


class Float32Only(Negated):
    """A forward that refuses double: the analysis cannot run, so every bias is stored."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.float32:
            raise TypeError("float32 only")
        return self.fc2(torch.relu(self.fc1(x)))


@pytest.fixture
def odd_nets():
    with registered("negated", Negated) as negated, registered("float32only", Float32Only) as float32only:
        yield {"negated": negated(), "float32only": float32only()}


@pytest.mark.parametrize("arch", ["negated", "float32only"])
def test_a_network_the_reasoning_does_not_fit_keeps_its_biases(odd_nets, arch):
    net = odd_nets[arch]
    torch.manual_seed(0)
    model = net.build().eval()
    with torch.no_grad():
        model.fc1.weight.mul_(torch.rand(model.fc1.weight.shape) < 0.3)
        if arch == "float32only":  # fc2 keeps nothing from unit 0: its bias is unused, yet stored
            model.fc2.weight[:, 0] = 0
    share_weights(model, 3)
    layers = unshare_weights(model)
    data = codec.encode(model, layers, net)
    _, state, _ = codec.decode(data)
    for name, module in prunable(model):
        assert torch.equal(state[f"{name}.bias"], module.bias.detach().half().float()), name


def test_encoding_leaves_the_network_as_it_was():
    """The analysis works on copies: the model's values, gradient flags, mode and torch's RNG stay."""
    model, layers = shared_model(hidden=16, activation="relu", bits=2, sparsity=(0.9, 0.8))
    model.train()
    model.fc2.bias.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(3)
    rng = torch.get_rng_state()
    with torch.no_grad():  # as a caller may encode
        codec.encode(model, layers)
    assert torch.equal(torch.get_rng_state(), rng)
    assert model.training and model.fc1.bias.requires_grad and not model.fc2.bias.requires_grad
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


# --- malformed files ----------------------------------------------------------------------------


def test_the_body_parts_cut_or_malformed(tmp_path, small):
    _, _, data = small
    section, sizes, stream = v3_parts(data)
    raw = json.dumps(section).encode()
    cases = {
        "empty body": (b"", "the model section's length runs past the end"),
        "length cut": (b"\x80", "the model section's length runs past the end"),
        "length too long": (b"\xff" * 6, "the model section's length is longer than 5 bytes"),
        "section past the end": (codec._varint(len(raw) + 1) + raw, "the model section runs past the end"),
        "no layer count": (codec._varint(len(raw)) + raw, "the number of layers runs past the end"),
        "layers cut": (codec._varint(len(raw)) + raw + b"\x02\x05", "fc1's number of shared values runs past"),
    }
    for body, words in cases.values():
        expect_error(tmp_path, repack(body, 3), "invalid content", words)


@pytest.mark.parametrize(
    ("section", "words"),
    [
        (b"\xff\xfe", "invalid content ("),
        (b"not json", "invalid content (Expecting value"),
        (b"[" * 30_000 + b"]" * 30_000, "invalid content ("),
        (b"[16]", "the model section is not a mapping"),
        (b"{}", "missing key model.arch"),
        (b'{"arch": "mlp", "hidden": [0], "activation": "relu", "dropout": 0}', "model.hidden[0] must be in 1..65536"),
        (b'{"arch": "lenet5", "hidden": [16]}', "unknown key model.hidden"),
        (b'{"arch": "mlp", "hidden": [16, 16], "activation": "sigmoid", "dropout": 0.15}', "2 layers, but model.arch"),
        (b'{"arch": "lenet5"}', "2 layers, but model.arch lenet5 has 4: conv1, conv2, fc1, fc2"),
    ],
)
def test_a_wrong_model_section(tmp_path, small, section, words):
    _, _, data = small
    expect_error(tmp_path, rebuilt(data, section=section), words)


def test_an_unregistered_network_is_named(tmp_path, small):
    _, _, data = small
    message = expect_error(tmp_path, rebuilt(data, section={"arch": "resnet18", "depth": 18}))
    assert message.endswith(
        ": holds a network of model.arch 'resnet18', which is not registered (registered: lenet300, lenet5, mlp)"
    )


@pytest.mark.parametrize(
    ("sizes", "words"),
    [
        ([(0, 8), (161, 8)], "fc2 has 161 kept weights, more than its 160"),
        ([(12_545, 8), (0, 8)], "fc1 has 12,545 kept weights, more than its 12,544"),
        ([(5, 257), (0, 8)], "fc1 has 257 shared values for 5 kept weights (1 to 256 unless none)"),
        ([(5, 0), (0, 8)], "fc1 has 0 shared values for 5 kept weights"),
    ],
)
def test_impossible_layer_numbers(tmp_path, small, sizes, words):
    _, _, data = small
    expect_error(tmp_path, rebuilt(data, sizes=sizes), "invalid content", words)


def test_a_count_of_layers_not_the_networks(tmp_path, small):
    _, _, data = small
    _, sizes, _ = v3_parts(data)
    expect_error(tmp_path, rebuilt(data, count=3, sizes=[*sizes, (0, 0)]), "3 layers, but model.arch mlp has 2")
    expect_error(tmp_path, rebuilt(data, count=1, sizes=sizes[:1]), "1 layers, but model.arch mlp has 2: fc1, fc2")


def test_a_stream_that_is_not_the_layers(tmp_path, small):
    _, _, data = small
    _, _, stream = v3_parts(data)
    for extra in (1, 2, 3):
        expect_error(tmp_path, rebuilt(data, stream=stream + b"\0" * extra), "invalid content", "32-bit words")
    for extra in (stream[:8], stream, b"\xff" * 8):
        expect_error(tmp_path, rebuilt(data, stream=stream + extra), "does not end after the last layer")
    # one word more is within the range decoder's look-ahead: it decodes to the same network
    for extra in (bytes(4), stream[-4:]):
        state = codec.decode(rebuilt(data, stream=stream + extra))[1]
        assert all(torch.equal(tensor, codec.decode(data)[1][key]) for key, tensor in state.items())
    for cut in (4, 8, len(stream) // 2, len(stream)):
        expect_error(tmp_path, rebuilt(data, stream=stream[:-cut]), "invalid content")


def test_other_layer_numbers_with_the_same_stream(tmp_path, small):
    """nnz and k consistent with the network but not with the stream: a CheckpointError, not a crash."""
    _, _, data = small
    _, sizes, _ = v3_parts(data)
    errors = []
    for changed in ([(sizes[0][0] + 1, sizes[0][1]), sizes[1]], [(sizes[0][0], 2), sizes[1]], [sizes[0], (0, 8)]):
        try:
            codec.decode(rebuilt(data, sizes=changed), "m.nnc")
        except CheckpointError:
            continue
        except Exception as exc:  # noqa: BLE001 - any other exception is the failure being tested
            errors.append(f"{changed}: {type(exc).__name__}: {exc}")
    assert errors == []


@pytest.mark.parametrize("hidden", [12, 15, 17, 20])
def test_a_network_of_other_widths_with_the_same_stream(small, hidden):
    _, _, data = small
    section, _, _ = v3_parts(data)
    section["hidden"] = [hidden]
    try:
        codec.decode(rebuilt(data, section=section), "m.nnc")
    except CheckpointError as exc:
        assert str(exc).startswith("m.nnc: invalid content (")


def test_garbage_in_the_stream_is_a_checkpoint_error(small):
    """Whatever the range decoder makes of a changed word, the reader answers with a CheckpointError
    (or, where the change happens to decode, a network)."""
    _, _, data = small
    _, _, stream = v3_parts(data)
    start = len(data) - len(stream)
    wrong = []
    for pos in range(start, len(data), 7):
        bad = bytearray(data[codec._HEAD.size :])
        bad[pos - codec._HEAD.size] ^= 0xFF
        try:
            codec.decode(repack(bytes(bad), 3), "m.nnc")
        except CheckpointError:
            pass
        except Exception as exc:  # noqa: BLE001 - any other exception is the failure being tested
            wrong.append((pos, type(exc).__name__, str(exc)))
    assert wrong == []


def test_a_network_too_large_to_allocate_is_refused_before_it_is_built(tmp_path, small, monkeypatch):
    _, _, data = small
    section, _, _ = v3_parts(data)
    section["hidden"] = [65_536, 65_536, 65_536]
    allocated = []
    real_build = MLPConfig.build
    monkeypatch.setattr(MLPConfig, "build", lambda self: allocated.append(torch.empty(0).device) or real_build(self))
    expect_error(tmp_path, rebuilt(data, section=section), "invalid content", "parameters, more than 268,435,456")
    assert allocated == [torch.device("meta")]


def test_a_network_the_format_cannot_hold_is_refused(tmp_path, small, unholdable_networks):
    _, _, data = small
    expect_error(tmp_path, rebuilt(data, section={"arch": "normed"}), "Linear and Conv2d layers only", "norm.weight")
    expect_error(tmp_path, rebuilt(data, section={"arch": "broken"}), "building the network failed (RuntimeError")


def test_the_committed_files_of_older_versions_still_read():
    """(The bytes and weights of each are checked in tests/test_codec.py; here: they are not v3.)"""
    for name, version in (("tiny_v1.nnc", 1), ("tiny_v2.nnc", 2), ("lenet5_v2.nnc", 2)):
        data = (DATA / name).read_bytes()
        assert data[4] == version
        assert codec.describe(data, name).layout.information == {}


def test_decoding_is_fast_enough(tmp_path: Path):
    """A LeNet-5 file of the shipped kind decodes symbol by symbol in Python; keep it well under a
    second (the real one takes about 0.05 s; this bound only catches an order of magnitude)."""
    import time

    net = NETS["lenet5"]()
    model, layers = shared_network(net, sparsity=0.97, bits=4)
    data = codec.encode(model, layers, net)
    start = time.perf_counter()
    codec.decode(data)
    assert time.perf_counter() - start < 3.0
