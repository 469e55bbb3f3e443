"""Request bodies are parsed and validated on a worker thread, never in the event loop.

FastAPI parses a JSON body (``json.loads``) and validates it against the endpoint's model
(pydantic, and the value rules of ``detlite.master.schemas._values``, a walk in Python over
every value) inside the event loop, before it hands a synchronous endpoint to its thread.
A body within its cap can hold millions of values (16 MiB of ``0,`` is eight million): one
such report kept the loop busy for seconds, and while the loop is busy nothing else is
answered, health and login included, whatever lane they have.

``BodyOffLoopRoute`` (the route class of every router) therefore parses and validates a
JSON body larger than ``INLINE_BODY_MAX`` on anyio's thread pool first (a smaller one on
the loop), and hands FastAPI the validated model: FastAPI's own validation then finds an
instance of the model, which pydantic accepts as it is. A
body that is not JSON, or fails to parse or validate, is answered exactly as FastAPI would
(a ``RequestValidationError``, the master's 400 naming the field); so is JSON that
Python will not build (an integer of thousands of digits, or nesting deeper than its
recursion limit), where FastAPI's own parser gives a 400 too.

What a large body costs while it is parsed is bounded too. The thread shares the
interpreter's lock, and ``json.loads`` keeps it for its whole run, so the loop waits on a
big parse; and parsed JSON can take 30 times the memory of its text (a small object is
hundreds of bytes of Python). So a body over ``BIG_BODY`` (256 KiB) is parsed only one at a
time in the whole master (the others wait their turn, holding their API slot), and is first
counted, at the speed of ``bytes.count``: more than ``MAX_BODY_CONTAINERS`` objects and
arrays, or more than ``MAX_BODY_ITEMS`` values (commas), is a 413 before any of it is
built. Brackets and commas inside strings count too: the only large strings the API takes
are base64 (contexts, files), which have none.
"""

from __future__ import annotations

import email.message
import json
from collections.abc import Callable, Coroutine
from typing import Any

import anyio.to_thread
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

from detlite.errors import APIError

__all__ = [
    "BIG_BODY",
    "INLINE_BODY_MAX",
    "MAX_BODY_CONTAINERS",
    "MAX_BODY_ITEMS",
    "BodyOffLoopRoute",
]

#: A body up to this size is parsed and validated on the event loop, which costs less than
#: the hop to a thread and back for a trial's report (a few hundred bytes); 2 KiB packed
#: with the smallest values holds the loop 1-2 ms at most (measured on a busy machine).
INLINE_BODY_MAX = 2 * 1024

#: Bodies over this size are counted, then parsed one at a time (see the module docstring):
#: twenty bodies of 1 MiB of small objects parsed at once took 0.9 GB and stalled health.
BIG_BODY = 256 * 1024
#: At most this many objects and arrays in a big body: 100,000 context files as a list of
#: objects fit twice. Parsed, that many small objects take about 200 MB.
MAX_BODY_CONTAINERS = 200_000
#: At most this many values (commas) in a big body: eight million numbers parse to about
#: 250 MB, eight million short strings to about 450 MB.
MAX_BODY_ITEMS = 8_000_000

_big_parses = anyio.CapacityLimiter(1)

_Handler = Callable[[Request], Coroutine[Any, Any, Response]]


def _is_json(content_type: str | None, strict: bool) -> bool:
    """Whether FastAPI would parse a body of this content type as JSON."""
    if not content_type:
        return not strict
    message = email.message.Message()
    message["content-type"] = content_type
    if message.get_content_maintype() != "application":
        return False
    subtype = message.get_content_subtype()
    return subtype == "json" or subtype.endswith("+json")


def _unparsable(exc: ValueError | RecursionError) -> dict[str, Any]:
    """The error for JSON that is well formed but that Python will not build: an integer
    over ``sys.get_int_max_str_digits()`` digits (ValueError), or arrays and objects nested
    deeper than the interpreter's recursion limit (RecursionError)."""
    if isinstance(exc, RecursionError):
        reason = "it nests arrays and objects too deep; flatten it (at most 32 levels)"
    else:
        reason = f"{exc}; send numbers of at most 4,300 digits (big ones as strings)"
    return {
        "type": "json_invalid",
        "loc": ("body",),
        "msg": "JSON decode error",
        "input": {},
        "ctx": {"error": reason},
    }


class BodyOffLoopRoute(APIRoute):
    """An APIRoute whose single JSON body is parsed and validated off the event loop."""

    def get_route_handler(self) -> _Handler:
        handler = super().get_route_handler()
        field = self.body_field
        single = len(self.dependant.body_params) == 1 and not getattr(
            self, "_embed_body_fields", False
        )
        if field is None or not single:
            return handler
        strict = bool(getattr(self, "strict_content_type", True))

        def validated(body: bytes) -> Any:
            try:
                data = json.loads(body)
            except json.JSONDecodeError as exc:
                error = {
                    "type": "json_invalid",
                    "loc": ("body", exc.pos),
                    "msg": "JSON decode error",
                    "input": {},
                    "ctx": {"error": exc.msg},
                }
                raise RequestValidationError([error]) from None
            except (ValueError, RecursionError) as exc:
                raise RequestValidationError([_unparsable(exc)]) from None
            value, errors = field.validate(data, {}, loc=("body",))
            if errors:
                raise RequestValidationError(errors)
            return value

        async def parse_then_handle(request: Request) -> Response:
            body = await request.body()
            if body and _is_json(request.headers.get("content-type"), strict):
                # FastAPI's ``await request.json()`` returns this (Starlette caches it).
                if len(body) <= INLINE_BODY_MAX:
                    request._json = validated(body)
                elif len(body) <= BIG_BODY:
                    request._json = await anyio.to_thread.run_sync(validated, body)
                else:
                    _check_counts(body)
                    request._json = await anyio.to_thread.run_sync(
                        validated, body, limiter=_big_parses
                    )
            return await handler(request)

        return parse_then_handle


def _check_counts(body: bytes) -> None:
    """A 413 if a big body holds more objects and arrays, or values, than it may."""
    containers = body.count(b"{") + body.count(b"[")
    items = body.count(b",")
    if containers > MAX_BODY_CONTAINERS:
        what = f"{containers:,} objects and arrays (at most {MAX_BODY_CONTAINERS:,})"
    elif items > MAX_BODY_ITEMS:
        what = f"{items:,} values (at most {MAX_BODY_ITEMS:,})"
    else:
        return
    raise APIError(
        f"the request body holds {what} in its {len(body):,} bytes: send it in smaller parts",
        status=413,
    )
