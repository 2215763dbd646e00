"""Building blocks of the params.yaml schema (pydantic v2), and one-line errors from its failures.

Sections are strict (no silent conversions: 40.0 is not an integer, "yes" not a boolean) and refuse
unknown keys. A range lives beside its field as `Check` metadata, which also writes it into the
exported JSON Schema. Whatever fails, the user sees one line naming the key, what was expected and
what was found: `params.yaml: train.epochs must be >= 0, got -1`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Sequence
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, GetCoreSchemaHandler, GetJsonSchemaHandler, model_validator
from pydantic import ValidationError as PydanticValidationError
from pydantic_core import core_schema

from nncompress.errors import ParamError

SEED_LIMIT = 2**32  # numpy and torch both accept seeds in [0, 2**32)


class Invalid(ValueError):
    """A value outside its range: reported as `<key> must be <expected>, got <value>`."""

    def __init__(self, expected: str, value: Any):
        super().__init__(expected)
        self.expected, self.value = expected, value


class Broken(ValueError):
    """A rule across fields of a section: reported as `<section>.<message>`."""


class _Unknown(ValueError):
    def __init__(self, key: str, fields: Sequence[str]):
        super().__init__(key)
        self.key, self.fields = key, fields


@dataclasses.dataclass(frozen=True, eq=False)  # hashed by identity: a field may be `Epochs | None`
class Check:
    """Field metadata: `ok(value)` must hold, else the value is refused as not `expected`.
    `schema` holds the same rule in JSON Schema terms, for editors."""

    ok: Callable[[Any], bool]
    expected: str
    schema: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        def validate(value: Any) -> Any:
            if not self.ok(value):
                raise Invalid(self.expected, value)
            return value

        return core_schema.no_info_after_validator_function(validate, handler(source))

    def __get_pydantic_json_schema__(self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler) -> Any:
        result = handler(schema)
        result.update(self.schema)
        return result


def at_least(low: float) -> Check:
    return Check(lambda v: v >= low, f">= {low:g}", {"minimum": low})


def above(low: float) -> Check:
    return Check(lambda v: v > low, f"> {low:g}", {"exclusiveMinimum": low})


def between(low: int, high: int) -> Check:
    """An integer in low..high, both included."""
    return Check(lambda v: low <= v <= high, f"in {low}..{high}", {"minimum": low, "maximum": high})


def fraction(what: str = "", *, low_open: bool = False, high_open: bool = True) -> Check:
    """A number in [0, 1) by default; `what` names it in the message."""
    left, right = "(" if low_open else "[", ")" if high_open else "]"

    def ok(v: float) -> bool:
        return (v > 0 if low_open else v >= 0) and (v < 1 if high_open else v <= 1)

    schema = {"exclusiveMinimum" if low_open else "minimum": 0, "exclusiveMaximum" if high_open else "maximum": 1}
    return Check(ok, f"{what + ' ' if what else ''}in {left}0, 1{right}", schema)


def one_of(choices: Sequence[str]) -> Check:
    return Check(lambda v: v in choices, f"one of {', '.join(choices)}", {"enum": list(choices)})


def _number(value: Any) -> Any:
    """PyYAML reads 1e-3 (no dot) as a string: accept it as the number it is; ints become floats."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:  # an integer too large for a float
            raise Invalid("a number", value) from None
    return value


def _distinct(values: list[Any]) -> bool:
    return len(set(values)) == len(values)


Number = Annotated[float, BeforeValidator(_number)]
Seed = Annotated[
    int, Check(lambda v: 0 <= v < SEED_LIMIT, "a seed in [0, 2**32)", {"minimum": 0, "maximum": 2**32 - 1})
]
Seeds = Annotated[
    list[Seed],
    Check(
        lambda v: bool(v) and _distinct(v), "a non-empty list of distinct seeds", {"minItems": 1, "uniqueItems": True}
    ),
]
Epochs = Annotated[int, at_least(0)]
Positive = Annotated[int, above(0)]


