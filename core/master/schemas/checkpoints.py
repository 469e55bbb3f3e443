"""Checkpoint bodies: Determined's ``checkpointv1.Checkpoint`` plus detlite's file records.

The response shape is the v1 one (section 6.2 of the spec): ``uuid``, ``experimentConfig``,
``experimentId``, ``trialId``, ``hparams``, ``batchNumber``, ``startTime``, ``endTime``,
``resources`` (``{path: "bytes"}``, sizes as strings because gRPC-gateway wrote int64 map
values that way), ``metadata``, ``framework``, ``format``, ``determinedVersion`` (detlite's
version: old clients read that key), ``metrics`` (``{"numInputs", "validationMetrics"}`` or
null), ``validationState``, ``state`` and ``searcherMetric``. Every field is always present
(gRPC-gateway's EmitDefaults): a checkpoint with no validation has ``metrics: null`` and
``validationState: "STATE_UNSPECIFIED"``.

detlite adds ``files`` (``{path: {"size": int, "sha256": hex}}``, what ``download`` verifies;
API.md improvement 10) and ``storageId`` (where the files were written, as reported).

The request bodies are those of the metadata edit (``{"checkpoint": {"metadata": {...}}}``)
and of the trial worker's reports (``POST /api/v1/checkpoints`` and ``PATCH`` of one).
States in requests are parsed like query enums: ``"STATE_COMPLETED"``, ``"COMPLETED"`` or 2.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from pydantic import Field, NonNegativeInt, StringConstraints, field_validator

from detlite.api.enums import CheckpointState
from detlite.master.schemas._values import (
    MAX_SAFE_INTEGER,
    Count,
    DbId,
    Metadata,
    RequestModel,
    StoredJSON,
    StoredText,
)
from detlite.master.schemas.base import WireModel
from detlite.master.schemas.common import Pagination

__all__ = [
    "Checkpoint",
    "CheckpointMetadataBody",
    "CheckpointMetrics",
    "CheckpointResponse",
    "CheckpointUUID",
    "FileEntry",
    "GetCheckpointsResponse",
    "PatchCheckpointRequest",
    "PostCheckpointMetadataRequest",
    "ReportCheckpointRequest",
    "ReportedFile",
]

#: A checkpoint uuid: one path component (it names a directory and a key prefix in storage).
CheckpointUUID = Annotated[
    str, StringConstraints(min_length=1, max_length=36, pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
]
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class FileEntry(WireModel):
    """One stored file of a checkpoint: its size in bytes and the sha256 of its bytes."""

    size: NonNegativeInt
    sha256: Sha256


class ReportedFile(FileEntry, RequestModel):
    """A file as a worker reports it: a size JSON readers hold exactly."""

    size: Annotated[NonNegativeInt, Field(le=MAX_SAFE_INTEGER)]


class CheckpointMetrics(WireModel):
    """The validation at the checkpoint's batch: ``{"numInputs", "validationMetrics"}``."""

    num_inputs: int | None = None
    validation_metrics: StoredJSON = Field(default_factory=dict)


class Checkpoint(WireModel):
    """A checkpoint as ``GET /api/v1/checkpoints/{uuid}`` answers it."""

    uuid: StoredText
    experiment_config: StoredJSON
    experiment_id: int
    trial_id: int
    hparams: StoredJSON
    batch_number: int
    start_time: dt.datetime
    end_time: dt.datetime | None = None
    resources: dict[StoredText, str] = Field(default_factory=dict)
    metadata: StoredJSON = Field(default_factory=dict)
    framework: StoredText = ""
    format: StoredText = ""
    determined_version: StoredText = ""
    metrics: CheckpointMetrics | None = None
    validation_state: CheckpointState = CheckpointState.UNSPECIFIED
    state: CheckpointState
    searcher_metric: float | None = None
    files: dict[StoredText, FileEntry] = Field(default_factory=dict)
    storage_id: StoredText | None = None


class CheckpointResponse(WireModel):
    checkpoint: Checkpoint


class GetCheckpointsResponse(WireModel):
    checkpoints: list[Checkpoint]
    pagination: Pagination


class CheckpointMetadataBody(RequestModel):
    """The part of a Checkpoint the metadata edit reads; other keys are ignored."""

    metadata: Metadata


class PostCheckpointMetadataRequest(RequestModel):
    """``{"checkpoint": {"metadata": {...}}}``: the full new metadata (it replaces the old)."""

    checkpoint: CheckpointMetadataBody


def _state(value: Any) -> Any:
    if isinstance(value, CheckpointState):
        return value
    if isinstance(value, str | int) and not isinstance(value, bool):
        return CheckpointState.parse(value)
    return value


class ReportCheckpointRequest(RequestModel):
    """A trial worker recording a checkpoint it has started (ACTIVE) or finished (COMPLETED)."""

    uuid: CheckpointUUID
    trial_id: DbId
    batch_number: Count
    state: CheckpointState = CheckpointState.COMPLETED
    files: dict[str, ReportedFile] = Field(default_factory=dict)
    metadata: Metadata = Field(default_factory=dict)
    framework: Annotated[str, StringConstraints(max_length=64)] = ""
    format: Annotated[str, StringConstraints(max_length=64)] = ""
    detlite_version: Annotated[str, StringConstraints(max_length=64)] = ""
    storage_id: Annotated[str, StringConstraints(max_length=1024)] | None = None

    _parse_state = field_validator("state", mode="before")(_state)


class PatchCheckpointRequest(RequestModel):
    """Finish a reported checkpoint: ACTIVE to COMPLETED (with its files) or to ERROR."""

    state: CheckpointState
    files: dict[str, ReportedFile] | None = None
    framework: Annotated[str, StringConstraints(max_length=64)] | None = None
    format: Annotated[str, StringConstraints(max_length=64)] | None = None
    detlite_version: Annotated[str, StringConstraints(max_length=64)] | None = None

    _parse_state = field_validator("state", mode="before")(_state)
