"""params.yaml parsing: valid values parse, every bad value is a one-line ParamError naming its key."""

from __future__ import annotations

import copy
from pathlib import Path

import pydantic
import pytest
import yaml

from nncompress import config
from nncompress.compress.quantize import MAX_BITS
from nncompress.data.mnist import TEST_SIZE, TRAIN_SIZE
from nncompress.errors import ParamError
from nncompress.model import ACTIVATIONS, MAX_HIDDEN
from nncompress.nets import NETS
from nncompress.nets.mlp import MLPConfig
from nncompress.prune import METHODS
from nncompress.prune.masks import SCOPES
from nncompress.sweep import AUC_MAX_RATE
from nncompress.training import DEVICES

ROOT = Path(__file__).resolve().parents[1]
REGISTERED = tuple(sorted(METHODS))  # every method module under nncompress/prune/methods/
METHOD_LIST = ", ".join(REGISTERED)  # as the messages list them: sorted
# The order of Params' fields, which is the order the unknown-section message lists them in.
SECTION_ORDER = (
    "download",
    "split",
    "model",
    "train",
    "sweep",
    "finetune",
    *(f"prune_{name}" for name in REGISTERED),
    "compress",
)
REQUIRED_SECTIONS = ("download", "split", "model", "train", "sweep", "finetune", "compress")
CLASSES = {
    "download": config.DownloadConfig,
    "split": config.SplitConfig,
    "model": config.ModelConfig,
    "train": config.TrainConfig,
    "sweep": config.SweepConfig,
    "finetune": config.OptimiserConfig,
    "compress": config.CompressConfig,
    **{f"prune_{name}": METHODS[name] for name in REGISTERED},
}
SEEDS_SECTIONS = tuple(f"prune_{name}" for name in REGISTERED if "seeds" in METHODS[name].model_fields)
OPTIMISER_KEYS = ("epochs", "batch_size", "lr", "momentum", "weight_decay", "schedule", "shuffle", "device")
OPTIMISER_BLOCKS = ("train", "finetune", "compress.centroid")  # the same SGD block in three places
REFERENCE = yaml.safe_load((ROOT / "params.yaml").read_text())
# The keys of each section: the model section's are those of the network it chooses.
FIELDS = {name: list(cls.model_fields) for name, cls in CLASSES.items()}
FIELDS["model"] = list(NETS[REFERENCE["model"]["arch"]].model_fields)


def set_key(data, key, value):
    """`data` (a section) with the dotted `key` (e.g. centroid.lr) set to `value`, in place."""
    *parents, last = key.split(".")
    for parent in parents:
        data = data[parent]
    data[last] = value


def get_key(obj, key):
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def with_value(name, key, value):
    """A copy of the reference section `name` with the dotted `key` set to `value`."""
    data = copy.deepcopy(REFERENCE[name])
    set_key(data, key, value)
    return data


def param_error(name, data):
    with pytest.raises(ParamError) as info:
        config.parse_section(name, data)
    message = str(info.value)
    assert "\n" not in message
    return message


def write_params(tmp_path, params):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def load_error(tmp_path, params):
    """The one-line error of config.load on a file holding `params`."""
    with pytest.raises(ParamError) as info:
        config.load(write_params(tmp_path, params))
    message = str(info.value)
    assert "\n" not in message
    return message


def reference_with(**sections):
    """A copy of the whole reference file with some sections replaced (None: deleted)."""
    params = copy.deepcopy(REFERENCE)
    for name, data in sections.items():
        if data is None:
            del params[name]
        else:
            params[name] = data
    return params


# --- valid values -------------------------------------------------------------------------------


def test_reference_params_file_loads_to_the_reference_values():
    params = config.load(ROOT / "params.yaml")
    assert isinstance(params, config.Params)
    assert params.download == config.DownloadConfig(
        mirrors=["https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"],
        timeout=30.0,
    )
    assert type(params.download.timeout) is float
    assert params.split == config.SplitConfig(
        train_size=4096, val_size=1024, offset=0, test_size=10000, shuffle=False, seed=0
    )
    assert params.model == MLPConfig(arch="mlp", hidden=[256], activation="sigmoid", dropout=0.15)
    assert type(params.model) is MLPConfig
    assert params.train == config.TrainConfig(
        epochs=40,
        batch_size=32,
        lr=0.01,
        momentum=0.9,
        weight_decay=0.0,
        schedule="constant",
        shuffle=False,
        device="auto",
        seed=0,
        log_every=16,
    )
    assert params.sweep == config.SweepConfig(
        methods=["random", "magnitude", "finetune", "global", "gradual", "structured", "lottery"],
        rates=[0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99],
        workers=0,
        executor="local",
    )
    assert params.finetune == config.OptimiserConfig(
        epochs=40,
        batch_size=32,
        lr=0.01,
        momentum=0.9,
        weight_decay=0.0,
        schedule="constant",
        shuffle=True,
        device="auto",
    )
    assert params.prune_random == METHODS["random"](seeds=[0, 1, 2, 3, 4])
    assert params.prune_magnitude == METHODS["magnitude"](finetune_epochs=0)
    for name in ("finetune", "global", "structured"):
        assert getattr(params, f"prune_{name}") == METHODS[name](seeds=[0])
    assert params.prune_gradual == METHODS["gradual"](seeds=[0], steps=10, ramp=0.6, scope="global")
    assert params.prune_lottery == METHODS["lottery"](
        seeds=[0], rounds=2, epochs=20, rewind_iteration=128, scope="layer"
    )
    assert params.compress == config.CompressConfig(
        method="gradual",
        sparsity=0.96,
        bits=4,
        finetune_epochs=None,
        centroid=config.OptimiserConfig(
            epochs=10,
            batch_size=32,
            lr=0.001,
            momentum=0.9,
            weight_decay=0.0,
            schedule="constant",
            shuffle=True,
            device="auto",
        ),
        seed=0,
        sweep_sparsities=[0.9, 0.95, 0.96, 0.97, 0.98],
        sweep_bits=[2, 3, 4, 5, 6, 8],
    )


