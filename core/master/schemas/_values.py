"""The rules every value a request brings must keep, and the tolerance every answer has.

One user's value must never break a page that other users read, so what the master stores
is checked where it enters, in the wire schemas, and what it reads back is rendered whatever
an older master (or a hand-edited database) left there.

Request bodies (``RequestModel``, the base of every body the master parses) and the
experiment configs the master stores (``config_problems``):

- Numbers are finite, and an integer must fit a double exactly (``|n| <= 2**53``): anything
  else is a 400 naming the field. Metric values are the exception for non-finite numbers:
  NaN and +-Infinity in a training or validation report are accepted and stored as the
  strings ``"NaN"``, ``"Infinity"`` and ``"-Infinity"``, the spelling the trial worker
  already sends (``detlite.exec.reporter.json_safe``), so a diverging trial still reports
  and every reader sees one representation; a searcher metric of NaN, +-Infinity or null
  ranks as the worst possible result.
- Strings, object keys included, hold no NUL character and no lone surrogate (PostgreSQL's
  text cannot store a NUL, and no UTF-8 can encode a surrogate): a 400 naming the field.
  Log lines are the exception: their NUL characters and lone surrogates become U+FFFD, so
  that a program's output is never lost.
- JSON (metrics, metadata, configs, hyperparameters) nests at most 32 levels deep, the
  object itself being the first.
- Ids and counts stored in integer columns (trial ids, batch numbers, restart counts) lie in
  ``0..2**31-1``, the range of an INTEGER on both databases (``DbId``, ``Count``): out of
  range is a 400 in a body or a query, and in a path too (the routers' ``ExperimentId``,
  ``TrialId`` and version numbers have the same bounds).
- Query parameters that reach a query (filters, offsets, limits) follow the same rules.

Answers: the response types ``StoredText`` and ``StoredJSON`` render any stored value.
A lone surrogate becomes U+FFFD, a non-finite number null, and JSON nested deeper than 64
levels is cut there (null in its place), so that a listing never fails on a row.
``finite_float`` reads a stored number for sorting and comparing without ever raising.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import math
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from fastapi import Query
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from detlite.master.schemas.base import WireModel

__all__ = [
    "INT32_MAX",
    "MAX_JSON_DEPTH",
    "MAX_METADATA_BYTES",
    "MAX_QUERY_ITEMS",
    "MAX_SAFE_INTEGER",
    "MAX_STORED_DEPTH",
    "Count",
    "DbId",
    "Limit",
    "LogText",
    "Metadata",
    "Metrics",
    "Offset",
    "PathText",
    "QueryItem",
    "QueryText",
    "RequestModel",
    "SearcherMetric",
    "StoredJSON",
    "StoredText",
    "check_json",
    "check_text",
    "config_problems",
    "finite_float",
    "scrub_text",
    "stored_json",
    "stored_text",
]

#: The largest value of an INTEGER column (PostgreSQL's ``integer``; SQLite's is larger).
INT32_MAX = 2**31 - 1
#: The largest integer every JSON reader (a double) holds exactly.
MAX_SAFE_INTEGER = 2**53
#: How deep a stored JSON value may nest, the value itself being level 1.
MAX_JSON_DEPTH = 32
#: Where an answer cuts a stored value that nests deeper (an older master's row).
MAX_STORED_DEPTH = 64

_SURROGATE = re.compile("[\ud800-\udfff]")
_REPLACEMENT = "\ufffd"

NonFinite = Literal["refuse", "name"]
_NON_FINITE_NAMES = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


# -- strings -----------------------------------------------------------------------------------


def text_problem(text: str) -> str | None:
    """What makes ``text`` unstorable (a NUL, a lone surrogate), or None when nothing does."""
    if "\x00" in text:
        return "must not contain NUL characters (U+0000)"
    # isascii() is a flag lookup: the scan below runs only for text that has other characters.
    if not text.isascii():
        found = _SURROGATE.search(text)
        if found is not None:
            return (
                f"must not contain a lone surrogate (U+{ord(found.group()):04X} at "
                f"character {found.start()}): send text as valid UTF-8"
            )
    return None


def check_text(text: str) -> str:
    """``text`` unless it holds a NUL or a lone surrogate (ValueError saying which)."""
    problem = text_problem(text)
    if problem is not None:
        raise ValueError(problem)
    return text


def scrub_text(text: Any) -> Any:
    """``text`` with each NUL and lone surrogate replaced by U+FFFD (non-strings as given)."""
    if not isinstance(text, str) or text_problem(text) is None:
        return text
    return _SURROGATE.sub(_REPLACEMENT, text.replace("\x00", _REPLACEMENT))


# -- JSON values -------------------------------------------------------------------------------


class _Problem(Exception):
    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc
        self.message = message


def _number_problem(value: int | float) -> str | None:
    if isinstance(value, float):
        if not math.isfinite(value):
            return f"{value} is not a finite number; JSON numbers must be finite"
        return None
    if abs(value) > MAX_SAFE_INTEGER:
        bits = abs(value).bit_length()
        if bits > 4096:
            # str() refuses an integer over sys.get_int_max_str_digits() digits (4,300),
            # which YAML's ``0x...`` builds without that check: count from its bits.
            shown = f"an integer of about {int(bits * math.log10(2)):,} digits"
        else:
            digits = len(str(abs(value)))
            shown = str(value) if digits <= 24 else f"an integer of {digits} digits"
        return (
            f"{shown} is beyond +-2**53, where a double (JSON's number) loses integers; "
            "send it as a float or a string"
        )
    return None


def _walk(value: Any, depth: int, non_finite: NonFinite, max_depth: int) -> Any:
    """``value`` checked (and, for ``non_finite="name"``, NaN/infinities as their names).

    A report holds thousands of numbers, so the common types are tested first by exact type,
    and the location of a problem is built only once there is one: each container puts its
    key in front of ``_Problem.loc`` as the problem passes up."""
    kind = type(value)
    if kind is float:
        if math.isfinite(value):
            return value
        if non_finite == "name":
            return _NON_FINITE_NAMES[repr(value)]
        raise _Problem((), f"{value} is not a finite number; JSON numbers must be finite")
    if kind is str:
        problem = text_problem(value)
        if problem is not None:
            raise _Problem((), f"a string {problem}")
        return value
    if kind is int and -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
        return value
    if kind is dict or kind is list:
        if depth > max_depth:
            raise _Problem(
                (), f"JSON nests deeper than {max_depth} levels; flatten it (at most {max_depth})"
            )
        return _walk_container(value, depth, non_finite, max_depth)
    return _walk_other(value, depth, non_finite, max_depth)


def _walk_container(
    value: dict[Any, Any] | list[Any] | tuple[Any, ...] | Mapping[Any, Any],
    depth: int,
    non_finite: NonFinite,
    max_depth: int,
) -> Any:
    if type(value) is dict or isinstance(value, Mapping):  # an ABC's isinstance is slow
        out: dict[Any, Any] = {}
        for key, item in value.items():
            if type(key) is str:
                problem = text_problem(key)
                if problem is not None:
                    raise _Problem((), f"a key {problem}")
            try:
                out[key] = _walk(item, depth + 1, non_finite, max_depth)
            except _Problem as problem:
                problem.loc = (str(key), *problem.loc)
                raise
        return out
    items: list[Any] = []
    for i, item in enumerate(value):
        try:
            items.append(_walk(item, depth + 1, non_finite, max_depth))
        except _Problem as problem:
            problem.loc = (i, *problem.loc)
            raise
    return items


def _walk_other(value: Any, depth: int, non_finite: NonFinite, max_depth: int) -> Any:
    """The rarer values: subclasses, bools, None, integers near the limit, other
    containers, and what is not JSON at all."""
    if isinstance(value, str):
        problem = text_problem(value)
        if problem is not None:
            raise _Problem((), f"a string {problem}")
        return value
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, float) and non_finite == "name" and not math.isfinite(value):
        return _NON_FINITE_NAMES[repr(value)]
    if isinstance(value, int | float):
        problem = _number_problem(value)
        if problem is not None:
            raise _Problem((), problem)
        return value
    if isinstance(value, BaseModel | enum.Enum | dt.datetime | dt.date | bytes):
        return value  # a nested body checks itself; the others are not JSON containers
    if isinstance(value, Mapping | list | tuple):
        if depth > max_depth:
            raise _Problem(
                (), f"JSON nests deeper than {max_depth} levels; flatten it (at most {max_depth})"
            )
        return _walk_container(value, depth, non_finite, max_depth)
    return value


def check_json(
    value: Any, *, non_finite: NonFinite = "refuse", max_depth: int = MAX_JSON_DEPTH
) -> Any:
    """``value`` if it keeps the JSON rules (see the module docstring); with
    ``non_finite="name"`` its NaN and infinite floats come back as ``"NaN"``,
    ``"Infinity"`` and ``"-Infinity"``.

    Raises a pydantic ``ValidationError`` located at the offending key (so a body's error
    names ``metrics.loss``, not only ``metrics``); inside a validator pydantic adds the
    field's own location in front.
    """
    try:
        return _walk(value, 1, non_finite, max_depth)
    except _Problem as problem:
        raise ValidationError.from_exception_data(
            "value",
            [
                {
                    "type": "value_error",
                    "loc": problem.loc,
                    "input": None,  # never echoed: it may be huge
                    "ctx": {"error": ValueError(problem.message)},
                }
            ],
        ) from None


def config_problems(data: Any) -> list[tuple[str, str]]:
    """``(path, message)`` for the first value of a parsed config that breaks the rules
    (empty when none does); YAML's own types (dates) are left to the config's validation."""
    try:
        _walk(data, 1, "refuse", MAX_JSON_DEPTH)
    except _Problem as problem:
        return [(_dotted(problem.loc), problem.message)]
    return []


def _dotted(loc: tuple[str | int, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else part)
    return path


def _metrics(value: dict[str, Any]) -> dict[str, Any]:
    checked: dict[str, Any] = check_json(value, non_finite="name")
    return checked


def _searcher_metric(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else value


# -- what is read back ------------------------------------------------------------------------


def finite_float(value: Any) -> float | None:
    """``value`` as a finite float when it is a number that has one; None otherwise (also
    for bools, strings, NaN, infinities and integers too large for a float)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _tolerate(value: Any, depth: int) -> Any:
    if isinstance(value, str):
        return stored_text(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping | list | tuple):
        if depth > MAX_STORED_DEPTH:
            return None
        if isinstance(value, Mapping):
            return {stored_text(str(k)): _tolerate(v, depth + 1) for k, v in value.items()}
        return [_tolerate(v, depth + 1) for v in value]
    return value


