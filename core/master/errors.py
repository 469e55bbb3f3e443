"""The one JSON shape of every error the master answers, and the handlers that produce it.

Every non-2xx answer has this body (and ``Content-Type: application/json``)::

    {"error": {"code": 404,
               "reason": "Not Found",
               "message": "user 'bob' not found",
               "details": []}}

- ``code``: the HTTP status again, so a logged body is self-contained.
- ``reason``: the standard phrase of that status.
- ``message``: one line for a person, saying what was wrong (and what to do, where known).
- ``details``: a list, empty unless the request had invalid fields; then one entry per field,
  ``{"field": "body.user.username", "message": "String should have at most 255 characters"}``.
  Submitted values are never echoed (they may be passwords). A message or field naming
  text that no UTF-8 can encode (a lone surrogate) shows U+FFFD in its place.

Statuses, following Determined's gRPC-gateway (which answered bad input with 400, never 422):

- 400: malformed JSON, a missing or invalid field or parameter (FastAPI's 422 is turned into
  400), ``detlite.errors.APIError`` with no other status, ``InvalidExperimentConfig`` (its
  problems become ``details``) and ``InvalidExperiment``.
- 400 too for a value the database refuses (``sqlalchemy.exc.DataError``: out of its
  range, or text it cannot store). The schemas refuse such values first
  (``detlite.master.schemas._values``); this is the net under them, and the transaction is
  rolled back, so nothing is written.
- 401 ``Unauthenticated`` (with ``WWW-Authenticate: Bearer``), 403 ``Forbidden``,
  404 ``NotFound``, 409 ``Conflict`` and a database integrity violation (a concurrent insert
  of the same unique name), plus any ``HTTPException`` with its own status (404 for unknown
  paths, 405 with ``Allow`` for a wrong method).
- 500: anything else. That is a bug: the traceback goes to the ``detlite.master`` log under a
  short error id, and the body carries only that id.
"""

from __future__ import annotations

import http
import json
import logging
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import DataError, IntegrityError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from detlite.errors import (
    APIError,
    DetliteError,
    InvalidExperiment,
    InvalidExperimentConfig,
)
from detlite.master.schemas._values import scrub_text

__all__ = [
    "CatchAllMiddleware",
    "ErrorBody",
    "ErrorDetail",
    "ErrorResponse",
    "error_response",
    "install_error_handlers",
    "openapi_error_responses",
]

logger = logging.getLogger("detlite.master")


class ErrorDetail(BaseModel):
    field: str
    message: str


class ErrorBody(BaseModel):
    code: int
    reason: str
    message: str
    details: list[ErrorDetail] = []


class ErrorResponse(BaseModel):
    """The body of every error answer (documented in the OpenAPI schema)."""

    error: ErrorBody


def error_response(
    status: int,
    message: str,
    details: Sequence[Mapping[str, str]] = (),
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = {
        "error": {
            "code": status,
            "reason": http.HTTPStatus(status).phrase,
            "message": _encodable(message),
            "details": [{k: _encodable(v) for k, v in d.items()} for d in details],
        }
    }
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


def _encodable(text: str) -> str:
    # An error about a lone surrogate may quote it; the answer must still encode.
    return str(scrub_text(text))


def _field_path(loc: Sequence[Any]) -> str:
    return ".".join(str(part) for part in loc)


async def _http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    detail = exc.detail
    message = detail if isinstance(detail, str) else json.dumps(detail)
    # Starlette's default details are just the phrase; say which request it was about.
    if status == 404 and message == "Not Found":
        message = f"no such endpoint: {request.method} {request.url.path}"
    elif status == 405 and message == "Method Not Allowed":
        message = f"{request.method} is not allowed on {request.url.path}"
    return error_response(status, message, headers=exc.headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = [
        {"field": _field_path(err.get("loc", ())), "message": str(err.get("msg", "invalid"))}
        for err in exc.errors()
    ]
    listed = "; ".join(f"{d['field']}: {d['message']}" for d in details[:5])
    more = f" (and {len(details) - 5} more)" if len(details) > 5 else ""
    return error_response(400, f"invalid request: {listed}{more}", details)


def _status_of(exc: DetliteError) -> int | None:
    if isinstance(exc, APIError):
        return exc.status or 400
    if isinstance(exc, InvalidExperimentConfig | InvalidExperiment):
        return 400
    return None


async def _detlite_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DetliteError)
    status = _status_of(exc)
    if status is None:  # an error we raise on purpose but never meant to reach a client
        return _internal_error(request, exc)
    details: list[dict[str, str]] = []
    message = str(exc)
    if isinstance(exc, InvalidExperimentConfig):
        details = [{"field": p.path, "message": p.message} for p in exc.problems]
        message = message.splitlines()[0]
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return error_response(status, message, details, headers)


async def _integrity_error(request: Request, exc: Exception) -> JSONResponse:
    # Handlers check uniqueness first; this is the race where two requests insert at once.
    assert isinstance(exc, IntegrityError)
    # Only the driver's error class is logged: the statement's parameters may hold hashes.
    cause = type(exc.orig).__name__
    logger.info("integrity error (%s) in %s %s", cause, request.method, request.url.path)
    return error_response(409, "the request conflicts with data changed at the same time; retry")


async def _data_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DataError)
    # Only the driver's error class is logged: the statement's parameters may hold secrets.
    cause = type(exc.orig).__name__
    logger.warning("data error (%s) in %s %s", cause, request.method, request.url.path)
    return error_response(
        400,
        "the database cannot store a value of this request (a number out of its range, or "
        "text it cannot hold); nothing was written",
    )


def _internal_error(request: Request | Scope, exc: BaseException) -> JSONResponse:
    error_id = secrets.token_hex(4)
    if isinstance(request, Request):
        method, path = request.method, request.url.path
    else:
        method, path = request.get("method", "?"), request.get("path", "?")
    logger.error("error %s in %s %s", error_id, method, path, exc_info=exc)
    return error_response(
        500, f"internal error {error_id} (a bug in detlite; the master's log has the details)"
    )


class CatchAllMiddleware:
    """Answers an unhandled exception with the error shape (500) instead of a bare text body.

    Starlette's own last-resort handler re-raises after answering, so the server would log
    every such error twice; this one logs it once and ends the request.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_tracking(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, send_tracking)
        except Exception as exc:
            if started:  # too late for an error body; let the server drop the connection
                raise
            await _internal_error(scope, exc)(scope, receive, send)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers above on ``app`` (``create_app`` calls this)."""
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(DetliteError, _detlite_error)
    app.add_exception_handler(IntegrityError, _integrity_error)
    app.add_exception_handler(DataError, _data_error)
    app.add_middleware(CatchAllMiddleware)


def openapi_error_responses(schema: dict[str, Any]) -> dict[str, Any]:
    """Document the error shape on every operation, replacing FastAPI's 422 entries."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in (ErrorDetail, ErrorBody, ErrorResponse):
        components[model.__name__] = model.model_json_schema(
            ref_template="#/components/schemas/{model}"
        )
        components[model.__name__].pop("$defs", None)
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    ref = {"$ref": "#/components/schemas/ErrorResponse"}
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            responses["default"] = {
                "description": "Error (see detlite.master.errors for the statuses)",
                "content": {"application/json": {"schema": ref}},
            }
    return schema