def test_sections_compare_by_type_and_value():
    """The `==` the reference test relies on: a different value or another section class differs."""
    model = MLPConfig(hidden=[256], activation="sigmoid", dropout=0.15)
    assert model != MLPConfig(hidden=[256], activation="sigmoid", dropout=0.2)
    assert NETS["lenet5"]() != NETS["lenet300"]()
    train = config.parse_section("train", REFERENCE["train"])
    as_optimiser = config.OptimiserConfig(**{key: getattr(train, key) for key in OPTIMISER_KEYS})
    assert train != as_optimiser


def test_method_returns_each_methods_section():
    params = config.load(ROOT / "params.yaml")
    for name in REGISTERED:
        section = params.method(name)
        assert section is getattr(params, f"prune_{name}")
        assert type(section) is METHODS[name]
        assert section.name == name


def test_loaded_sections_are_frozen():
    params = config.load(ROOT / "params.yaml")
    with pytest.raises(pydantic.ValidationError):
        params.train.epochs = 3
    with pytest.raises(pydantic.ValidationError):
        params.compress.centroid.lr = 1.0
    assert params.train.epochs == 40


def test_the_registered_methods():
    assert all(issubclass(cls, config.Section) for cls in METHODS.values())


def test_every_section_of_the_params_file_is_parsed():
    """A section without a class would be read unchecked (or not at all)."""
    assert config.SECTIONS == CLASSES
    assert sorted(REFERENCE) == sorted(CLASSES)
    assert tuple(config.Params.model_fields) == SECTION_ORDER


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_every_key_of_the_file_is_a_field_and_every_field_is_in_the_file(name):
    assert sorted(REFERENCE[name]) == sorted(FIELDS[name])


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_every_key_is_required(name):
    """No hidden defaults: params.yaml holds every knob, and a deleted key is an error."""
    for key in REFERENCE[name]:
        data = {k: v for k, v in REFERENCE[name].items() if k != key}
        assert param_error(name, data) == f"params.yaml: missing key {name}.{key}"


@pytest.mark.parametrize("key", OPTIMISER_KEYS)
def test_every_key_of_the_centroid_block_is_required(key):
    data = copy.deepcopy(REFERENCE["compress"])
    del data["centroid"][key]
    assert param_error("compress", data) == f"params.yaml: missing key compress.centroid.{key}"


def test_numbers_written_without_a_dot_are_numbers():
    """PyYAML reads 1e-3 as a string; it is still the number 0.001."""
    assert yaml.safe_load("lr: 1e-3")["lr"] == "1e-3"
    assert config.parse_section("train", with_value("train", "lr", "1e-3")).lr == 0.001
    assert config.parse_section("compress", with_value("compress", "centroid.lr", "1e-3")).centroid.lr == 0.001


def test_integers_are_accepted_where_numbers_are_expected_and_become_floats():
    train = config.parse_section("train", with_value("train", "lr", 1))
    assert train.lr == 1.0
    assert type(train.lr) is float
    rates = config.parse_section("sweep", with_value("sweep", "rates", [0, 0.5, 0.9])).rates
    assert rates == [0.0, 0.5, 0.9]
    assert all(type(r) is float for r in rates)


@pytest.mark.parametrize(
    ("name", "key", "value"),
    [
        ("train", "epochs", 0),
        ("model", "dropout", 0.0),
        ("model", "activation", "relu"),
        ("model", "activation", "tanh"),
        ("model", "hidden", [1]),
        ("model", "hidden", [65536]),
        ("model", "hidden", [300, 100]),
        ("model", "hidden", [8, 8, 8, 8]),
        ("split", "test_size", 10000),
        ("split", "test_size", 1),
        ("split", "train_size", 60000 - 1024),  # offset + train + val == 60000 exactly
        ("train", "momentum", 0.0),
        ("train", "seed", 2**32 - 1),
        ("sweep", "rates", [0.0, 0.9]),
        ("sweep", "rates", [0.95, 0.0, 0.9]),  # rates above 0.9 allowed; 0 and 0.9 bound the AUC
        ("sweep", "methods", ["lottery"]),
        ("sweep", "methods", ["structured", "random"]),
        ("finetune", "epochs", 0),
        ("finetune", "momentum", 0.0),
        ("prune_random", "seeds", [0]),
        ("prune_random", "seeds", [2**32 - 1, 0]),
        ("prune_gradual", "steps", 1),
        ("prune_gradual", "ramp", 1.0),
        ("prune_gradual", "ramp", 0.001),
        ("prune_gradual", "scope", "layer"),
        ("prune_gradual", "scope", "global"),
        ("prune_lottery", "rounds", 1),
        ("prune_lottery", "epochs", 0),
        ("prune_lottery", "rewind_iteration", 0),
        ("prune_lottery", "scope", "global"),
        ("prune_magnitude", "finetune_epochs", 0),
        ("compress", "method", "global"),
        ("compress", "method", "random"),
        ("compress", "sparsity", 0.0),
        ("compress", "bits", 1),
        ("compress", "bits", 8),
        ("compress", "centroid.epochs", 0),
        ("compress", "centroid.momentum", 0.0),
        ("compress", "sweep_bits", []),
        ("compress", "sweep_bits", [1, 8]),
        ("compress", "sweep_sparsities", [0.0, 0.999]),
    ],
)
def test_boundary_values_are_accepted(name, key, value):
    parsed = config.parse_section(name, with_value(name, key, value))
    assert get_key(parsed, key) == value


