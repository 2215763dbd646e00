"""The schema of params.yaml: one pydantic model per section, and the whole file as `Params`.

Ranges come from the modules that own them (the codec's bit widths, the training devices, the
pruning scopes); each pruning method brings its own section, `prune_<name>`, from its registry, and
each network its keys of the `model` section, whose `arch` chooses it from the network registry.
`load` validates the whole file before a stage does any work;
`json_schema` is what `stages/schema.py` writes for editors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import create_model, model_validator

from nncompress.compress.quantize import MAX_BITS
from nncompress.data.mnist import TEST_SIZE, TRAIN_SIZE
from nncompress.errors import ParamError
from nncompress.nets import NetConfig
from nncompress.parallel import EXECUTORS
from nncompress.prune import METHODS
from nncompress.prune.registry import MethodConfig, section_name
from nncompress.schema import (
    Broken,
    Check,
    Epochs,
    Number,
    Positive,
    Section,
    Seed,
    _distinct,
    above,
    at_least,
    between,
    fraction,
    one_of,
    parse,
)
from nncompress.sweep import AUC_MAX_RATE
from nncompress.training import DEVICES, SCHEDULES

Device = Annotated[str, one_of(DEVICES)]
Momentum = Annotated[Number, fraction()]
Bits = Annotated[
    int,
    Check(
        lambda v: 1 <= v <= MAX_BITS, f"bits per shared weight, in 1..{MAX_BITS}", {"minimum": 1, "maximum": MAX_BITS}
    ),
]
Sparsity = Annotated[Number, fraction("a fraction of weights removed,")]
MethodName = Annotated[str, one_of(sorted(METHODS))]


class DownloadConfig(Section):
    mirrors: list[str]
    timeout: Annotated[Number, above(0)]  # seconds per connection attempt


class SplitConfig(Section):
    train_size: Positive
    val_size: Positive
    offset: Annotated[int, at_least(0)]
    test_size: Annotated[int, between(1, TEST_SIZE)]
    shuffle: bool
    seed: Seed

    @model_validator(mode="after")
    def _fits_the_training_file(self) -> SplitConfig:
        end = self.offset + self.train_size + self.val_size
        if end > TRAIN_SIZE:
            raise Broken(
                f"offset + train_size + val_size = {end} exceeds the {TRAIN_SIZE} images of the MNIST training file"
            )
        return self


# The model section: `arch` and that network's keys; it validates to the network's own class.
ModelConfig = NetConfig


class OptimiserConfig(Section):
    """SGD with momentum for `epochs` passes: the block train, finetune and compress.centroid share.
    `weight_decay` (L2, as torch.optim.SGD's, on every parameter) and `schedule` (the learning rate
    per step: constant, or cosine from `lr` down to 0 over the run); 0 and constant are the
    reference's plain SGD."""

    epochs: Epochs
    batch_size: Positive
    lr: Annotated[Number, above(0)]
    momentum: Momentum
    weight_decay: Annotated[Number, at_least(0)]
    schedule: Annotated[str, one_of(SCHEDULES)]
    shuffle: bool
    device: Device

    def sgd(self) -> dict[str, Any]:
        """What this block sets of `training.fit`'s and `batched.fit_many`'s keyword arguments, but
        for `epochs` (a caller's budget may differ) and `device`."""
        names = ("batch_size", "lr", "momentum", "weight_decay", "schedule", "shuffle")
        return {name: getattr(self, name) for name in names}


class TrainConfig(OptimiserConfig):
    seed: Seed  # weight init, dropout and shuffling
    log_every: Positive  # iterations between rows of the training curve


def _spans_the_auc(rates: list[float]) -> bool:
    return 0.0 in rates and AUC_MAX_RATE in rates


class SweepConfig(Section):
    methods: Annotated[
        list[MethodName],
        Check(
            lambda v: bool(v) and _distinct(v),
            "a non-empty list without duplicates",
            {"minItems": 1, "uniqueItems": True},
        ),
    ]
    rates: Annotated[
        list[Annotated[Number, fraction("a compression rate")]],
        Check(_distinct, "a list without duplicates", {"uniqueItems": True}),
        Check(_spans_the_auc, f"a list including 0.0 and {AUC_MAX_RATE}, the ends of the AUC"),
    ]
    workers: Annotated[int, at_least(0)]  # processes for the points of a sweep; 0: every available core
    executor: Annotated[str, one_of(EXECUTORS)]  # local processes, or a Ray cluster


class CompressConfig(Section):
    """The shipped file's setting (method, sparsity, bits) and the grid swept around it."""

    method: MethodName  # prunes as its prune@<method> sweep does, with its section
    sparsity: Sparsity
    bits: Bits
    # The pruning method's retraining budget here, in place of finetune.epochs (null: finetune.epochs):
    # a protocol may retrain its shipped model longer than its sweeps' many points.
    finetune_epochs: Epochs | None
    centroid: OptimiserConfig  # fine-tuning of the shared values after k-means
    seed: Seed
    sweep_sparsities: list[Sparsity]
    sweep_bits: list[Bits]


class _Root(Section):
    @model_validator(mode="after")
    def _methods_have_sections(self) -> _Root:
        for method in [*self.sweep.methods, self.compress.method]:  # type: ignore[attr-defined]
            if getattr(self, section_name(method)) is None:
                raise Broken(f"missing section {section_name(method)} (the {method} method is used)")
        return self

    def method(self, name: str) -> MethodConfig:
        """The validated section of pruning method `name`."""
        config = getattr(self, section_name(name), None)
        if config is None:
            raise ParamError(f"params.yaml: missing section {section_name(name)}")
        return config


# Every registered method may have its section; the ones in use must (checked above).
Params = create_model(  # type: ignore[call-overload]
    "Params",
    __base__=_Root,
    download=(DownloadConfig, ...),
    split=(SplitConfig, ...),
    model=(ModelConfig, ...),
    train=(TrainConfig, ...),
    sweep=(SweepConfig, ...),
    finetune=(OptimiserConfig, ...),
    **{section_name(name): (cls | None, None) for name, cls in sorted(METHODS.items())},
    compress=(CompressConfig, ...),
)
SECTIONS: dict[str, type[Section]] = {
    name: field.annotation  # type: ignore[misc]
    for name, field in Params.model_fields.items()
    if isinstance(field.annotation, type)
}
SECTIONS.update({section_name(name): cls for name, cls in METHODS.items()})


def read_yaml(path: str | Path = "params.yaml") -> dict[str, Any]:
    """Read params.yaml as a plain dict, with one-line errors for an unreadable file."""
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


def load(path: str | Path = "params.yaml") -> Any:
    """The whole params file, validated (a `Params`); the first problem is a one-line ParamError."""
    return parse(Params, read_yaml(path))


def parse_section(name: str, data: Any) -> Any:
    """One section on its own (for tests and tools), with the same errors as `load`."""
    if name not in SECTIONS:
        raise ParamError(f"params.yaml: unknown section {name}")
    return parse(SECTIONS[name], data, prefix=(name,))


def json_schema() -> dict[str, Any]:
    """JSON Schema of params.yaml, for editors (e.g. the YAML language server)."""
    schema = Params.model_json_schema()
    schema["title"] = "nncompress params.yaml"
    return schema