def stored_json(value: Any) -> Any:
    """A stored JSON value as an answer can always render it (see the module docstring)."""
    return _tolerate(value, 1)


def stored_text(value: Any) -> Any:
    """A stored string with its lone surrogates as U+FFFD (a NUL is valid JSON text, kept);
    anything else unchanged."""
    if isinstance(value, str) and not value.isascii():
        return _SURROGATE.sub(_REPLACEMENT, value)
    return value


# -- the types --------------------------------------------------------------------------------

#: A stored id (experiment, trial, model version ...): an INTEGER column's range.
DbId = Annotated[int, Field(ge=0, le=INT32_MAX)]
#: A stored count (batches, restarts, inputs, ranks): an INTEGER column's range.
Count = Annotated[int, Field(ge=0, le=INT32_MAX)]
#: A training or validation report's metrics: NaN and infinities are stored by name.
Metrics = Annotated[dict[str, Any], AfterValidator(_metrics)]
#: The searcher metric of a completed operation; a non-finite one is "no result" (worst).
SearcherMetric = Annotated[float | None, AfterValidator(_searcher_metric)]
#: A log line: kept whatever it holds, NUL and lone surrogates replaced by U+FFFD.
LogText = Annotated[str, BeforeValidator(scrub_text)]
#: A string query parameter that reaches a query (a filter), and a path's name.
QueryText = Annotated[str, Query(max_length=1024), AfterValidator(check_text)]
PathText = Annotated[str, AfterValidator(check_text)]
#: One of a repeated string query parameter (``labels``, ``users``).
QueryItem = Annotated[str, AfterValidator(check_text)]
#: How many times a listing's filter parameter may repeat (``labels=a&labels=b``...): each
#: label is one more condition, and SQLite refuses a query of about a thousand (a 500).
MAX_QUERY_ITEMS = 100