@pytest.mark.parametrize(
    ("name", "key", "accepted", "refused", "expected"),
    [
        ("model", "activation", ACTIVATIONS, "swish", f"one of {', '.join(ACTIVATIONS)}"),
        ("split", "test_size", (1, TEST_SIZE), TEST_SIZE + 1, f"in 1..{TEST_SIZE}"),
        ("train", "device", DEVICES, "tpu", f"one of {', '.join(DEVICES)}"),
        ("prune_gradual", "scope", SCOPES, "channel", f"one of {', '.join(SCOPES)}"),
        ("prune_lottery", "scope", SCOPES, "channel", f"one of {', '.join(SCOPES)}"),
        ("compress", "bits", (1, MAX_BITS), MAX_BITS + 1, f"bits per shared weight, in 1..{MAX_BITS}"),
        ("compress", "method", tuple(METHODS), "layer", f"one of {', '.join(sorted(METHODS))}"),
    ],
)
def test_ranges_come_from_the_modules_that_own_them(name, key, accepted, refused, expected):
    for value in accepted:
        assert get_key(config.parse_section(name, with_value(name, key, value)), key) == value
    message = param_error(name, with_value(name, key, refused))
    assert message == f"params.yaml: {name}.{key} must be {expected}, got {refused!r}"


def test_split_bound_is_the_training_file_size():
    assert (TRAIN_SIZE, TEST_SIZE) == (60_000, 10_000)
    data = {**REFERENCE["split"], "offset": 0, "train_size": TRAIN_SIZE - 1, "val_size": 1}
    assert config.parse_section("split", data).train_size == TRAIN_SIZE - 1
    assert f"exceeds the {TRAIN_SIZE} images" in param_error("split", {**data, "val_size": 2})


def test_auc_bound_is_the_sweeps():
    assert AUC_MAX_RATE == 0.9
    assert config.parse_section("sweep", with_value("sweep", "rates", [0.0, AUC_MAX_RATE])).rates == [0.0, 0.9]


# --- missing, unknown and mistyped keys ---------------------------------------------------------


def test_missing_required_key():
    data = REFERENCE["split"].copy()
    del data["train_size"]
    assert param_error("split", data) == "params.yaml: missing key split.train_size"


def test_unknown_key_names_it_and_lists_the_valid_keys():
    data = REFERENCE["train"].copy()
    data["epoch"] = data.pop("epochs")
    message = param_error("train", data)
    assert message == (
        "params.yaml: unknown key train.epoch "
        "(expected one of: epochs, batch_size, lr, momentum, weight_decay, schedule, shuffle, device, seed, log_every)"
    )


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        (
            "finetune",
            {**REFERENCE["finetune"], "seed": 0},
            "unknown key finetune.seed "
            "(expected one of: epochs, batch_size, lr, momentum, weight_decay, schedule, shuffle, device)",
        ),
        (
            "compress",
            with_value("compress", "centroid.log_every", 16),
            "unknown key compress.centroid.log_every "
            "(expected one of: epochs, batch_size, lr, momentum, weight_decay, schedule, shuffle, device)",
        ),
        (
            "compress",
            {**REFERENCE["compress"], "centroid_epochs": 10},
            "unknown key compress.centroid_epochs "
            "(expected one of: method, sparsity, bits, finetune_epochs, centroid, seed, sweep_sparsities, sweep_bits)",
        ),
        (
            "sweep",
            {**REFERENCE["sweep"], "method": ["random"]},
            "unknown key sweep.method (expected one of: methods, rates, workers, executor)",
        ),
        (
            "prune_lottery",
            {**REFERENCE["prune_lottery"], "rewind": 128},
            "unknown key prune_lottery.rewind (expected one of: seeds, rounds, epochs, rewind_iteration, scope)",
        ),
    ],
)
def test_unknown_keys_of_other_sections(name, data, message):
    assert param_error(name, data) == f"params.yaml: {message}"


def test_unknown_key_is_reported_before_the_missing_one_it_explains():
    data = REFERENCE["compress"].copy()
    data["centroid_lr"] = data.pop("centroid")
    assert param_error("compress", data).startswith("params.yaml: unknown key compress.centroid_lr ")


@pytest.mark.parametrize("value", [None, [1, 2], "epochs: 3"])
def test_section_that_is_not_a_mapping(value):
    message = param_error("train", value)
    assert message == f"params.yaml: train must be a mapping of keys to values, got {value!r}"


@pytest.mark.parametrize("value", [None, [1, 2], 10])
def test_centroid_block_that_is_not_a_mapping(value):
    message = param_error("compress", with_value("compress", "centroid", value))
    assert message == f"params.yaml: compress.centroid must be a mapping of keys to values, got {value!r}"


