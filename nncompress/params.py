"""Typed, validated views of the sections of params.yaml.

Each stage reads only its own sections. A missing, unknown (mistyped) or out-of-range key is a
ParamError that names the key and what was expected.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from nncompress.errors import ParamError

ACTIVATIONS = ("sigmoid", "relu", "tanh")
SCOPES = ("layer", "global")  # magnitude pruning per layer, or with one threshold across layers
DEVICES = ("auto", "cpu", "cuda")  # auto: the GPU when PyTorch sees one
MNIST_TRAIN_SIZE = 60_000
MNIST_TEST_SIZE = 10_000
MAX_HIDDEN = 65_536  # far beyond anything useful for MNIST; refuses typos like 2560000
AUC_MAX_RATE = 0.9  # the reference's AUC spans rates 0..0.9

T = TypeVar("T")


def _fail(key: str, expected: str, value: Any) -> typing.NoReturn:
    raise ParamError(f"params.yaml: {key} must be {expected}, got {value!r}")


def _check_type(key: str, tp: Any, value: Any) -> Any:
    """Check `value` against a simple annotation; return it (ints are accepted as floats)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(tp):
            return None
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
        return _check_type(key, inner, value)
    if origin is list:
        (inner,) = typing.get_args(tp)
        if not isinstance(value, list):
            _fail(key, f"a list of {inner.__name__}", value)
        return [_check_type(f"{key}[{i}]", inner, v) for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            _fail(key, "true or false", value)
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            _fail(key, "an integer", value)
        return value
    if tp is float:
        if isinstance(value, str):  # PyYAML reads 1e-3 (no dot) as a string
            with contextlib.suppress(ValueError):
                value = float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            _fail(key, "a number", value)
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            _fail(key, "a string", value)
        return value
    raise TypeError(f"unsupported annotation {tp!r} for {key}")


def parse_section(cls: type[T], name: str, data: Any) -> T:
    """Build dataclass `cls` from `data`, refusing missing, unknown and mistyped keys."""
    if not isinstance(data, dict):
        _fail(name, "a mapping of keys to values", data)
    hints = typing.get_type_hints(cls)
    fields = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(str(k) for k in set(data) - set(fields))  # YAML keys may be bools or ints
    if unknown:
        raise ParamError(f"params.yaml: unknown key {name}.{unknown[0]} (expected one of: {', '.join(fields)})")
    values = {}
    for field_name in fields:
        key = f"{name}.{field_name}"
        if field_name not in data:
            raise ParamError(f"params.yaml: missing key {key}")
        values[field_name] = _check_type(key, hints[field_name], data[field_name])
    obj = cls(**values)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        validate(name)
    return obj


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    """Read params.yaml as a plain dict."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ParamError(f"{path}: file not found (run from the project root)") from None
    except UnicodeDecodeError:
        raise ParamError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise ParamError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ParamError(f"{path}: not valid YAML{where}") from None
    if not isinstance(data, dict):
        raise ParamError(f"{path}: expected a mapping of sections, got {type(data).__name__}")
    return data


def section(params: dict[str, Any], cls: type[T], name: str) -> T:
    """Parse section `name` of already-loaded params into `cls`."""
    if name not in params:
        raise ParamError(f"params.yaml: missing section {name}")
    return parse_section(cls, name, params[name])


def _seed(name: str, key: str, value: int) -> None:
    if not 0 <= value < 2**32:  # numpy and torch both accept this range
        _fail(f"{name}.{key}", "a seed in [0, 2**32)", value)


def _device(name: str, value: str) -> None:
    if value not in DEVICES:
        _fail(f"{name}.device", f"one of {', '.join(DEVICES)}", value)


def _positive(name: str, key: str, value: float) -> None:
    if value <= 0:
        _fail(f"{name}.{key}", "> 0", value)


def _non_negative(name: str, key: str, value: float) -> None:
    if value < 0:
        _fail(f"{name}.{key}", ">= 0", value)


@dataclasses.dataclass(frozen=True)
class DownloadParams:
    mirrors: list[str]
    timeout: float

    def validate(self, name: str) -> None:
        _positive(name, "timeout", self.timeout)


@dataclasses.dataclass(frozen=True)
class SplitParams:
    train_size: int
    val_size: int
    offset: int
    test_size: int
    shuffle: bool
    seed: int

    def validate(self, name: str) -> None:
        _positive(name, "train_size", self.train_size)
        _positive(name, "val_size", self.val_size)
        _non_negative(name, "offset", self.offset)
        end = self.offset + self.train_size + self.val_size
        if end > MNIST_TRAIN_SIZE:
            raise ParamError(
                f"params.yaml: {name}.offset + train_size + val_size = {end} exceeds the "
                f"{MNIST_TRAIN_SIZE} images of the MNIST training file"
            )
        if not 0 < self.test_size <= MNIST_TEST_SIZE:
            _fail(f"{name}.test_size", f"in 1..{MNIST_TEST_SIZE}", self.test_size)
        _seed(name, "seed", self.seed)


@dataclasses.dataclass(frozen=True)
class ModelParams:
    hidden_size: int
    activation: str
    dropout: float

    def validate(self, name: str) -> None:
        if not 0 < self.hidden_size <= MAX_HIDDEN:
            _fail(f"{name}.hidden_size", f"in 1..{MAX_HIDDEN}", self.hidden_size)
        if self.activation not in ACTIVATIONS:
            _fail(f"{name}.activation", f"one of {', '.join(ACTIVATIONS)}", self.activation)
        if not 0 <= self.dropout < 1:
            _fail(f"{name}.dropout", "in [0, 1)", self.dropout)


@dataclasses.dataclass(frozen=True)
class TrainParams:
    epochs: int
    batch_size: int
    lr: float
    momentum: float
    shuffle: bool
    seed: int
    log_every: int
    device: str

    def validate(self, name: str) -> None:
        _device(name, self.device)
        _non_negative(name, "epochs", self.epochs)
        _positive(name, "batch_size", self.batch_size)
        _positive(name, "lr", self.lr)
        if not 0 <= self.momentum < 1:
            _fail(f"{name}.momentum", "in [0, 1)", self.momentum)
        _positive(name, "log_every", self.log_every)
        _seed(name, "seed", self.seed)


@dataclasses.dataclass(frozen=True)
class SweepParams:
    rates: list[float]

    def validate(self, name: str) -> None:
        for i, rate in enumerate(self.rates):
            if not 0 <= rate < 1:
                _fail(f"{name}.rates[{i}]", "a compression rate in [0, 1)", rate)
        if len(set(self.rates)) != len(self.rates):
            _fail(f"{name}.rates", "a list without duplicates", self.rates)
        if 0.0 not in self.rates or AUC_MAX_RATE not in self.rates:
            _fail(f"{name}.rates", f"a list including 0.0 and {AUC_MAX_RATE}, the ends of the AUC", self.rates)


def _seeds(name: str, seeds: list[int]) -> None:
    if not seeds or len(set(seeds)) != len(seeds):
        _fail(f"{name}.seeds", "a non-empty list of distinct seeds", seeds)
    for i, seed in enumerate(seeds):
        _seed(name, f"seeds[{i}]", seed)


@dataclasses.dataclass(frozen=True)
class SeedsParams:
    """A method whose only knob is the seeds it is repeated over (mean and spread reported)."""

    seeds: list[int]

    def validate(self, name: str) -> None:
        _seeds(name, self.seeds)


RandomPruneParams = SeedsParams


@dataclasses.dataclass(frozen=True)
class GradualPruneParams:
    seeds: list[int]
    steps: int
    ramp: float
    scope: str

    def validate(self, name: str) -> None:
        _seeds(name, self.seeds)
        _positive(name, "steps", self.steps)
        if not 0 < self.ramp <= 1:
            _fail(f"{name}.ramp", "a fraction of the fine-tuning budget in (0, 1]", self.ramp)
        if self.scope not in SCOPES:
            _fail(f"{name}.scope", f"one of {', '.join(SCOPES)}", self.scope)


@dataclasses.dataclass(frozen=True)
class MagnitudePruneParams:
    finetune_epochs: int

    def validate(self, name: str) -> None:
        _non_negative(name, "finetune_epochs", self.finetune_epochs)


@dataclasses.dataclass(frozen=True)
class FinetuneParams:
    """Retraining after pruning: the budget every retraining method gets, and its SGD optimiser."""

    epochs: int
    lr: float
    batch_size: int
    momentum: float
    shuffle: bool
    device: str

    def validate(self, name: str) -> None:
        _device(name, self.device)
        _non_negative(name, "epochs", self.epochs)
        _positive(name, "lr", self.lr)
        _positive(name, "batch_size", self.batch_size)
        if not 0 <= self.momentum < 1:
            _fail(f"{name}.momentum", "in [0, 1)", self.momentum)


COMPRESS_METHODS = ("gradual", "global", "layer")  # how the compress stage prunes before coding


@dataclasses.dataclass(frozen=True)
class CompressParams:
    """The shipped file's setting (method, sparsity, bits) and the grid swept around it."""

    method: str
    sparsity: float
    bits: int
    centroid_epochs: int
    centroid_lr: float
    seed: int
    sweep_sparsities: list[float]
    sweep_bits: list[int]

    def validate(self, name: str) -> None:
        if self.method not in COMPRESS_METHODS:
            _fail(f"{name}.method", f"one of {', '.join(COMPRESS_METHODS)}", self.method)
        for key, values in (("sparsity", [self.sparsity]), ("sweep_sparsities", self.sweep_sparsities)):
            for value in values:
                if not 0 <= value < 1:
                    _fail(f"{name}.{key}", "a fraction of weights removed, in [0, 1)", value)
        for key, values in (("bits", [self.bits]), ("sweep_bits", self.sweep_bits)):
            for value in values:
                if not 1 <= value <= 8:
                    _fail(f"{name}.{key}", "bits per shared weight, in 1..8", value)
        _non_negative(name, "centroid_epochs", self.centroid_epochs)
        _positive(name, "centroid_lr", self.centroid_lr)
        _seed(name, "seed", self.seed)