class Section(BaseModel):
    """A section of params.yaml: every key required, none unknown, no silent type conversion."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            fields = list(cls.model_fields)
            unknown = sorted(str(k) for k in data if k not in cls.model_fields)  # YAML keys may be bools
            if unknown:
                raise _Unknown(unknown[0], fields)
        return data


def _unwrap(tp: Any) -> Any:
    """`tp` without Annotated metadata and without `| None`."""
    while True:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if typing.get_origin(tp) is Annotated:
            tp = typing.get_args(tp)[0]
        elif typing.get_origin(tp) in (typing.Union, types.UnionType) and len(args) == 1:
            tp = args[0]  # an optional section
        else:
            return tp


def _field_type(model: type[BaseModel], loc: Sequence[str | int]) -> Any:
    """The annotation of the field at `loc` (section names first), or None."""
    tp: Any = model
    for part in loc:
        tp = _unwrap(tp)
        if isinstance(part, int):  # an element of a list
            tp = typing.get_args(tp)[0] if typing.get_args(tp) else None
        elif isinstance(tp, type) and issubclass(tp, BaseModel) and (owner := _owner(tp, part)) is not None:
            tp = owner.model_fields[part].annotation
        else:
            return None
    return _unwrap(tp)


def _owner(model: type[BaseModel], name: str) -> type[BaseModel] | None:
    """`model` if it has the field `name`, else the first subclass that has it: a section that
    dispatches to subclasses (the model section, to the chosen network's) reports their fields."""
    if name in model.model_fields:
        return model
    for sub in model.__subclasses__():
        if (owner := _owner(sub, name)) is not None:
            return owner
    return None


_TYPE_NAMES = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "string": "a string",
    "finite": "a number",
}


def _expected_type(error_type: str, field: Any) -> str | None:
    if error_type in ("list_type", "list_parsing"):
        inner = _unwrap(typing.get_args(field)[0]) if typing.get_args(field) else Any
        return f"a list of {getattr(inner, '__name__', 'values')}"
    if error_type in ("model_type", "dict_type", "model_attributes_type"):
        return "a mapping of keys to values"
    for prefix, name in _TYPE_NAMES.items():
        if error_type.startswith(prefix):
            return name
    return None


def _key(loc: Sequence[str | int]) -> str:
    key = ""
    for part in loc:
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
    return key


def describe(error: PydanticValidationError, model: type[BaseModel], prefix: Sequence[str] = ()) -> str:
    """The one line a user sees for the first problem pydantic found."""
    errors = error.errors(include_url=False)
    first = _pick(errors)
    loc = [*prefix, *first["loc"]]
    key = _key(loc)
    cause = first.get("ctx", {}).get("error")
    if isinstance(cause, _Unknown):
        what = f"key {key}.{cause.key}" if key else f"section {cause.key}"
        return f"params.yaml: unknown {what} (expected one of: {', '.join(cause.fields)})"
    if isinstance(cause, Invalid):
        return f"params.yaml: {key} must be {cause.expected}, got {cause.value!r}"
    if isinstance(cause, Broken):
        return f"params.yaml: {key}.{cause}" if key else f"params.yaml: {cause}"
    if first["type"] == "missing":
        return f"params.yaml: missing {'section' if len(loc) == 1 else 'key'} {key}"
    expected = _expected_type(first["type"], _field_type(model, first["loc"]))
    if expected is None:  # not one of ours: still one line, in pydantic's words
        expected = first["msg"].removeprefix("Input should be ")
    return f"params.yaml: {key} must be {expected}, got {first['input']!r}"


def _is_unknown(error: Any) -> bool:
    return isinstance(error.get("ctx", {}).get("error"), _Unknown)


def _pick(errors: list[Any]) -> Any:
    """Unknown keys first (most likely a typo that explains the rest), then missing ones, then the rest
    in the file's order."""
    for test in (_is_unknown, lambda e: e["type"] == "missing"):
        for error in errors:
            if test(error):
                return error
    return errors[0]


M = typing.TypeVar("M", bound=BaseModel)


def parse(model: type[M], data: Any, prefix: Sequence[str] = ()) -> M:
    """Validate `data` against `model`; any failure is a one-line ParamError."""
    try:
        return model.model_validate(data)
    except PydanticValidationError as exc:
        raise ParamError(describe(exc, model, prefix)) from None