def test_unknown_section_name_is_refused_by_parse_section():
    with pytest.raises(ParamError) as info:
        config.parse_section("prune_layer", {"seeds": [0]})
    assert str(info.value) == "params.yaml: unknown section prune_layer"


WRONG_TYPES = [
    ("train", "epochs", "40", "an integer, got '40'"),
    ("train", "epochs", True, "an integer, got True"),
    ("train", "epochs", 40.0, "an integer, got 40.0"),
    ("train", "batch_size", None, "an integer, got None"),
    ("train", "lr", "fast", "a number, got 'fast'"),
    ("train", "lr", False, "a number, got False"),
    ("train", "lr", float("nan"), "a number, got nan"),
    ("train", "momentum", float("inf"), "a number, got inf"),
    ("train", "shuffle", "yes", "true or false, got 'yes'"),
    ("train", "shuffle", 1, "true or false, got 1"),
    ("model", "activation", 3, "a string, got 3"),
    ("model", "hidden", 256, "a list of int, got 256"),
    ("model", "hidden", "256", "a list of int, got '256'"),
    ("split", "seed", 0.5, "an integer, got 0.5"),
    ("download", "mirrors", "https://example.com/", "a list of str, got 'https://example.com/'"),
    ("sweep", "rates", 0.5, "a list of float, got 0.5"),
    ("sweep", "methods", "random", "a list of str, got 'random'"),
    ("prune_random", "seeds", 0, "a list of int, got 0"),
    ("prune_gradual", "seeds", None, "a list of int, got None"),
    ("prune_gradual", "steps", 2.5, "an integer, got 2.5"),
    ("prune_gradual", "ramp", "most", "a number, got 'most'"),
    ("prune_gradual", "scope", ["layer"], "a string, got ['layer']"),
    ("prune_lottery", "rounds", 2.0, "an integer, got 2.0"),
    ("prune_lottery", "scope", ["layer"], "a string, got ['layer']"),
    ("finetune", "epochs", 1.0, "an integer, got 1.0"),
    ("finetune", "shuffle", "true", "true or false, got 'true'"),
    ("compress", "centroid.epochs", 1.0, "an integer, got 1.0"),
    ("compress", "centroid.shuffle", "yes", "true or false, got 'yes'"),
    ("compress", "centroid.lr", "slow", "a number, got 'slow'"),
    ("compress", "method", ["gradual"], "a string, got ['gradual']"),
    ("compress", "sweep_bits", 4, "a list of int, got 4"),
]


@pytest.mark.parametrize(("name", "key", "value", "expected"), WRONG_TYPES)
def test_wrong_type(name, key, value, expected):
    assert param_error(name, with_value(name, key, value)) == f"params.yaml: {name}.{key} must be {expected}"


def test_wrong_type_inside_a_list_names_the_element():
    message = param_error("sweep", with_value("sweep", "rates", [0.0, "half", 0.9]))
    assert message == "params.yaml: sweep.rates[1] must be a number, got 'half'"


def test_integer_too_large_for_a_number_is_a_param_error():
    message = param_error("train", with_value("train", "lr", 10**400))
    assert message.startswith("params.yaml: train.lr must be a number, got ")


# --- out of range values ------------------------------------------------------------------------

OUT_OF_RANGE = [
    ("train", "epochs", -1, ">= 0"),
    ("train", "batch_size", 0, "> 0"),
    ("train", "lr", 0.0, "> 0"),
    ("train", "lr", -0.01, "> 0"),
    ("train", "momentum", 1.0, "in [0, 1)"),
    ("train", "log_every", 0, "> 0"),
    ("train", "seed", 2**32, "a seed in [0, 2**32)"),
    ("train", "device", "tpu", "one of auto, cpu, cuda"),
    ("model", "hidden", [], "a non-empty list of layer widths"),
    ("model", "dropout", 1.0, "in [0, 1)"),
    ("model", "dropout", -0.1, "in [0, 1)"),
    ("model", "activation", "swish", "one of sigmoid, relu, tanh"),
    ("model", "activation", "Sigmoid", "one of sigmoid, relu, tanh"),
    ("split", "train_size", 0, "> 0"),
    ("split", "val_size", -5, "> 0"),
    ("split", "offset", -1, ">= 0"),
    ("split", "test_size", 0, "in 1..10000"),
    ("split", "test_size", 10001, "in 1..10000"),
    ("split", "seed", -1, "a seed in [0, 2**32)"),
    ("download", "timeout", 0.0, "> 0"),
    ("prune_magnitude", "finetune_epochs", -1, ">= 0"),
    ("finetune", "lr", 0.0, "> 0"),
    ("finetune", "batch_size", 0, "> 0"),
    ("finetune", "momentum", 1.0, "in [0, 1)"),
    ("finetune", "weight_decay", -0.1, ">= 0"),
    ("finetune", "schedule", "step", "one of constant, cosine"),
    ("train", "schedule", "linear", "one of constant, cosine"),
    ("finetune", "epochs", -1, ">= 0"),
    ("finetune", "lr", -0.01, "> 0"),
    ("prune_gradual", "steps", 0, "> 0"),
    ("prune_gradual", "steps", -3, "> 0"),
    ("prune_gradual", "ramp", 0.0, "a fraction of the fine-tuning budget in (0, 1]"),
    ("prune_gradual", "ramp", 1.5, "a fraction of the fine-tuning budget in (0, 1]"),
    ("prune_gradual", "ramp", -0.5, "a fraction of the fine-tuning budget in (0, 1]"),
    ("prune_gradual", "scope", "channel", "one of layer, global"),
    ("prune_gradual", "scope", "Global", "one of layer, global"),
    ("prune_lottery", "rounds", 0, "> 0"),
    ("prune_lottery", "epochs", -1, ">= 0"),
    ("prune_lottery", "rewind_iteration", -1, ">= 0"),
    ("prune_lottery", "scope", "channel", "one of layer, global"),
    ("compress", "method", "layer", f"one of {METHOD_LIST}"),
    ("compress", "method", "Gradual", f"one of {METHOD_LIST}"),
    ("compress", "sparsity", 1.0, "a fraction of weights removed, in [0, 1)"),
    ("compress", "sparsity", -0.1, "a fraction of weights removed, in [0, 1)"),
    ("compress", "bits", 0, "bits per shared weight, in 1..8"),
    ("compress", "bits", 9, "bits per shared weight, in 1..8"),
    ("compress", "centroid.epochs", -1, ">= 0"),
    ("compress", "centroid.lr", 0.0, "> 0"),
    ("compress", "centroid.batch_size", 0, "> 0"),
    ("compress", "centroid.momentum", 1.0, "in [0, 1)"),
    ("compress", "centroid.device", "gpu", "one of auto, cpu, cuda"),
    ("compress", "seed", -1, "a seed in [0, 2**32)"),
]


