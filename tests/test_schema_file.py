"""params.schema.json: the committed JSON Schema is the one config.json_schema() writes, and it
judges params.yaml as config.load does (checked with the jsonschema package when it is installed)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from nncompress import config
from nncompress.compress.quantize import MAX_BITS
from nncompress.errors import ParamError
from nncompress.model import ACTIVATIONS
from nncompress.nets import NETS
from nncompress.prune import METHODS
from nncompress.prune.masks import SCOPES
from nncompress.training import DEVICES

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_FILE = ROOT / "params.schema.json"
REFERENCE = yaml.safe_load((ROOT / "params.yaml").read_text())
REQUIRED_SECTIONS = ["download", "split", "model", "train", "sweep", "finetune", "compress"]


def expected_text():
    return json.dumps(config.json_schema(), indent=2) + "\n"


def committed():
    return json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))


# --- the committed file -------------------------------------------------------------------------


def test_committed_schema_is_what_the_schema_stage_writes():
    assert SCHEMA_FILE.read_text(encoding="utf-8") == expected_text(), (
        "params.schema.json is stale: run `python stages/schema.py` and commit it"
    )


def test_schema_stage_writes_that_text(tmp_path):
    out = tmp_path / "schema.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "stages" / "schema.py"), "--out", str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert out.read_text(encoding="utf-8") == expected_text()


def test_params_yaml_points_editors_at_the_schema():
    first_line = (ROOT / "params.yaml").read_text().splitlines()[0]
    assert first_line == "# yaml-language-server: $schema=params.schema.json"


# --- what the schema says (no validator needed) -------------------------------------------------


def definition(schema, ref):
    assert ref.startswith("#/$defs/")
    return schema["$defs"][ref.removeprefix("#/$defs/")]


def section_schema(schema, name):
    """The definition of section `name` (a prune_<name> section is `anyOf: [section, null]`; the model
    section is one of the networks: the one params.yaml chooses)."""
    prop = schema["properties"][name]
    if "anyOf" in prop:
        refs = [option["$ref"] for option in prop["anyOf"] if "$ref" in option]
        assert len(refs) == 1
        assert {"type": "null"} in prop["anyOf"]
        return definition(schema, refs[0])
    if name == "model":
        return network_schema(schema, REFERENCE["model"]["arch"])
    return definition(schema, prop["$ref"])


def network_schema(schema, arch):
    """The model section's option for network `arch`."""
    options = definition(schema, schema["properties"]["model"]["$ref"])["oneOf"]
    found = [option for option in options if option["properties"]["arch"] == {"const": arch, "title": "Arch"}]
    assert len(found) == 1, arch
    return found[0]


def test_schema_lists_every_section_and_requires_the_fixed_ones():
    schema = committed()
    assert schema["title"] == "nncompress params.yaml"
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False
    assert sorted(schema["properties"]) == sorted(config.SECTIONS)
    assert schema["required"] == REQUIRED_SECTIONS


@pytest.mark.parametrize("name", sorted(config.SECTIONS))
def test_every_section_refuses_unknown_keys_and_requires_every_key(name):
    section = section_schema(committed(), name)
    cls = NETS[REFERENCE[name]["arch"]] if name == "model" else config.SECTIONS[name]
    assert section["additionalProperties"] is False
    assert section["required"] == list(cls.model_fields)
    assert sorted(section["properties"]) == sorted(REFERENCE[name])


def test_the_model_section_is_one_of_the_registered_networks():
    schema = committed()
    assert schema["properties"]["model"] == {"$ref": "#/$defs/NetConfig"}
    options = definition(schema, "#/$defs/NetConfig")["oneOf"]
    assert len(options) == len(NETS)
    for arch, cls in NETS.items():
        option = network_schema(schema, arch)  # arch is a constant: exactly one option fits a section
        assert option["additionalProperties"] is False
        assert option["required"] == list(cls.model_fields)
        assert option["required"][0] == "arch"


def test_the_optimiser_block_is_one_definition():
    schema = committed()
    assert schema["properties"]["finetune"] == {"$ref": "#/$defs/OptimiserConfig"}
    centroid = definition(schema, "#/$defs/CompressConfig")["properties"]["centroid"]
    assert centroid == {"$ref": "#/$defs/OptimiserConfig"}


@pytest.mark.parametrize(
    ("section", "key", "choices"),
    [
        ("model", "activation", ACTIVATIONS),
        ("train", "device", DEVICES),
        ("finetune", "device", DEVICES),
        ("prune_gradual", "scope", SCOPES),
        ("prune_lottery", "scope", SCOPES),
        ("compress", "method", sorted(METHODS)),
    ],
)
def test_choices_are_enums_from_their_owners(section, key, choices):
    assert section_schema(committed(), section)["properties"][key]["enum"] == list(choices)


def test_sweep_methods_are_distinct_registered_names():
    methods = section_schema(committed(), "sweep")["properties"]["methods"]
    assert methods["items"]["enum"] == sorted(METHODS)
    assert methods["uniqueItems"] is True


def test_bits_range_is_in_the_schema():
    compress = section_schema(committed(), "compress")["properties"]
    for rule in (compress["bits"], compress["sweep_bits"]["items"]):
        assert (rule.get("minimum"), rule.get("maximum")) == (1, MAX_BITS)


