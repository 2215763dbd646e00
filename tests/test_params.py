"""params.yaml parsing: valid values parse, every bad value is a one-line ParamError naming its key."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from nncompress.errors import ParamError
from nncompress.params import (
    CompressParams,
    DownloadParams,
    FinetuneParams,
    GradualPruneParams,
    MagnitudePruneParams,
    ModelParams,
    RandomPruneParams,
    SeedsParams,
    SplitParams,
    SweepParams,
    TrainParams,
    load_params,
    parse_section,
    section,
)

ROOT = Path(__file__).resolve().parents[1]
CLASSES = {
    "download": DownloadParams,
    "split": SplitParams,
    "model": ModelParams,
    "train": TrainParams,
    "sweep": SweepParams,
    "prune_random": RandomPruneParams,
    "prune_magnitude": MagnitudePruneParams,
    "finetune": FinetuneParams,
    "prune_finetune": SeedsParams,
    "prune_global": SeedsParams,
    "prune_gradual": GradualPruneParams,
    "compress": CompressParams,
    "prune_structured": SeedsParams,
}
SEEDS_SECTIONS = ("prune_random", "prune_finetune", "prune_global", "prune_gradual", "prune_structured")
REFERENCE = yaml.safe_load((ROOT / "params.yaml").read_text())


def with_value(name, key, value):
    """The reference section `name` with `key` set to `value`."""
    data = copy.deepcopy(REFERENCE[name])
    data[key] = value
    return data


def param_error(name, data):
    with pytest.raises(ParamError) as info:
        parse_section(CLASSES[name], name, data)
    message = str(info.value)
    assert "\n" not in message
    return message


# --- valid values -------------------------------------------------------------------------------


def test_reference_params_file_parses_to_the_reference_values():
    params = load_params(ROOT / "params.yaml")
    assert section(params, DownloadParams, "download") == DownloadParams(
        mirrors=["https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"],
        timeout=30.0,
    )
    assert section(params, SplitParams, "split") == SplitParams(
        train_size=4096, val_size=1024, offset=0, test_size=10000, shuffle=False, seed=0
    )
    assert section(params, ModelParams, "model") == ModelParams(hidden_size=256, activation="sigmoid", dropout=0.15)
    assert section(params, TrainParams, "train") == TrainParams(
        epochs=40, batch_size=32, lr=0.01, momentum=0.9, shuffle=False, seed=0, log_every=16, device="auto"
    )
    rates = section(params, SweepParams, "sweep").rates
    assert rates == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99]
    assert section(params, RandomPruneParams, "prune_random") == RandomPruneParams(seeds=[0, 1, 2, 3, 4])
    assert section(params, MagnitudePruneParams, "prune_magnitude") == MagnitudePruneParams(finetune_epochs=0)
    assert section(params, FinetuneParams, "finetune") == FinetuneParams(
        epochs=40, lr=0.01, batch_size=32, momentum=0.9, shuffle=True, device="auto"
    )
    for name in ("prune_finetune", "prune_global", "prune_structured"):
        assert section(params, SeedsParams, name) == SeedsParams(seeds=[0])
    assert section(params, GradualPruneParams, "prune_gradual") == GradualPruneParams(
        seeds=[0], steps=10, ramp=0.6, scope="global"
    )
    assert section(params, CompressParams, "compress") == CompressParams(
        method="gradual",
        sparsity=0.96,
        bits=4,
        centroid_epochs=10,
        centroid_lr=0.001,
        seed=0,
        sweep_sparsities=[0.9, 0.95, 0.96, 0.97, 0.98],
        sweep_bits=[2, 3, 4, 5, 6, 8],
    )


def test_every_section_of_the_params_file_is_parsed():
    """A section without a dataclass would be read unchecked (or not at all)."""
    assert sorted(REFERENCE) == sorted(CLASSES)


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_every_key_is_required(name):
    """No hidden defaults: params.yaml holds every knob, and a deleted key is an error."""
    for key in REFERENCE[name]:
        data = {k: v for k, v in REFERENCE[name].items() if k != key}
        assert param_error(name, data) == f"params.yaml: missing key {name}.{key}"


def test_numbers_written_without_a_dot_are_numbers():
    """PyYAML reads 1e-3 as a string; it is still the number 0.001."""
    assert parse_section(TrainParams, "train", with_value("train", "lr", "1e-3")).lr == 0.001


def test_integers_are_accepted_where_numbers_are_expected_and_become_floats():
    train = parse_section(TrainParams, "train", with_value("train", "lr", 1))
    assert train.lr == 1.0
    assert type(train.lr) is float
    rates = parse_section(SweepParams, "sweep", {"rates": [0, 0.5, 0.9]}).rates
    assert rates == [0.0, 0.5, 0.9]
    assert all(type(r) is float for r in rates)


@pytest.mark.parametrize(
    ("name", "key", "value"),
    [
        ("train", "epochs", 0),
        ("model", "dropout", 0.0),
        ("model", "activation", "relu"),
        ("model", "activation", "tanh"),
        ("split", "test_size", 10000),
        ("split", "test_size", 1),
        ("split", "train_size", 60000 - 1024),  # offset + train + val == 60000 exactly
        ("train", "momentum", 0.0),
        ("sweep", "rates", [0.0, 0.9]),
        ("sweep", "rates", [0.95, 0.0, 0.9]),  # rates above 0.9 allowed; 0 and 0.9 bound the AUC
        ("finetune", "epochs", 0),
        ("finetune", "momentum", 0.0),
        ("prune_random", "seeds", [0]),
        ("prune_random", "seeds", [2**32 - 1, 0]),
        ("prune_gradual", "steps", 1),
        ("prune_gradual", "ramp", 1.0),
        ("prune_gradual", "ramp", 0.001),
        ("prune_gradual", "scope", "layer"),
        ("prune_gradual", "scope", "global"),
        ("compress", "method", "global"),
        ("compress", "method", "layer"),
        ("compress", "sparsity", 0.0),
        ("compress", "bits", 1),
        ("compress", "bits", 8),
        ("compress", "centroid_epochs", 0),
        ("compress", "sweep_bits", []),
        ("compress", "sweep_sparsities", [0.0, 0.999]),
    ],
)
def test_boundary_values_are_accepted(name, key, value):
    parsed = parse_section(CLASSES[name], name, with_value(name, key, value))
    assert getattr(parsed, key) == value


# --- missing, unknown and mistyped keys ---------------------------------------------------------


def test_missing_required_key():
    data = REFERENCE["split"].copy()
    del data["train_size"]
    assert param_error("split", data) == "params.yaml: missing key split.train_size"


def test_missing_section():
    params = copy.deepcopy(REFERENCE)
    del params["train"]
    with pytest.raises(ParamError, match=r"^params\.yaml: missing section train$"):
        section(params, TrainParams, "train")


def test_unknown_key_names_it_and_lists_the_valid_keys():
    data = REFERENCE["train"].copy()
    data["epoch"] = data.pop("epochs")
    message = param_error("train", data)
    assert message == (
        "params.yaml: unknown key train.epoch "
        "(expected one of: epochs, batch_size, lr, momentum, shuffle, seed, log_every, device)"
    )


@pytest.mark.parametrize("value", [None, [1, 2], "epochs: 3"])
def test_section_that_is_not_a_mapping(value):
    message = param_error("train", value)
    assert message.startswith("params.yaml: train must be a mapping of keys to values, got ")


@pytest.mark.parametrize(
    ("name", "key", "value", "expected"),
    [
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
        ("split", "seed", 0.5, "an integer, got 0.5"),
        ("download", "mirrors", "https://example.com/", "a list of str, got 'https://example.com/'"),
        ("sweep", "rates", 0.5, "a list of float, got 0.5"),
        ("prune_random", "seeds", 0, "a list of int, got 0"),
        ("prune_gradual", "seeds", None, "a list of int, got None"),
        ("prune_gradual", "steps", 2.5, "an integer, got 2.5"),
        ("prune_gradual", "ramp", "most", "a number, got 'most'"),
        ("prune_gradual", "scope", ["layer"], "a string, got ['layer']"),
        ("finetune", "epochs", 1.0, "an integer, got 1.0"),
        ("finetune", "shuffle", "true", "true or false, got 'true'"),
    ],
)
def test_wrong_type(name, key, value, expected):
    assert param_error(name, with_value(name, key, value)) == f"params.yaml: {name}.{key} must be {expected}"


def test_wrong_type_inside_a_list_names_the_element():
    message = param_error("sweep", {"rates": [0.0, "half", 0.9]})
    assert message == "params.yaml: sweep.rates[1] must be a number, got 'half'"


# --- out of range values ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "key", "value", "expected"),
    [
        ("train", "epochs", -1, ">= 0"),
        ("train", "batch_size", 0, "> 0"),
        ("train", "lr", 0.0, "> 0"),
        ("train", "lr", -0.01, "> 0"),
        ("train", "momentum", 1.0, "in [0, 1)"),
        ("train", "log_every", 0, "> 0"),
        ("model", "hidden_size", 0, "in 1..65536"),
        ("model", "hidden_size", 65537, "in 1..65536"),
        ("model", "dropout", 1.0, "in [0, 1)"),
        ("model", "dropout", -0.1, "in [0, 1)"),
        ("model", "activation", "swish", "one of sigmoid, relu, tanh"),
        ("model", "activation", "Sigmoid", "one of sigmoid, relu, tanh"),
        ("split", "train_size", 0, "> 0"),
        ("split", "val_size", -5, "> 0"),
        ("split", "offset", -1, ">= 0"),
        ("split", "test_size", 0, "in 1..10000"),
        ("split", "test_size", 10001, "in 1..10000"),
        ("download", "timeout", 0.0, "> 0"),
        ("prune_magnitude", "finetune_epochs", -1, ">= 0"),
        ("finetune", "lr", 0.0, "> 0"),
        ("finetune", "batch_size", 0, "> 0"),
        ("finetune", "momentum", 1.0, "in [0, 1)"),
        ("finetune", "epochs", -1, ">= 0"),
        ("finetune", "lr", -0.01, "> 0"),
        ("prune_gradual", "steps", 0, "> 0"),
        ("prune_gradual", "steps", -3, "> 0"),
        ("prune_gradual", "ramp", 0.0, "a fraction of the fine-tuning budget in (0, 1]"),
        ("prune_gradual", "ramp", 1.5, "a fraction of the fine-tuning budget in (0, 1]"),
        ("prune_gradual", "ramp", -0.5, "a fraction of the fine-tuning budget in (0, 1]"),
        ("prune_gradual", "scope", "channel", "one of layer, global"),
        ("prune_gradual", "scope", "Global", "one of layer, global"),
        ("compress", "method", "random", "one of gradual, global, layer"),
        ("compress", "sparsity", 1.0, "a fraction of weights removed, in [0, 1)"),
        ("compress", "sparsity", -0.1, "a fraction of weights removed, in [0, 1)"),
        ("compress", "bits", 0, "bits per shared weight, in 1..8"),
        ("compress", "bits", 9, "bits per shared weight, in 1..8"),
        ("compress", "centroid_epochs", -1, ">= 0"),
        ("compress", "centroid_lr", 0.0, "> 0"),
        ("compress", "seed", -1, "a seed in [0, 2**32)"),
    ],
)
def test_out_of_range(name, key, value, expected):
    message = param_error(name, with_value(name, key, value))
    assert message == f"params.yaml: {name}.{key} must be {expected}, got {value!r}"


@pytest.mark.parametrize(("index", "rate"), [(0, 1.0), (2, -0.1), (1, 1.5)])
def test_rate_outside_zero_one(index, rate):
    rates = [0.0, 0.5, 0.9]
    rates[index] = rate
    message = param_error("sweep", {"rates": rates})
    assert message == f"params.yaml: sweep.rates[{index}] must be a compression rate in [0, 1), got {rate!r}"


def test_duplicate_rates():
    message = param_error("sweep", {"rates": [0.0, 0.5, 0.5, 0.9]})
    assert message == "params.yaml: sweep.rates must be a list without duplicates, got [0.0, 0.5, 0.5, 0.9]"


@pytest.mark.parametrize("rates", [[], [0.5], [0.0, 0.95, 0.99], [0.5, 0.6], [0.1, 0.9]])
def test_rates_must_span_the_auc(rates):
    message = param_error("sweep", {"rates": rates})
    assert (
        message == f"params.yaml: sweep.rates must be a list including 0.0 and 0.9, the ends of the AUC, got {rates!r}"
    )


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
    assert "split.seed" in message


# --- the params file ----------------------------------------------------------------------------


def test_load_params_round_trip(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"train": {**REFERENCE["train"], "epochs": 3}, "model": {"hidden_size": 8}}))
    assert load_params(path)["model"] == {"hidden_size": 8}
    assert section(load_params(path), TrainParams, "train").epochs == 3


def test_missing_params_file_names_the_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ParamError) as info:
        load_params(path)
    assert str(info.value) == f"{path}: file not found (run from the project root)"


def test_invalid_yaml_names_the_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  epochs: 3\n  lr: [0.1\nmodel:\n  hidden_size: 8\n")
    with pytest.raises(ParamError) as info:
        load_params(path)
    message = str(info.value)
    assert message.startswith(f"{path}: not valid YAML at line ")
    assert "\n" not in message


@pytest.mark.parametrize(("text", "kind"), [("- a\n- b\n", "list"), ("", "NoneType"), ("42\n", "int")])
def test_params_file_that_is_not_a_mapping(tmp_path, text, kind):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(ParamError) as info:
        load_params(path)
    assert str(info.value) == f"{path}: expected a mapping of sections, got {kind}"


def test_params_file_not_utf8_is_a_param_error(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("train:\n  epochs: 3\n", encoding="utf-16")
    with pytest.raises(ParamError, match="p.yaml"):
        load_params(path)


def test_unknown_keys_of_mixed_types_are_a_param_error(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("train:\n  on: true\n  epoch: 3\n")
    with pytest.raises(ParamError, match=r"unknown key train\."):
        section(load_params(path), TrainParams, "train")


def test_params_file_edit_reaches_the_error(tmp_path):
    """From file to message: a copy of params.yaml with one bad value."""
    params = copy.deepcopy(REFERENCE)
    params["model"]["activation"] = "swish"
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    loaded = load_params(path)
    assert section(loaded, TrainParams, "train").epochs == 40
    with pytest.raises(ParamError) as info:
        section(loaded, ModelParams, "model")
    assert str(info.value) == "params.yaml: model.activation must be one of sigmoid, relu, tanh, got 'swish'"