@pytest.mark.parametrize(("name", "key", "value", "expected"), OUT_OF_RANGE)
def test_out_of_range(name, key, value, expected):
    message = param_error(name, with_value(name, key, value))
    assert message == f"params.yaml: {name}.{key} must be {expected}, got {value!r}"


@pytest.mark.parametrize(
    ("key", "values", "index", "expected"),
    [
        ("sweep_sparsities", [0.5, 1.0], 1, "a fraction of weights removed, in [0, 1)"),
        ("sweep_sparsities", [-0.1], 0, "a fraction of weights removed, in [0, 1)"),
        ("sweep_bits", [2, 9], 1, "bits per shared weight, in 1..8"),
        ("sweep_bits", [0, 4], 0, "bits per shared weight, in 1..8"),
    ],
)
def test_compress_grid_value_out_of_range_names_the_element(key, values, index, expected):
    message = param_error("compress", with_value("compress", key, values))
    assert message == f"params.yaml: compress.{key}[{index}] must be {expected}, got {values[index]!r}"


@pytest.mark.parametrize(("index", "rate"), [(0, 1.0), (2, -0.1), (1, 1.5)])
def test_rate_outside_zero_one(index, rate):
    rates = [0.0, 0.5, 0.9]
    rates[index] = rate
    message = param_error("sweep", with_value("sweep", "rates", rates))
    assert message == f"params.yaml: sweep.rates[{index}] must be a compression rate in [0, 1), got {rate!r}"


def test_duplicate_rates():
    message = param_error("sweep", with_value("sweep", "rates", [0.0, 0.5, 0.5, 0.9]))
    assert message == "params.yaml: sweep.rates must be a list without duplicates, got [0.0, 0.5, 0.5, 0.9]"


@pytest.mark.parametrize("rates", [[], [0.5], [0.0, 0.95, 0.99], [0.5, 0.6], [0.1, 0.9]])
def test_rates_must_span_the_auc(rates):
    message = param_error("sweep", with_value("sweep", "rates", rates))
    assert (
        message == f"params.yaml: sweep.rates must be a list including 0.0 and 0.9, the ends of the AUC, got {rates!r}"
    )


@pytest.mark.parametrize(("methods", "index", "bad"), [(["random", "foo"], 1, "foo"), (["layer"], 0, "layer")])
def test_sweep_methods_must_be_registered(methods, index, bad):
    message = param_error("sweep", with_value("sweep", "methods", methods))
    assert message == f"params.yaml: sweep.methods[{index}] must be one of {METHOD_LIST}, got {bad!r}"


@pytest.mark.parametrize("methods", [["random", "random"], ["gradual", "global", "gradual"]])
def test_sweep_methods_must_be_distinct(methods):
    message = param_error("sweep", with_value("sweep", "methods", methods))
    assert message == f"params.yaml: sweep.methods must be a non-empty list without duplicates, got {methods!r}"


@pytest.mark.parametrize(
    ("changes", "end"),
    [({"train_size": 70000}, 71024), ({"offset": 55000}, 60120), ({"val_size": 55905}, 60001)],
)
def test_split_beyond_the_training_file(changes, end):
    data = {**REFERENCE["split"], **changes}
    message = param_error("split", data)
    assert message == (
        f"params.yaml: split.offset + train_size + val_size = {end} exceeds the 60000 images of the MNIST training file"
    )


def test_ramp_written_as_an_integer_is_reported_as_a_number():
    message = param_error("prune_gradual", with_value("prune_gradual", "ramp", 0))
    assert message == "params.yaml: prune_gradual.ramp must be a fraction of the fine-tuning budget in (0, 1], got 0.0"


def test_seeds_sections():
    """Every method but magnitude is repeated over seeds."""
    assert [name for name in CLASSES if "seeds" in FIELDS[name]] == list(SEEDS_SECTIONS)


