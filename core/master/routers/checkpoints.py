"""Checkpoints: read, list per experiment or trial, edit metadata, worker reports, files.

Routes (Determined's v1 paths, plus the worker's reports and file access):

- ``GET  /api/v1/checkpoints/{uuid}``: ``{"checkpoint": Checkpoint}``.
- ``POST /api/v1/checkpoints/{uuid}/metadata``: body ``{"checkpoint": {"metadata": {...}}}``
  replaces the metadata (the experiment's owner or an admin).
- ``GET  /api/v1/experiments/{id}/checkpoints`` and ``GET /api/v1/trials/{id}/checkpoints``:
  ``sort_by``, ``order_by``, ``offset``, ``limit`` (0 = all), repeated ``states`` and
  ``validation_states``; enums by number or name (``SORT_BY_`` / ``ORDER_BY_`` / ``STATE_``
  prefixes optional); an unknown value is a 400 listing what is accepted.
- ``POST /api/v1/checkpoints`` and ``PATCH /api/v1/checkpoints/{uuid}``: a trial worker
  recording a checkpoint and finishing it (``queries.checkpoints`` has the rules).
- ``GET  /api/v1/checkpoints/{uuid}/files/{path}``: one file of a COMPLETED checkpoint,
  streamed from the experiment's checkpoint storage (API.md improvement 11: a client without
  the shared filesystem downloads through the master). Only paths in the checkpoint's
  recorded ``files`` are served, which also rules out ``..`` and absolute paths; the client
  verifies the bytes against the recorded sha256. The storage must be among the locations
  the master allows now (503 otherwise, nothing opened or contacted); a shared_fs file is
  opened through ``detlite.storage._paths`` (a link anywhere below the allowed root is
  refused, 503), an s3 one by its checked key. The request's database session is closed
  before storage is touched, and its admission slot is given back once the answer starts
  (``detlite.master._limits``): a client that reads slowly, or stops reading, holds neither.

Checkpoint uuids are UUIDs in canonical form (lower-case 8-4-4-4-12). On every route that
takes one in its path, another spelling is answered before anything is read or written:
404 on a GET (no such checkpoint can exist), 400 on a POST or PATCH.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, BinaryIO

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from detlite.api.enums import CheckpointState
from detlite.errors import APIError, Conflict, DetliteError, NotFound
from detlite.interfaces import StorageBackend
from detlite.master import gc
from detlite.master._bodies import BodyOffLoopRoute
from detlite.master.deps import CurrentUser, DbSession, get_state
from detlite.master.orm import Experiment, Trial
from detlite.master.queries import checkpoints as queries
from detlite.master.queries.checkpoints import CheckpointSortBy, TrialCheckpointSortBy
from detlite.master.routers.experiments import ExperimentId
from detlite.master.routers.trials import TrialId
from detlite.master.schemas._values import MAX_QUERY_ITEMS, Limit, Offset
from detlite.master.schemas.checkpoints import (
    CheckpointResponse,
    GetCheckpointsResponse,
    PatchCheckpointRequest,
    PostCheckpointMetadataRequest,
    ReportCheckpointRequest,
)
from detlite.master.schemas.common import OrderBy, parse_enum
from detlite.storage import S3Storage, SharedFSStorage, StorageError
from detlite.storage._files import CHUNK_SIZE, check_relpath
from detlite.storage._paths import check_uuid

__all__ = ["router"]

router = APIRouter(route_class=BodyOffLoopRoute, tags=["checkpoints"])

_StateList = Annotated[list[str], Query(max_length=MAX_QUERY_ITEMS)]


def _parse_states(values: list[str], field: str) -> list[CheckpointState]:
    try:
        return [CheckpointState.parse(v) for v in values]
    except ValueError as exc:
        raise APIError(f"{field}: {exc}", status=400) from None


def _parse_sort(
    cls: type[CheckpointSortBy] | type[TrialCheckpointSortBy], value: str | None
) -> Any:
    if value is None or value == "":
        return cls.UNSPECIFIED
    try:
        return parse_enum(cls, value, prefix="SORT_BY_")
    except ValueError as exc:
        raise APIError(f"sort_by: {exc}", status=400) from None


def _parse_order(value: str | None) -> OrderBy:
    if value is None or value == "":
        return OrderBy.ASC
    try:
        order = parse_enum(OrderBy, value, prefix="ORDER_BY_")
    except ValueError as exc:
        raise APIError(f"order_by: {exc}", status=400) from None
    return OrderBy.ASC if order == OrderBy.UNSPECIFIED else order


def _checked_uuid(uuid: str, *, reading: bool) -> str:
    try:
        return check_uuid(uuid)
    except ValueError as exc:
        if reading:
            raise NotFound(f"checkpoint not found: {exc}") from None
        raise APIError(f"uuid: {exc}", status=400) from None


@router.get("/api/v1/checkpoints/{uuid}")
def get_checkpoint(uuid: str, db: DbSession) -> CheckpointResponse:
    row = queries.get_checkpoint(db, _checked_uuid(uuid, reading=True))
    return CheckpointResponse(checkpoint=queries.checkpoint_wire(db, row))


@router.post("/api/v1/checkpoints/{uuid}/metadata")
def post_checkpoint_metadata(
    uuid: str, db: DbSession, user: CurrentUser, body: PostCheckpointMetadataRequest
) -> CheckpointResponse:
    """Replace the checkpoint's metadata (the experiment's owner or an admin)."""
    row = queries.get_checkpoint(db, _checked_uuid(uuid, reading=False))
    experiment = db.get(Experiment, row.experiment_id)
    assert experiment is not None
    queries.require_owner(user, experiment, f"change the metadata of checkpoint {uuid!r}")
    queries.set_metadata(db, row, body.checkpoint.metadata)
    db.commit()
    return CheckpointResponse(checkpoint=queries.checkpoint_wire(db, row))


@router.get("/api/v1/experiments/{experiment_id}/checkpoints")
def get_experiment_checkpoints(
    experiment_id: ExperimentId,
    db: DbSession,
    sort_by: str | None = None,
    order_by: str | None = None,
    offset: Offset = 0,
    limit: Limit = 0,
    states: _StateList = [],  # noqa: B006 - FastAPI copies query defaults
    validation_states: _StateList = [],  # noqa: B006
) -> GetCheckpointsResponse:
    if db.get(Experiment, experiment_id) is None:
        raise NotFound(f"experiment {experiment_id} not found")
    sort = _parse_sort(CheckpointSortBy, sort_by)
    if sort == CheckpointSortBy.UNSPECIFIED:
        sort = CheckpointSortBy.TRIAL_ID
    scope = {"experiment_id": experiment_id}
    return _listing(db, scope, sort, order_by, offset, limit, states, validation_states)


@router.get("/api/v1/trials/{trial_id}/checkpoints")
def get_trial_checkpoints(
    trial_id: TrialId,
    db: DbSession,
    sort_by: str | None = None,
    order_by: str | None = None,
    offset: Offset = 0,
    limit: Limit = 0,
    states: _StateList = [],  # noqa: B006 - FastAPI copies query defaults
    validation_states: _StateList = [],  # noqa: B006
) -> GetCheckpointsResponse:
    if db.get(Trial, trial_id) is None:
        raise NotFound(f"trial {trial_id} not found")
    sort = _parse_sort(TrialCheckpointSortBy, sort_by)
    if sort == TrialCheckpointSortBy.UNSPECIFIED:
        sort = TrialCheckpointSortBy.BATCH_NUMBER
    scope = {"trial_id": trial_id}
    return _listing(db, scope, sort, order_by, offset, limit, states, validation_states)


def _listing(
    db: DbSession,
    scope: dict[str, int],
    sort: CheckpointSortBy | TrialCheckpointSortBy,
    order_by: str | None,
    offset: int,
    limit: int,
    states: list[str],
    validation_states: list[str],
) -> GetCheckpointsResponse:
    """One page of an experiment's or a trial's checkpoints (``scope`` says whose)."""
    rows, pagination = queries.list_checkpoints(
        db,
        **scope,
        sort_by=sort,
        order_by=_parse_order(order_by),
        offset=offset,
        limit=limit,
        states=_parse_states(states, "states"),
        validation_states=_parse_states(validation_states, "validation_states"),
    )
    return GetCheckpointsResponse(
        checkpoints=queries.checkpoints_wire(db, rows), pagination=pagination
    )


@router.post("/api/v1/checkpoints")
def post_checkpoint(
    db: DbSession, user: CurrentUser, body: ReportCheckpointRequest
) -> CheckpointResponse:
    """Record a checkpoint a trial worker saved (the experiment's owner or an admin)."""
    row = queries.record_checkpoint(db, user, body)
    db.commit()
    return CheckpointResponse(checkpoint=queries.checkpoint_wire(db, row))


@router.patch("/api/v1/checkpoints/{uuid}")
def patch_checkpoint(
    uuid: str, db: DbSession, user: CurrentUser, body: PatchCheckpointRequest
) -> CheckpointResponse:
    """Finish an ACTIVE checkpoint: COMPLETED (with its files) or ERROR."""
    row = queries.get_checkpoint(db, _checked_uuid(uuid, reading=False))
    queries.finish_checkpoint(db, user, row, body)
    db.commit()
    return CheckpointResponse(checkpoint=queries.checkpoint_wire(db, row))


# -- files -----------------------------------------------------------------------------------


def _chunks(fh: BinaryIO, cleanup: Path | None = None) -> Iterator[bytes]:
    try:
        while chunk := fh.read(CHUNK_SIZE):
            yield chunk
    finally:
        fh.close()
        if cleanup is not None:
            shutil.rmtree(cleanup, ignore_errors=True)


def _missing(uuid: str, path: str, where: str) -> NotFound:
    return NotFound(
        f"checkpoint {uuid!r} records the file {path!r} but it is missing from {where}; "
        "the checkpoint is corrupt"
    )


def _open_stored(storage: StorageBackend, uuid: str, path: str) -> Iterator[bytes]:
    """An iterator over the stored bytes of ``path``, opened now (so errors come now)."""
    if isinstance(storage, SharedFSStorage):
        try:
            fh: BinaryIO = storage.open(uuid, path)
        except (FileNotFoundError, NotADirectoryError):
            raise _missing(uuid, path, str(storage.path_for(uuid))) from None
        except OSError as exc:
            raise StorageError(f"cannot read {storage.path_for(uuid)}/{path}: {exc}") from None
        return _chunks(fh)
    if isinstance(storage, S3Storage):
        key = storage.key_for(uuid, path)
        try:
            body = storage.client.get_object(Bucket=storage.bucket, Key=key)["Body"]
        except Exception as exc:
            code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
            if code in ("NoSuchKey", "404"):
                raise _missing(uuid, path, f"s3://{storage.bucket}/{key}") from None
            raise APIError(
                f"the master cannot read checkpoint storage s3://{storage.bucket}: {exc}",
                status=503,
            ) from None
        return _chunks(body)
    # Any other backend: fetch the whole checkpoint to a scratch directory and serve from it.
    scratch = Path(tempfile.mkdtemp(prefix="detlite-ckpt-"))
    try:
        storage.download(uuid, scratch / "ckpt")
        local = scratch / "ckpt" / Path(*path.split("/"))
        fh = open(local, "rb")  # noqa: SIM115 - closed by _chunks
    except FileNotFoundError:
        shutil.rmtree(scratch, ignore_errors=True)
        raise _missing(uuid, path, repr(storage)) from None
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return _chunks(fh, cleanup=scratch)


@router.get("/api/v1/checkpoints/{uuid}/files/{path:path}")
def get_checkpoint_file(uuid: str, path: str, db: DbSession, request: Request) -> StreamingResponse:
    """Stream one recorded file of a COMPLETED checkpoint from checkpoint storage."""
    row = queries.get_checkpoint(db, _checked_uuid(uuid, reading=True))
    if row.state != CheckpointState.COMPLETED:
        raise Conflict(
            f"checkpoint {uuid!r} is {row.state.value}: only a COMPLETED checkpoint's files "
            "can be read"
        )
    record = (row.files or {}).get(path)
    if record is None:
        raise NotFound(f"checkpoint {uuid!r} has no file {path!r}")
    experiment = db.get(Experiment, row.experiment_id)
    assert experiment is not None
    config = experiment.config
    # All the database has to say is read: give its connection back before storage is
    # touched (another backend downloads the whole checkpoint first) and long before the
    # client has read the file (the session's own scope ends when this returns, too).
    db.close()
    locations = get_state(request).settings.storage_locations
    try:
        check_relpath(path, f"checkpoint {uuid!r}")
        storage = gc.storage_for(config, locations)
        chunks = _open_stored(storage, uuid, path)
    except APIError:
        raise
    except DetliteError as exc:
        # Storage the master cannot use (unreachable, missing library) is not a client error.
        raise APIError(f"the master cannot read checkpoint storage: {exc}", status=503) from None
    headers = {"X-Detlite-Sha256": str(record.get("sha256", ""))}
    return StreamingResponse(chunks, media_type="application/octet-stream", headers=headers)
