"""Turning pydantic's validation errors into problems a person can act on.

pydantic reports where validation failed as a ``loc`` tuple that includes the tag of every
discriminated union it went through (``searcher.adaptive_asha.max_length``) and words its
messages for Python programmers ("Input should be a valid integer"). ``describe`` walks
each ``loc`` against the model's annotations, drops the union tags, and rewrites the
message in the config's own terms ("expected an integer >= 1, got 0").

Validators that know better than pydantic what went wrong raise ``problems_error``: its
errors carry a finished message under the type ``detlite_config`` and pass through
``describe`` untouched, apart from the path.
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails, InitErrorDetails, PydanticCustomError

from detlite.errors import ConfigProblem

__all__ = [
    "CONFIG_ERROR",
    "REPLACED_FIELDS",
    "Loc",
    "TypeTag",
    "describe",
    "did_you_mean",
    "one_of",
    "problems_error",
    "show",
    "to_problems",
    "union_tags",
    "unique",
]

Loc = tuple[str | int, ...]
CONFIG_ERROR = "detlite_config"

# Fields of configs written before Determined 0.13.0, when lengths were counted in steps.
REPLACED_FIELDS: dict[str, str] = {
    "max_steps": "was replaced by max_length in Determined 0.13.0; write max_length: "
    "{batches: N} (a step was batches_per_step batches, 100 by default)",
    "target_trial_steps": "was replaced by max_length in Determined 0.13.0; write "
    "max_length: {batches: N} (a step was batches_per_step batches, 100 by default)",
    "step_budget": "was replaced by budget in Determined 0.13.0, and budget by max_length "
    "when the adaptive searchers were removed in 0.15; use adaptive_asha with max_length",
    "budget": "belonged to the adaptive searchers removed in Determined 0.15; "
    "adaptive_asha uses max_length",
    "steps_per_round": "was replaced by length_per_round in Determined 0.13.0; write "
    "length_per_round: {batches: N}",
    "batches_per_step": "was replaced by scheduling_unit in Determined 0.13.0",
}


@dataclass(frozen=True, eq=False)  # compared by identity: typing hashes Annotated metadata
class TypeTag:
    """``Annotated`` metadata on a discriminated union: how to word problems with its tag.

    pydantic ignores metadata it does not know, so this only changes the messages.
    """

    missing: str = ""
    aliases: Mapping[str, str] = field(default_factory=dict)
    unsupported: Mapping[str, str] = field(default_factory=dict)


def problems_error(title: str, problems: Iterable[tuple[Loc, str]]) -> ValidationError:
    """A ValidationError whose errors are finished messages at the given paths.

    Raised inside a validator, pydantic nests its errors under the validator's own location.
    """
    details: list[InitErrorDetails] = [
        {
            "type": PydanticCustomError(CONFIG_ERROR, "{message}", {"message": message}),
            "loc": loc,
            "input": None,
        }
        for loc, message in problems
    ]
    return ValidationError.from_exception_data(title, details)


def to_problems(
    error: ValidationError, model: type[BaseModel] | None = None
) -> list[ConfigProblem]:
    """The ConfigProblems of a ValidationError, described against ``model`` if given."""
    return [
        ConfigProblem(".".join(map(str, loc)), message)
        for loc, message in describe(model, error.errors())
    ]


def unique(problems: Iterable[tuple[Loc, str]]) -> list[tuple[Loc, str]]:
    """Drop repeats: a rule checked on raw data may also have run as a model validator."""
    seen: set[tuple[Loc, str]] = set()
    kept = []
    for problem in problems:
        if problem not in seen:
            seen.add(problem)
            kept.append(problem)
    return kept


def describe(
    model: type[BaseModel] | None, errors: Sequence[ErrorDetails]
) -> list[tuple[Loc, str]]:
    """Each pydantic error as (path without union tags, plain message)."""
    described = []
    for error in errors:
        target = _walk(model, error["loc"]) if model is not None else _Target(list(error["loc"]))
        described.append((tuple(target.loc), _message(error, target)))
    return unique(described)


def show(value: Any) -> str:
    """A value as the person wrote it in YAML, cut short if long."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, BaseModel):
        value = value.model_dump()
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def one_of(choices: Iterable[str]) -> str:
    return ", ".join(choices)