@pytest.mark.parametrize("name", SEEDS_SECTIONS)
@pytest.mark.parametrize("seeds", [[], [0, 0], [3, 1, 3]])
def test_seeds_must_be_a_non_empty_list_of_distinct_seeds(name, seeds):
    message = param_error(name, with_value(name, "seeds", seeds))
    assert message == f"params.yaml: {name}.seeds must be a non-empty list of distinct seeds, got {seeds!r}"


@pytest.mark.parametrize("name", SEEDS_SECTIONS)
@pytest.mark.parametrize(("seeds", "index", "bad"), [([-1], 0, -1), ([0, 1, -7], 2, -7), ([5, 2**32], 1, 2**32)])
def test_seed_outside_the_seed_range_names_the_element(name, seeds, index, bad):
    message = param_error(name, with_value(name, "seeds", seeds))
    assert message == f"params.yaml: {name}.seeds[{index}] must be a seed in [0, 2**32), got {bad}"


@pytest.mark.parametrize(
    ("seeds", "index", "expected"),
    [([0, 0.5], 1, "an integer, got 0.5"), ([True], 0, "an integer, got True"), (["1"], 0, "an integer, got '1'")],
)
def test_seed_of_the_wrong_type_names_the_element(seeds, index, expected):
    message = param_error("prune_random", {"seeds": seeds})
    assert message == f"params.yaml: prune_random.seeds[{index}] must be {expected}"


def test_old_single_seed_key_is_an_unknown_key():
    message = param_error("prune_random", {"seed": 0})
    assert message == "params.yaml: unknown key prune_random.seed (expected one of: seeds)"


def test_negative_split_seed_is_a_param_error():
    message = param_error("split", {**REFERENCE["split"], "shuffle": True, "seed": -1})
    assert message == "params.yaml: split.seed must be a seed in [0, 2**32), got -1"


# --- the model section: a network from the registry ----------------------------------------------

NET_LIST = ", ".join(sorted(NETS))  # as the messages list them: sorted


def test_the_model_section_is_the_chosen_networks():
    assert sorted(NETS) == ["lenet300", "lenet5", "mlp"]
    assert config.SECTIONS["model"] is config.ModelConfig
    for arch in ("lenet300", "lenet5"):
        section = config.parse_section("model", {"arch": arch})
        assert type(section) is NETS[arch]
        assert section.arch == arch == NETS[arch].name
    params = config.load(ROOT / "params.yaml")
    assert type(params.model) is NETS["mlp"]
    assert params.model.hidden_size == 256  # the seed's one hidden layer, as code written for it reads it


@pytest.mark.parametrize("arch", ["resnet", "MLP", "", 3, None, ["mlp"]])
def test_an_unknown_arch_lists_the_registered_ones(arch):
    message = param_error("model", with_value("model", "arch", arch))
    assert message == f"params.yaml: model.arch must be one of {NET_LIST}, got {arch!r}"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"hidden": [256], "activation": "relu", "dropout": 0.0}, "missing key model.arch"),
        ({"arch": "mlp"}, "missing key model.hidden"),  # the first of its missing keys
        ({"arch": "lenet5", "hidden": [256]}, "unknown key model.hidden (expected one of: arch)"),
        ({"arch": "lenet300", "dropout": 0.5}, "unknown key model.dropout (expected one of: arch)"),
        (
            {"arch": "mlp", "hidden_size": 256, "activation": "sigmoid", "dropout": 0.15},
            "unknown key model.hidden_size (expected one of: arch, hidden, activation, dropout)",
        ),
        ({**REFERENCE["model"], "hidden": [256, 0]}, "model.hidden[1] must be in 1..65536, got 0"),
        ({**REFERENCE["model"], "hidden": [MAX_HIDDEN + 1]}, f"model.hidden[0] must be in 1..{MAX_HIDDEN}, got 65537"),
        ({**REFERENCE["model"], "hidden": [256.0]}, "model.hidden[0] must be an integer, got 256.0"),
    ],
)
def test_each_network_takes_its_own_keys(data, message):
    assert param_error("model", data) == f"params.yaml: {message}"


@pytest.mark.parametrize("value", [None, "mlp", [256]])
def test_model_section_that_is_not_a_mapping(value):
    assert param_error("model", value) == f"params.yaml: model must be a mapping of keys to values, got {value!r}"


def test_the_whole_file_with_another_network(tmp_path):
    params = config.load(write_params(tmp_path, reference_with(model={"arch": "lenet5"})))
    assert type(params.model) is NETS["lenet5"]
    bad = reference_with(model={"arch": "lenet", "hidden": [256]})
    assert load_error(tmp_path, bad) == f"params.yaml: model.arch must be one of {NET_LIST}, got 'lenet'"


def test_the_model_section_is_validated_not_constructed():
    """NetConfig stands for any network: only validation can pick the class; a network's class builds."""
    with pytest.raises(TypeError, match="has no network"):
        config.ModelConfig(arch="mlp", hidden=[256], activation="sigmoid", dropout=0.15)
    assert MLPConfig(hidden=[256], activation="sigmoid", dropout=0.15).arch == "mlp"  # filled in
    with pytest.raises(pydantic.ValidationError):
        MLPConfig(arch="lenet5", hidden=[256], activation="sigmoid", dropout=0.15)


