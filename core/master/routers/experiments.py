"""Experiments: ``/api/v1/experiments`` -- create, list, get, patch, the state actions, delete.

- ``POST /api/v1/experiments``: body ``{"config": <YAML text or JSON object>,
  "modelDefinition": [{"path", "type", "content" (base64), "mode"?}] | "contextArchive":
  <base64 .tar.gz>, "validateOnly": false, "activate": true, "archived": false}``. The
  config is validated with every installed plugin searcher (400 listing each problem in
  ``details``); the context is checked by ``detlite.master.context_archive`` (400 for a bad
  or oversized archive, or one without the entrypoint's module: ``check_entrypoint``).
  Answers ``{"experiment", "config"}`` (``experiment`` null for ``validateOnly``, which
  stores nothing). Not activated means created PAUSED.
- ``GET /api/v1/experiments``: filters ``states`` (repeated; names or numbers), ``archived``,
  ``users`` (usernames, repeated), ``labels`` (repeated; all must match), ``description``
  and ``name`` (case-insensitive substrings of the description); ``sort_by``, ``order_by``,
  ``offset``, ``limit`` as in ``queries.experiments``; a repeated filter repeats at most
  ``MAX_QUERY_ITEMS`` (100) times. Answers ``{"experiments",
  "pagination"}``.
- ``GET /api/v1/experiments/{id}`` -> ``{"experiment", "config"}``;
  ``GET /api/v1/experiments/{id}/model_def`` -> ``{"b64Tgz"}`` (the context, for workers).
- Owner or admin only: ``PATCH /api/v1/experiments/{id}`` (description or name, labels,
  notes), ``POST .../{activate,pause,cancel,kill,archive,unarchive}`` (each answers
  ``{"experiment", "config"}`` after the change) and ``DELETE`` (answers ``{}``). The state
  rules and their 409s are in ``queries.experiments``.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio.to_thread
import sqlalchemy as sa
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from detlite.api.enums import ExperimentState
from detlite.config import ExperimentConfig, parse_config_yaml
from detlite.errors import (
    APIError,
    CheckpointError,
    ConfigProblem,
    DetliteError,
    InvalidExperiment,
    InvalidExperimentConfig,
    SearcherError,
    StorageNotAllowed,
)
from detlite.master import context_archive, gc
from detlite.master._bodies import BodyOffLoopRoute
from detlite.master.deps import CurrentUser, DbSession, get_state
from detlite.master.orm import Experiment
from detlite.master.queries import experiments as queries
from detlite.master.scheduler.defaults import (
    check_storage_allowed,
    check_storage_reachable,
    with_default_storage,
)
from detlite.master.schemas._values import (
    MAX_QUERY_ITEMS,
    Limit,
    Offset,
    QueryItem,
    QueryText,
    config_problems,
)
from detlite.master.schemas.common import OrderBy, parse_enum
from detlite.master.schemas.experiments import (
    CreateExperimentRequest,
    CreateExperimentResponse,
    ExperimentResponse,
    GetExperimentsResponse,
    ModelDefResponse,
    PatchExperimentRequest,
)
from detlite.master.schemas.metrics import INT32_MAX
from detlite.plugins import get_plugins

__all__ = ["ExperimentId", "parse_order_by", "parse_states", "router"]

router = APIRouter(route_class=BodyOffLoopRoute, prefix="/api/v1/experiments", tags=["experiments"])
logger = logging.getLogger("detlite.master")

ExperimentId = Annotated[int, Path(ge=0, le=INT32_MAX, description="the experiment's id")]

_FILE_TYPES = {"48": "file", "0": "file", "file": "file", "53": "dir", "5": "dir", "dir": "dir"}


def parse_states(values: list[str]) -> list[ExperimentState]:
    try:
        return [ExperimentState.parse(v) for v in values]
    except ValueError as exc:
        raise APIError(f"states: {exc}", status=400) from None


def parse_order_by(value: str) -> OrderBy:
    try:
        return parse_enum(OrderBy, value, "ORDER_BY_")
    except ValueError as exc:
        raise APIError(f"order_by: {exc}", status=400) from None


#: The largest experiment config the master stores (its JSON, or the YAML text sent): every
#: read of the experiment, listings included, loads it. Real configs are a few KiB.
MAX_CONFIG_BYTES = 1 << 20


def _config_too_large(size: int) -> InvalidExperiment:
    return InvalidExperiment(
        f"the experiment config is {size:,} bytes, over the limit of {MAX_CONFIG_BYTES:,} "
        "(1 MiB); keep data out of the config (in the context or in storage)"
    )


def _load_config(config: str | dict[str, Any]) -> ExperimentConfig:
    # YAML text is parsed here, never handed to load_config as a str: that would read a
    # file on the master if the text happened to name one.
    if isinstance(config, str) and len(config) > MAX_CONFIG_BYTES:
        raise _config_too_large(len(config.encode("utf-8", "surrogatepass")))
    data = parse_config_yaml(config) if isinstance(config, str) else config
    try:
        size = len(json.dumps(data, default=str))
    except (ValueError, RecursionError):
        size = 0  # not JSON at all: config_problems below names what is wrong
    if size > MAX_CONFIG_BYTES:  # also YAML whose aliases grew it
        raise _config_too_large(size)
    # What the master stores keeps the value rules of schemas._values (YAML text can
    # carry a NaN, a NUL or a lone surrogate that a JSON body could not).
    problems = config_problems(data)
    if problems:
        raise InvalidExperimentConfig(ConfigProblem(path, message) for path, message in problems)
    return get_plugins().load_config(data)


def _check_search_starts(config: ExperimentConfig) -> None:
    """Build the search method now, so that a config it cannot start from (numbers that
    overflow its arithmetic) is a 400 here, not a failed experiment later."""
    try:
        get_plugins().make_search_method(config)
    except (ArithmeticError, ValueError, SearcherError) as exc:
        raise InvalidExperiment(
            f"searcher: the search cannot start from this config: {exc}"
        ) from None


def _b64decode(text: str, what: str) -> bytes:
    limit = context_archive.MAX_CONTEXT_SIZE
    if len(text) // 4 * 3 > limit + 3:
        raise InvalidExperiment(
            f"{what} is over the context size limit of {limit:,} bytes (96 MB); leave large "
            "files out with a .detignore file"
        )
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidExperiment(f"{what} is not valid base64") from None


def _context_of(body: CreateExperimentRequest) -> bytes:
    if body.model_definition is not None and body.context_archive is not None:
        raise APIError(
            "give the context as modelDefinition or as contextArchive, not both", status=400
        )
    if body.context_archive is not None:
        data = _b64decode(body.context_archive, "contextArchive")
        context_archive.validate_archive(data)
        return data
    if not body.model_definition:
        return context_archive.empty_archive()
    limit = context_archive.MAX_CONTEXT_SIZE
    total = 0
    files: list[tuple[str, context_archive.EntryKind, bytes, int | None]] = []
    for i, entry in enumerate(body.model_definition):
        kind = _FILE_TYPES.get(str(entry.type).lower())
        if kind is None:
            raise APIError(
                f"modelDefinition[{i}] ({entry.path!r}): type {entry.type!r} is neither a "
                "file (48 or 'file') nor a directory (53 or 'dir')",
                status=400,
            )
        content = _b64decode(entry.content, f"modelDefinition[{i}] ({entry.path!r})")
        total += len(content)
        if total > limit:
            raise InvalidExperiment(
                f"the context holds over {limit:,} bytes (96 MB); leave large files out "
                "with a .detignore file or keep data outside the context"
            )
        files.append((entry.path, "file" if kind == "file" else "dir", content, entry.mode))
    return context_archive.pack_files(files)


@router.post("")
def create_experiment(
    request: Request, db: DbSession, user: CurrentUser, body: CreateExperimentRequest
) -> CreateExperimentResponse:
    """Create an experiment from a config and its context (or only validate them)."""
    config = _load_config(body.config)
    # Workers need to know where checkpoints go: the master's storage unless the config says.
    settings = get_state(request).settings
    config = with_default_storage(config, settings.storage_path)
    # Allowed first: the master looks at nothing on its host outside the allowed locations,
    # not even whether a directory exists there.
    check_storage_allowed(config, settings.storage_locations)
    try:
        check_storage_reachable(config)
    except OSError as exc:
        raise InvalidExperiment(
            f"checkpoint_storage.host_path cannot be used on the master's host: {exc.strerror}"
        ) from None
    _check_search_starts(config)
    archive = _context_of(body)
    native = config.internal.native if config.internal is not None else None
    given = body.model_definition is not None or body.context_archive is not None
    if given or not body.validate_only:  # validateOnly with no context checks the config only
        context_archive.check_entrypoint(
            config.entrypoint, bool(native is not None and native.command), archive
        )
    if body.validate_only:
        return CreateExperimentResponse(experiment=None, config=config.to_dict())
    row = queries.create_experiment(
        db, user, config, archive, activate=body.activate, archived=body.archived
    )
    db.commit()
    return CreateExperimentResponse(experiment=queries.experiment_wire(db, row), config=row.config)


@router.get("")
def get_experiments(
    db: DbSession,
    sort_by: str = "SORT_BY_UNSPECIFIED",
    order_by: str = "ORDER_BY_UNSPECIFIED",
    offset: Offset = 0,
    limit: Limit = 0,
    states: Annotated[list[str], Query(max_length=MAX_QUERY_ITEMS)] = [],  # noqa: B006 - FastAPI copies defaults
    archived: bool | None = None,
    users: Annotated[list[QueryItem], Query(max_length=MAX_QUERY_ITEMS)] = [],  # noqa: B006
    labels: Annotated[list[QueryItem], Query(max_length=MAX_QUERY_ITEMS)] = [],  # noqa: B006
    description: QueryText = "",
    name: QueryText = "",
) -> GetExperimentsResponse:
    try:
        sort = parse_enum(queries.ExperimentSortBy, sort_by, "SORT_BY_")
    except ValueError as exc:
        raise APIError(f"sort_by: {exc}", status=400) from None
    rows, pagination = queries.list_experiments(
        db,
        states=parse_states(states),
        archived=archived,
        users=users,
        labels=labels,
        description=description,
        name=name,
        sort_by=sort,
        order_by=parse_order_by(order_by),
        offset=offset,
        limit=limit,
    )
    return GetExperimentsResponse(
        experiments=queries.experiments_wire(db, rows), pagination=pagination
    )


def _response(db: DbSession, row: Any) -> ExperimentResponse:
    return ExperimentResponse(experiment=queries.experiment_wire(db, row), config=row.config)


@router.get("/{experiment_id}")
def get_experiment(experiment_id: ExperimentId, db: DbSession) -> ExperimentResponse:
    return _response(db, queries.get_experiment(db, experiment_id))


#: The context is read from the database and sent this many bytes at a time (a multiple of
#: 3, so that the base64 of the pieces is the base64 of the whole).
CONTEXT_CHUNK = 3 * 512 * 1024


@router.get("/{experiment_id}/model_def", response_model=ModelDefResponse)
def get_model_def(experiment_id: ExperimentId, request: Request, db: DbSession) -> Response:
    """The experiment's context directory as a base64 ``.tar.gz`` (for trial workers).

    The answer (``{"b64Tgz": "..."}``, up to 127 MB) is streamed: each piece of the archive
    is read from the database when the client has taken the one before, so a client that
    stops reading holds one piece of it, not a copy of the whole (its slot is given back
    when the answer starts, ``detlite.master._limits``)."""
    queries.get_experiment(db, experiment_id)  # 404 when there is none
    column = Experiment.context_archive
    size = db.scalar(sa.select(sa.func.length(column)).where(Experiment.id == experiment_id))
    if not size:
        empty = base64.b64encode(context_archive.empty_archive()).decode("ascii")
        return JSONResponse(ModelDefResponse(b64_tgz=empty).model_dump(by_alias=True))
    maker = get_state(request).sessionmaker
    head, tail = b'{"b64Tgz":"', b'"}'

    def piece(offset: int) -> bytes:
        with maker() as session:
            query = sa.select(sa.func.substr(column, offset + 1, CONTEXT_CHUNK))
            data = session.scalar(query.where(Experiment.id == experiment_id))
        if not data or len(data) != min(CONTEXT_CHUNK, size - offset):
            raise RuntimeError(f"experiment {experiment_id}'s context changed while it was sent")
        return base64.b64encode(data)

    async def pieces() -> AsyncIterator[bytes]:
        yield head
        for offset in range(0, size, CONTEXT_CHUNK):
            yield await anyio.to_thread.run_sync(piece, offset)
        yield tail

    length = len(head) + 4 * ((size + 2) // 3) + len(tail)
    headers = {"Content-Length": str(length)}
    return StreamingResponse(pieces(), media_type="application/json", headers=headers)


@router.patch("/{experiment_id}")
def patch_experiment(
    experiment_id: ExperimentId, db: DbSession, user: CurrentUser, body: PatchExperimentRequest
) -> ExperimentResponse:
    row = queries.get_experiment(db, experiment_id)
    queries.require_owner(user, row, "change")
    queries.patch_experiment(
        db,
        row,
        description=body.description if body.description is not None else body.name,
        labels=body.labels,
        notes=body.notes,
    )
    db.commit()
    return _response(db, row)


def collect_if_ended(request: Request, db: DbSession, experiment_id: int) -> None:
    """Apply the checkpoint GC policy to an experiment that has just ended.

    The state change is committed already; a storage failure here is logged, and the next
    collection finishes what this one could not (see ``detlite.master.gc``)."""
    row = queries.get_experiment(db, experiment_id)
    if not row.state.terminal:
        return
    try:
        locations = get_state(request).settings.storage_locations
        gc.collect_experiment(db, row.id, locations=locations)
    except DetliteError as exc:
        logger.warning("checkpoint GC of experiment %d failed: %s", row.id, exc)


def _transition(
    request: Request,
    db: DbSession,
    user: CurrentUser,
    experiment_id: int,
    target: ExperimentState,
    action: str,
) -> ExperimentResponse:
    row = queries.get_experiment(db, experiment_id)
    queries.require_owner(user, row, action)
    if queries.set_experiment_state(db, row, target):
        db.commit()
        collect_if_ended(request, db, experiment_id)
    return _response(db, row)


@router.post("/{experiment_id}/activate")
def activate_experiment(
    request: Request, experiment_id: ExperimentId, db: DbSession, user: CurrentUser
) -> ExperimentResponse:
    return _transition(request, db, user, experiment_id, ExperimentState.ACTIVE, "activate")


@router.post("/{experiment_id}/pause")
def pause_experiment(
    request: Request, experiment_id: ExperimentId, db: DbSession, user: CurrentUser
) -> ExperimentResponse:
    return _transition(request, db, user, experiment_id, ExperimentState.PAUSED, "pause")


@router.post("/{experiment_id}/cancel")
def cancel_experiment(
    request: Request, experiment_id: ExperimentId, db: DbSession, user: CurrentUser
) -> ExperimentResponse:
    return _transition(
        request, db, user, experiment_id, ExperimentState.STOPPING_CANCELED, "cancel"
    )


@router.post("/{experiment_id}/kill")
def kill_experiment(
    request: Request, experiment_id: ExperimentId, db: DbSession, user: CurrentUser
) -> ExperimentResponse:
    return _transition(request, db, user, experiment_id, ExperimentState.STOPPING_KILLED, "kill")


def _archive(
    db: DbSession, user: CurrentUser, experiment_id: int, archived: bool
) -> ExperimentResponse:
    row = queries.get_experiment(db, experiment_id)
    queries.require_owner(user, row, "archive" if archived else "unarchive")
    queries.archive_experiment(db, row, archived)
    db.commit()
    return _response(db, row)


@router.post("/{experiment_id}/archive")
def archive_experiment(
    experiment_id: ExperimentId, db: DbSession, user: CurrentUser
) -> ExperimentResponse:
    return _archive(db, user, experiment_id, True)


@router.post("/{experiment_id}/unarchive")
def unarchive_experiment(
    experiment_id: ExperimentId, db: DbSession, user: CurrentUser
) -> ExperimentResponse:
    return _archive(db, user, experiment_id, False)


@router.delete("/{experiment_id}")
def delete_experiment(
    request: Request, experiment_id: ExperimentId, db: DbSession, user: CurrentUser
) -> dict[str, Any]:
    """Delete an ended experiment with its trials, metrics, logs, checkpoint rows and files.

    The files go first, each checkpoint marked DELETED as its files go: a failure part-way
    leaves the experiment with some checkpoints DELETED, and deleting again finishes. A
    storage failure, or storage outside the locations this master allows now, answers 503
    with the reason and deletes no row: a retry (once storage is back) finishes the job."""
    row = queries.get_experiment(db, experiment_id)
    queries.require_owner(user, row, "delete")
    queries.ensure_deletable(db, row)
    locations = get_state(request).settings.storage_locations
    try:
        gc.delete_experiment_checkpoints(db, row.id, locations=locations)
    except (CheckpointError, StorageNotAllowed) as exc:
        db.rollback()
        raise APIError(
            f"experiment {experiment_id} was not deleted, its checkpoint storage cannot be "
            f"cleaned up: {exc} (the checkpoints are kept; delete again once it is fixed)",
            status=503,
        ) from None
    queries.delete_experiment(db, queries.get_experiment(db, experiment_id))
    db.commit()
    return {}