def did_you_mean(
    word: object, choices: Iterable[str], aliases: Mapping[str, str] | None = None
) -> str:
    """``"; did you mean 'x'?"`` when ``word`` is close to one of ``choices``, else ``""``."""
    if not isinstance(word, str):
        return ""
    if aliases and word.lower() in aliases:
        return f"; did you mean {aliases[word.lower()]!r}?"
    choices = list(choices)
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if not close and len(word) >= 3:
        # A shortened name ('asha' for 'adaptive_asha') is too far off for difflib.
        close = [choice for choice in choices if word.lower() in choice][:1]
    return f"; did you mean {close[0]!r}?" if close else ""


@dataclass
class _Target:
    """Where an error points: the cleaned path and what the config declares there."""

    loc: list[str | int]
    annotation: Any = None
    discriminator: str | None = None
    tag: TypeTag | None = None
    owner: type[BaseModel] | None = None  # the model whose field the last segment names


def _unwrap(annotation: Any) -> tuple[Any, str | None, TypeTag | None]:
    """Strip ``Annotated`` and ``| None``, keeping any discriminator and TypeTag met on the way."""
    discriminator: str | None = None
    tag: TypeTag | None = None
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            bare, *metadata = get_args(annotation)
            for meta in metadata:
                found = getattr(meta, "discriminator", None)
                if isinstance(found, str):
                    discriminator = found
                if isinstance(meta, TypeTag):
                    tag = meta
            annotation = bare
            continue
        if _is_union(annotation):
            members = [a for a in get_args(annotation) if a is not type(None)]
            if len(members) == 1:
                annotation = members[0]
                continue
        return annotation, discriminator, tag


def _is_union(annotation: Any) -> bool:
    return get_origin(annotation) in (Union, types.UnionType)


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def union_tags(annotation: Any, discriminator: str) -> dict[str, type[BaseModel]]:
    """The tag values of a discriminated union, each with the model it selects."""
    tags: dict[str, type[BaseModel]] = {}
    for member in get_args(annotation):
        model, _, _ = _unwrap(member)
        if not _is_model(model) or discriminator not in model.model_fields:
            continue
        literal, _, _ = _unwrap(model.model_fields[discriminator].annotation)
        for value in get_args(literal):
            tags[str(value)] = model
    return tags


def _walk(model: type[BaseModel], loc: Sequence[str | int]) -> _Target:
    annotation: Any = model
    discriminator: str | None = None
    tag: TypeTag | None = None
    owner: type[BaseModel] | None = None
    path: list[str | int] = []
    index = 0
    while index < len(loc):
        segment = loc[index]
        bare, found, tag_found = _unwrap(annotation)
        discriminator = found or discriminator
        tag = tag_found or tag
        if _is_model(bare):
            owner = bare
            path.append(segment)
            index += 1
            info = bare.model_fields.get(segment) if isinstance(segment, str) else None
            if info is None:
                return _Target(path + list(loc[index:]), owner=owner)
            # pydantic moves a field's own Annotated metadata into the FieldInfo.
            annotation = info.annotation
            discriminator = info.discriminator if isinstance(info.discriminator, str) else None
            tag = next((m for m in info.metadata if isinstance(m, TypeTag)), None)
            continue
        if _is_union(bare):
            tags = union_tags(bare, discriminator) if discriminator else {}
            if isinstance(segment, str) and segment in tags:
                annotation, discriminator, tag = tags[segment], None, None
                index += 1
                continue
            # A union validated some other way (e.g. by a plain validator) already
            # reports clean paths below it.
            return _Target(path + list(loc[index:]), owner=owner)
        origin = get_origin(bare)
        args = get_args(bare)
        path.append(segment)
        index += 1
        if origin in (dict, Mapping) and len(args) == 2:
            annotation, discriminator, tag = args[1], None, None
        elif origin in (list, tuple, Sequence) and args:
            annotation, discriminator, tag = args[0], None, None
        else:
            return _Target(path + list(loc[index:]), owner=owner)
    bare, found, tag_found = _unwrap(annotation)
    return _Target(path, bare, found or discriminator, tag_found or tag, owner)