#: Metadata a user or a worker attaches (to a model, a version, a checkpoint) is at most this
#: much JSON: every listing of those carries it.
MAX_METADATA_BYTES = 64 * 1024


def _bounded_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    size = len(json.dumps(metadata, separators=(",", ":"), default=str))
    if size > MAX_METADATA_BYTES:
        raise ValueError(
            f"metadata is {size:,} bytes of JSON, over {MAX_METADATA_BYTES:,}: keep large "
            "data in the checkpoint's files"
        )
    return metadata


Metadata = Annotated[dict[str, Any], AfterValidator(_bounded_metadata)]
#: A listing's offset (negative counts from the end) and limit (0 for all).
Offset = Annotated[
    int,
    Query(ge=-INT32_MAX, le=INT32_MAX, description="rows to skip; negative counts from the end"),
]
Limit = Annotated[int, Query(ge=0, le=INT32_MAX, description="rows to return; 0 for all")]

#: Text and JSON read from the database, in an answer (see ``stored_json``).
StoredText = Annotated[str, BeforeValidator(stored_text)]
StoredJSON = Annotated[dict[str, Any], BeforeValidator(stored_json)]


class RequestModel(WireModel):
    """The base of every request body: each field's value keeps the rules above.

    Fields with their own rule (``Metrics``, ``LogText``, ``SearcherMetric``) apply it
    first; this check then finds nothing left to refuse in them.
    """

    @field_validator("*", mode="after")
    @classmethod
    def _values(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, str):
            return check_text(value)
        return check_json(value)
