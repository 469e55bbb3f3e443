"""Model registry bodies (Determined's modelv1 messages, plus labels, notes and deletion).

Decisions:

- A model's name comes from the path (``POST /api/v1/models/{name}``), as in the reference;
  a body that also names it must name the same model. Names are 1 to 255 characters with
  no ``/`` (they are path segments) and no leading or trailing whitespace.
- ``metadata`` is a JSON object; ``null`` means ``{}`` when creating and "leave it" when
  patching. Labels are de-duplicated in their given order; each is 1 to 255 characters.
- Patches replace each field they give, wholesale (the reference's client merged metadata
  locally and sent the whole object), and leave the others alone.
- ``ModelSortBy`` and ``VersionSortBy`` are the proto numbers of ``GetModelsRequest.SortBy``
  and ``GetModelVersionsRequest.SortBy``; ``UNSPECIFIED`` means last-updated time for models
  and version number for versions.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Annotated, Any

from pydantic import AfterValidator, Field, StringConstraints

from detlite.master.schemas.base import WireModel
from detlite.master.schemas.checkpoints import Checkpoint
from detlite.master.schemas.common import Pagination

__all__ = [
    "DeleteModelResponse",
    "DeleteModelVersionResponse",
    "GetModelResponse",
    "GetModelVersionResponse",
    "GetModelVersionsResponse",
    "GetModelsResponse",
    "Label",
    "Labels",
    "Model",
    "ModelPatch",
    "ModelSortBy",
    "ModelVersion",
    "ModelVersionPatch",
    "PatchModelRequest",
    "PatchModelVersionRequest",
    "PostModelRequest",
    "PostModelVersionRequest",
    "VersionSortBy",
    "check_model_name",
    "check_text",
]

MAX_NAME = 255


def check_model_name(name: str) -> str:
    """``name`` if it can name a model; ValueError saying why not otherwise."""
    if not name or not name.strip():
        raise ValueError("a model name must not be empty")
    if len(name) > MAX_NAME:
        raise ValueError(f"a model name has at most {MAX_NAME} characters (got {len(name)})")
    if "/" in name:
        raise ValueError(f"a model name must not contain '/' (got {name!r})")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise ValueError(f"a model name must not contain control characters (got {name!r})")
    if name != name.strip():
        raise ValueError(f"a model name must not start or end with whitespace (got {name!r})")
    return name


def check_text(text: str) -> str:
    """``text`` unless it holds a NUL character (PostgreSQL's text cannot store one)."""
    if "\x00" in text:
        raise ValueError("text must not contain NUL characters")
    return text


def _unique(labels: list[str]) -> list[str]:
    return list(dict.fromkeys(labels))


Text = Annotated[str, AfterValidator(check_text)]
ShortText = Annotated[Text, StringConstraints(max_length=MAX_NAME)]
Label = Annotated[Text, StringConstraints(min_length=1, max_length=MAX_NAME)]
Labels = Annotated[list[Label], AfterValidator(_unique)]
ModelName = Annotated[str, AfterValidator(check_model_name)]


class ModelSortBy(enum.IntEnum):
    UNSPECIFIED = 0
    NAME = 1
    DESCRIPTION = 2
    CREATION_TIME = 4
    LAST_UPDATED_TIME = 5


class VersionSortBy(enum.IntEnum):
    UNSPECIFIED = 0
    VERSION = 3
    CREATION_TIME = 4


class Model(WireModel):
    name: str
    description: str
    metadata: dict[str, Any]
    labels: list[str]
    notes: str
    creation_time: dt.datetime
    last_updated_time: dt.datetime
    id: int
    # The owner's name; None once the owner's user row is gone.
    username: str | None
    num_versions: int


class ModelVersion(WireModel):
    model: Model
    checkpoint: Checkpoint
    version: int
    creation_time: dt.datetime
    last_updated_time: dt.datetime
    name: str
    comment: str
    notes: str
    labels: list[str]
    metadata: dict[str, Any]
    id: int


class PostModelRequest(WireModel):
    name: ModelName | None = Field(default=None, description="must equal the path's name")
    description: Text = ""
    metadata: dict[str, Any] | None = None
    labels: Labels | None = None
    notes: Text = ""


class ModelPatch(WireModel):
    """The fields to replace; those absent (or null) are left as they are."""

    description: Text | None = None
    metadata: dict[str, Any] | None = None
    labels: Labels | None = None
    notes: Text | None = None


class PatchModelRequest(WireModel):
    model: ModelPatch


class GetModelResponse(WireModel):
    model: Model


class GetModelsResponse(WireModel):
    models: list[Model]
    pagination: Pagination


class DeleteModelResponse(WireModel):
    pass


class PostModelVersionRequest(WireModel):
    """``checkpointUuid`` (or the reference client's ``checkpoint_uuid``) and optional fields."""

    checkpoint_uuid: Annotated[Text, StringConstraints(min_length=1, max_length=64)]
    name: ShortText = ""
    comment: Text = ""
    labels: Labels | None = None
    notes: Text = ""
    metadata: dict[str, Any] | None = None


class ModelVersionPatch(WireModel):
    """The fields to replace; those absent (or null) are left as they are."""

    name: ShortText | None = None
    comment: Text | None = None
    notes: Text | None = None
    labels: Labels | None = None
    metadata: dict[str, Any] | None = None


class PatchModelVersionRequest(WireModel):
    model_version: ModelVersionPatch


class GetModelVersionResponse(WireModel):
    model_version: ModelVersion


class GetModelVersionsResponse(WireModel):
    model: Model
    model_versions: list[ModelVersion]
    pagination: Pagination


class DeleteModelVersionResponse(WireModel):
    pass