_NOUNS = {int: "an integer", float: "a number", str: "a string"}
_COMPARISONS = {
    "greater_than": ">",
    "greater_than_equal": ">=",
    "less_than": "<",
    "less_than_equal": "<=",
}
_SIMPLE = {
    "int_type": "expected an integer",
    "int_parsing": "expected an integer",
    "int_from_float": "expected a whole number",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "finite_number": "expected a finite number",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "string_type": "expected a string",
    "dict_type": "expected a mapping",
    "mapping_type": "expected a mapping",
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
    "list_type": "expected a list",
    "tuple_type": "expected a list",
    "none_required": "expected null",
}


def _message(error: ErrorDetails, target: _Target) -> str:
    kind = error["type"]
    ctx: dict[str, Any] = dict(error.get("ctx") or {})
    value = error.get("input")
    if kind == CONFIG_ERROR:
        return str(ctx["message"])
    if kind == "missing":
        return "required, but missing"
    if kind == "extra_forbidden":
        return _unknown_field(target)
    if kind in _SIMPLE:
        return f"{_SIMPLE[kind]}, got {show(value)}"
    if kind in _COMPARISONS:
        bound = next(iter(ctx.values()), "?")
        if isinstance(bound, float) and bound.is_integer():
            bound = int(bound)
        noun = _NOUNS.get(target.annotation, "a value")
        return f"expected {noun} {_COMPARISONS[kind]} {bound}, got {show(value)}"
    if kind == "literal_error":
        choices = [str(v) for v in get_args(target.annotation)] or [str(ctx.get("expected"))]
        return f"expected one of {one_of(choices)}, got {show(value)}" + did_you_mean(
            value, choices
        )
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        return _union_tag(kind, ctx, target)
    if kind in ("too_short", "string_too_short"):
        least = ctx.get("min_length", 1)
        if kind == "string_too_short" and least == 1:
            return "expected a non-empty string"
        return f"expected at least {least} item{'s' if least != 1 else ''}, got {show(value)}"
    if kind == "string_too_long":
        got = len(value) if isinstance(value, str) else "more"
        return f"expected at most {ctx.get('max_length')} characters, got {got}"
    if kind == "too_long":
        return f"expected at most {ctx.get('max_length')} items, got {show(value)}"
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        return str(ctx["error"])
    return str(error["msg"])


def _unknown_field(target: _Target) -> str:
    name = str(target.loc[-1]) if target.loc else ""
    if name in REPLACED_FIELDS:
        return f"{name!r} {REPLACED_FIELDS[name]}"
    fields = list(target.owner.model_fields) if target.owner is not None else []
    hint = did_you_mean(name, fields)
    if hint or not fields:
        return f"unknown field {name!r}{hint}"
    return f"unknown field {name!r}; expected one of {one_of(fields)}"


def _union_tag(kind: str, ctx: Mapping[str, Any], target: _Target) -> str:
    key = target.discriminator or str(ctx.get("discriminator", "type")).strip("'")
    tags = list(union_tags(target.annotation, key)) if target.discriminator else []
    choices = one_of(tags) if tags else str(ctx.get("expected_tags", ""))
    how = target.tag or TypeTag()
    if kind == "union_tag_not_found":
        return how.missing or f"missing {key!r}: expected one of {choices}"
    given = str(ctx.get("tag"))
    if given in how.unsupported:
        return f"{key} {given!r} is {how.unsupported[given]}"
    hint = did_you_mean(given, tags, how.aliases)
    return f"expected {key} one of {choices}, got {given!r}{hint}"