# --- one optimiser block: train, finetune and compress.centroid ----------------------------------


def test_the_optimiser_block_is_one_type_in_its_three_places():
    assert issubclass(config.TrainConfig, config.OptimiserConfig)
    assert config.SECTIONS["finetune"] is config.OptimiserConfig
    assert config.CompressConfig.model_fields["centroid"].annotation is config.OptimiserConfig
    assert tuple(config.OptimiserConfig.model_fields) == OPTIMISER_KEYS
    assert tuple(config.TrainConfig.model_fields) == (*OPTIMISER_KEYS, "seed", "log_every")
    params = config.load(ROOT / "params.yaml")
    assert type(params.finetune) is config.OptimiserConfig
    assert type(params.compress.centroid) is config.OptimiserConfig
    assert type(params.train) is config.TrainConfig


def parse_block(block, key, value):
    """The section holding optimiser block `block`, parsed with its `key` set to `value`."""
    name, _, inner = block.partition(".")
    return config.parse_section(name, with_value(name, f"{inner}.{key}" if inner else key, value))


@pytest.mark.parametrize("block", OPTIMISER_BLOCKS)
@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("epochs", -1, ">= 0, got -1"),
        ("epochs", 2.0, "an integer, got 2.0"),
        ("batch_size", 0, "> 0, got 0"),
        ("lr", 0.0, "> 0, got 0.0"),
        ("lr", "fast", "a number, got 'fast'"),
        ("momentum", 1.0, "in [0, 1), got 1.0"),
        ("shuffle", "no", "true or false, got 'no'"),
        ("device", "tpu", "one of auto, cpu, cuda, got 'tpu'"),
    ],
)
def test_the_optimiser_block_gives_the_same_errors_in_each_place(block, key, value, expected):
    with pytest.raises(ParamError) as info:
        parse_block(block, key, value)
    assert str(info.value) == f"params.yaml: {block}.{key} must be {expected}"


@pytest.mark.parametrize("block", OPTIMISER_BLOCKS)
def test_the_optimiser_block_accepts_the_same_values_in_each_place(block):
    section = parse_block(block, "lr", "1e-3")
    for part in block.split(".")[1:]:
        section = getattr(section, part)
    assert section.lr == 0.001
    assert isinstance(section, config.OptimiserConfig)


# --- the whole file: config.load ----------------------------------------------------------------


@pytest.mark.parametrize("name", REQUIRED_SECTIONS)
def test_missing_section(tmp_path, name):
    message = load_error(tmp_path, reference_with(**{name: None}))
    assert message == f"params.yaml: missing section {name}"


@pytest.mark.parametrize("method", REGISTERED)
def test_a_method_in_sweep_methods_needs_its_section(tmp_path, method):
    message = load_error(tmp_path, reference_with(**{f"prune_{method}": None}))
    assert message == f"params.yaml: missing section prune_{method} (the {method} method is used)"


def test_the_compress_method_needs_its_section(tmp_path):
    """Even when no sweep uses it."""
    params = reference_with(
        sweep={**REFERENCE["sweep"], "methods": ["random"]},
        compress={**REFERENCE["compress"], "method": "lottery"},
        prune_lottery=None,
    )
    message = load_error(tmp_path, params)
    assert message == "params.yaml: missing section prune_lottery (the lottery method is used)"


def test_a_null_method_section_counts_as_missing(tmp_path):
    params = reference_with()
    params["prune_gradual"] = None
    message = load_error(tmp_path, params)
    assert message == "params.yaml: missing section prune_gradual (the gradual method is used)"


def test_an_unused_method_may_leave_its_section_out(tmp_path):
    params = reference_with(sweep={**REFERENCE["sweep"], "methods": ["random", "gradual"]})
    for name in ("magnitude", "finetune", "global", "structured", "lottery"):
        del params[f"prune_{name}"]
    loaded = config.load(write_params(tmp_path, params))
    assert loaded.prune_lottery is None
    assert loaded.method("gradual") == METHODS["gradual"](seeds=[0], steps=10, ramp=0.6, scope="global")
    with pytest.raises(ParamError) as info:
        loaded.method("lottery")
    assert str(info.value) == "params.yaml: missing section prune_lottery"


def test_an_unused_method_section_is_still_checked(tmp_path):
    params = reference_with(
        sweep={**REFERENCE["sweep"], "methods": ["random"]},
        compress={**REFERENCE["compress"], "method": "random"},
        prune_lottery=with_value("prune_lottery", "rounds", 0),
    )
    assert load_error(tmp_path, params) == "params.yaml: prune_lottery.rounds must be > 0, got 0"


@pytest.mark.parametrize("name", ["foo", "prune_layer", "prune", "centroid", "Train"])
def test_unknown_section(tmp_path, name):
    message = load_error(tmp_path, reference_with(**{name: {"seeds": [0]}}))
    assert message == f"params.yaml: unknown section {name} (expected one of: {', '.join(SECTION_ORDER)})"


def test_unknown_sweep_method_in_the_file(tmp_path):
    params = reference_with(sweep={**REFERENCE["sweep"], "methods": ["random", "foo"]})
    message = load_error(tmp_path, params)
    assert message == f"params.yaml: sweep.methods[1] must be one of {METHOD_LIST}, got 'foo'"