# --- validation with jsonschema, when it is installed -------------------------------------------


@pytest.fixture
def validator():
    jsonschema = pytest.importorskip("jsonschema")
    schema = committed()
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    cls.check_schema(schema)
    return cls(schema)


def schema_errors(validator, params):
    """(path, message) of each error; the path is where the error is (list of keys and indices)."""
    return [(list(error.absolute_path), error.message) for error in validator.iter_errors(params)]


def test_params_yaml_is_valid_against_the_schema(validator):
    assert schema_errors(validator, REFERENCE) == []


def case(path, *values, marks=()):
    """A parameter set named after where its value goes, e.g. `train.epochs=-1`."""
    name = ".".join(map(str, path))
    return pytest.param(
        path, *values, marks=marks, id=f"{name}={values[0]!r}" if values[0] is not None else f"no {name}"
    )


def edited(path, value):
    """The reference params with the value at `path` (keys and indices) replaced; None deletes."""
    params = copy.deepcopy(REFERENCE)
    target = params
    for part in path[:-1]:
        target = target[part]
    if value is None:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return params


ACCEPTED = [
    case(["train", "epochs"], 0),
    case(["train", "lr"], 1),  # an integer is a number
    case(["model", "hidden", 0], 65536),
    case(["model", "hidden"], [300, 100]),
    case(["model", "activation"], "tanh"),
    case(["model"], {"arch": "lenet300"}),
    case(["model"], {"arch": "lenet5"}),
    case(["sweep", "methods"], ["lottery", "random"]),
    case(["compress", "method"], "lottery"),
    case(["compress", "centroid", "momentum"], 0.0),
    case(["prune_random", "seeds"], [2**32 - 1]),
    case(["prune_gradual", "ramp"], 1.0),
]


@pytest.mark.parametrize(("path", "value"), ACCEPTED)
def test_values_config_accepts_are_valid(validator, tmp_path, path, value):
    params = edited(path, value)
    out = tmp_path / "params.yaml"
    out.write_text(yaml.safe_dump(params))
    config.load(out)
    assert schema_errors(validator, params) == []


# (where the value is, the value or None to delete it, where the schema reports it)
REFUSED = [
    case(["train", "epochs"], -1, ["train", "epochs"]),
    case(["train", "epochs"], "40", ["train", "epochs"]),
    case(["train", "shuffle"], "yes", ["train", "shuffle"]),
    case(["train", "device"], "tpu", ["train", "device"]),
    case(["train", "lr"], 0.0, ["train", "lr"]),
    case(["train", "epoch"], 3, ["train"]),  # unknown key
    case(["train", "epochs"], None, ["train"]),  # missing key
    # the model section is oneOf the networks: a section that fits none is reported on the section
    case(["model", "activation"], "swish", ["model"]),
    case(["model", "hidden", 0], 65537, ["model"]),
    case(["model", "hidden"], [], ["model"]),
    case(["model", "hidden"], 256, ["model"]),
    case(["model", "hidden_size"], 256, ["model"]),  # unknown key
    case(["model", "arch"], "resnet", ["model"]),
    case(["model", "arch"], None, ["model"]),  # missing key
    case(["model"], {"arch": "lenet5", "hidden": [256]}, ["model"]),
    case(["split", "test_size"], 10001, ["split", "test_size"]),
    case(["sweep", "methods", 1], "foo", ["sweep", "methods", 1]),
    case(["sweep", "methods"], ["random", "random"], ["sweep", "methods"]),
    case(["sweep", "rates", 1], 1.0, ["sweep", "rates", 1]),
    case(["finetune", "momentum"], 1.0, ["finetune", "momentum"]),
    case(["compress", "centroid", "lr"], 0.0, ["compress", "centroid", "lr"]),
    case(["compress", "sparsity"], 1.0, ["compress", "sparsity"]),
    case(["compress", "method"], "layer", ["compress", "method"]),
    case(["compress", "centroid_epochs"], 10, ["compress"]),
    case(["prune_random", "seeds"], [], ["prune_random"]),  # anyOf [section, null]: reported on the section
    case(["prune_random", "seeds"], [0, 0], ["prune_random"]),
    case(["prune_random", "seeds"], [2**32], ["prune_random"]),
    case(["prune_gradual", "ramp"], 0.0, ["prune_gradual"]),
    case(["prune_lottery", "scope"], "channel", ["prune_lottery"]),
    case(["foo"], {"seeds": [0]}, []),  # unknown section
    case(["train"], None, []),  # missing section
    case(
        ["compress", "bits"],
        MAX_BITS + 1,
        ["compress", "bits"],
    ),
]


@pytest.mark.parametrize(("path", "value", "where"), REFUSED)
def test_values_config_refuses_are_invalid(validator, tmp_path, path, value, where):
    params = edited(path, value)
    out = tmp_path / "params.yaml"
    out.write_text(yaml.safe_dump(params))
    with pytest.raises(ParamError):
        config.load(out)
    errors = schema_errors(validator, params)
    assert errors, "the JSON Schema accepts a value config.load refuses"
    assert where in [error_path for error_path, _ in errors]