def test_duplicate_sweep_method_in_the_file(tmp_path):
    params = reference_with(sweep={**REFERENCE["sweep"], "methods": ["random", "gradual", "random"]})
    message = load_error(tmp_path, params)
    expected = "a non-empty list without duplicates, got ['random', 'gradual', 'random']"
    assert message == f"params.yaml: sweep.methods must be {expected}"


# The whole file reports a bad value exactly as its section alone does.


@pytest.mark.parametrize(
    ("name", "key", "value"), [(name, key, value) for name, key, value, _ in WRONG_TYPES + OUT_OF_RANGE]
)
def test_the_whole_file_gives_the_sections_message(tmp_path, name, key, value):
    alone = param_error(name, with_value(name, key, value))
    assert load_error(tmp_path, reference_with(**{name: with_value(name, key, value)})) == alone


def test_every_key_is_required_in_the_whole_file_too(tmp_path):
    data = copy.deepcopy(REFERENCE["prune_gradual"])
    del data["ramp"]
    assert load_error(tmp_path, reference_with(prune_gradual=data)) == "params.yaml: missing key prune_gradual.ramp"


def test_split_beyond_the_training_file_in_the_whole_file(tmp_path):
    params = reference_with(split={**REFERENCE["split"], "offset": 55000})
    assert load_error(tmp_path, params) == (
        "params.yaml: split.offset + train_size + val_size = 60120 exceeds the 60000 images of the MNIST training file"
    )


# --- the params file ----------------------------------------------------------------------------


def test_read_yaml_round_trip(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"train": {**REFERENCE["train"], "epochs": 3}, "model": {"hidden_size": 8}}))
    assert config.read_yaml(path)["model"] == {"hidden_size": 8}
    assert config.parse_section("train", config.read_yaml(path)["train"]).epochs == 3


def test_read_yaml_of_the_reference_file_is_the_plain_dict():
    assert config.read_yaml(ROOT / "params.yaml") == REFERENCE


READERS = [config.read_yaml, config.load]


@pytest.mark.parametrize("read", READERS)
def test_missing_params_file_names_the_file(tmp_path, read):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ParamError) as info:
        read(path)
    assert str(info.value) == f"{path}: file not found (run from the project root)"


@pytest.mark.parametrize("read", READERS)
def test_invalid_yaml_names_the_file_and_line(tmp_path, read):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  epochs: 3\n  lr: [0.1\nmodel:\n  hidden_size: 8\n")
    with pytest.raises(ParamError) as info:
        read(path)
    message = str(info.value)
    assert message.startswith(f"{path}: not valid YAML at line ")
    assert "\n" not in message


@pytest.mark.parametrize("read", READERS)
@pytest.mark.parametrize(("text", "kind"), [("- a\n- b\n", "list"), ("", "NoneType"), ("42\n", "int")])
def test_params_file_that_is_not_a_mapping(tmp_path, read, text, kind):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(ParamError) as info:
        read(path)
    assert str(info.value) == f"{path}: expected a mapping of sections, got {kind}"


@pytest.mark.parametrize("read", READERS)
def test_params_file_not_utf8_is_a_param_error(tmp_path, read):
    path = tmp_path / "p.yaml"
    path.write_text("train:\n  epochs: 3\n", encoding="utf-16")
    with pytest.raises(ParamError) as info:
        read(path)
    assert str(info.value) == f"{path}: not UTF-8 text"


def test_params_file_that_is_a_folder_is_a_param_error(tmp_path):
    with pytest.raises(ParamError) as info:
        config.read_yaml(tmp_path)
    assert str(info.value).startswith(f"{tmp_path}: cannot read (")


def test_unknown_keys_of_mixed_types_are_a_param_error(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("train:\n  on: true\n  epoch: 3\n")  # YAML 1.1 reads the key `on` as True
    with pytest.raises(ParamError, match=r"unknown key train\."):
        config.parse_section("train", config.read_yaml(path)["train"])
    with pytest.raises(ParamError) as info:
        config.load(path)
    assert str(info.value) == (
        "params.yaml: unknown key train.True "
        "(expected one of: epochs, batch_size, lr, momentum, weight_decay, schedule, shuffle, device, seed, log_every)"
    )


def test_params_file_edit_reaches_the_error(tmp_path):
    """From file to message: a copy of params.yaml with one bad value."""
    params = copy.deepcopy(REFERENCE)
    params["model"]["activation"] = "swish"
    path = write_params(tmp_path, params)
    assert config.parse_section("train", config.read_yaml(path)["train"]).epochs == 40
    with pytest.raises(ParamError) as info:
        config.load(path)
    assert str(info.value) == "params.yaml: model.activation must be one of sigmoid, relu, tanh, got 'swish'"


def test_reference_file_written_back_loads_to_the_same_params(tmp_path):
    assert config.load(write_params(tmp_path, REFERENCE)) == config.load(ROOT / "params.yaml")


def test_sweep_without_methods_is_refused():
    message = param_error("sweep", with_value("sweep", "methods", []))
    assert message == "params.yaml: sweep.methods must be a non-empty list without duplicates, got []"


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("workers", -1, "must be >= 0, got -1"),
        ("workers", 1.5, "must be an integer, got 1.5"),
        ("executor", "dask", "must be one of local, ray, got 'dask'"),
    ],
)
def test_sweep_workers_and_executor(key, value, expected):
    assert param_error("sweep", with_value("sweep", key, value)) == f"params.yaml: sweep.{key} {expected}"
