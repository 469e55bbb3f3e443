"""Model registry bodies (Determined's modelv1 messages, plus labels, notes and deletion).

Decisions:

- A model's name comes from the path (``POST /api/v1/models/{name}``), as in the reference;
  a body that also names it must name the same model. Names are 1 to 255 characters with
  no ``/`` (they are path segments) and no leading or trailing whitespace.
- ``metadata`` is a JSON object of at most ``_values.MAX_METADATA_BYTES``; ``null`` means ``{}``
  when creating and "leave it" when patching. Labels are de-duplicated in their given
  order; each is 1 to 255 characters.
- Every value keeps the rules of ``schemas._values`` (no NUL or lone surrogate, finite
  numbers, JSON at most 32 deep). Creating and patching share the length caps: descriptions
  and comments of at most ``MAX_DESCRIPTION`` characters, notes of at most ``MAX_NOTES``,
  version names of at most 255.
- Patches replace each field they give, wholesale (the reference's client merged metadata
  locally and sent the whole object), and leave the others alone.
- ``ModelSortBy`` and ``VersionSortBy`` are the proto numbers of ``GetModelsRequest.SortBy``
  and ``GetModelVersionsRequest.SortBy``; ``UNSPECIFIED`` means last-updated time for models
  and version number for versions.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Annotated

from pydantic import AfterValidator, Field, StringConstraints

from detlite.config.experiment import MAX_DESCRIPTION, MAX_LABELS
from detlite.master.schemas._values import (
    Metadata,
    RequestModel,
    StoredJSON,
    StoredText,
    check_text,
)
from detlite.master.schemas.base import WireModel
from detlite.master.schemas.checkpoints import Checkpoint
from detlite.master.schemas.common import Pagination
from detlite.master.schemas.experiments import MAX_NOTES

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


def _unique(labels: list[str]) -> list[str]:
    return list(dict.fromkeys(labels))


Text = Annotated[str, AfterValidator(check_text)]
ShortText = Annotated[Text, StringConstraints(max_length=MAX_NAME)]
Description = Annotated[Text, StringConstraints(max_length=MAX_DESCRIPTION)]
Notes = Annotated[Text, StringConstraints(max_length=MAX_NOTES)]
Label = Annotated[Text, StringConstraints(min_length=1, max_length=MAX_NAME)]
Labels = Annotated[list[Label], Field(max_length=MAX_LABELS), AfterValidator(_unique)]
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
    name: StoredText
    description: StoredText
    metadata: StoredJSON
    labels: list[StoredText]
    notes: StoredText
    creation_time: dt.datetime
    last_updated_time: dt.datetime
    id: int
    # The owner's name; None once the owner's user row is gone.
    username: StoredText | None
    num_versions: int


class ModelVersion(WireModel):
    model: Model
    checkpoint: Checkpoint
    version: int
    creation_time: dt.datetime
    last_updated_time: dt.datetime
    name: StoredText
    comment: StoredText
    notes: StoredText
    labels: list[StoredText]
    metadata: StoredJSON
    id: int


class PostModelRequest(RequestModel):
    name: ModelName | None = Field(default=None, description="must equal the path's name")
    description: Description = ""
    metadata: Metadata | None = None
    labels: Labels | None = None
    notes: Notes = ""


class ModelPatch(RequestModel):
    """The fields to replace; those absent (or null) are left as they are."""

    description: Description | None = None
    metadata: Metadata | None = None
    labels: Labels | None = None
    notes: Notes | None = None


class PatchModelRequest(RequestModel):
    model: ModelPatch


class GetModelResponse(WireModel):
    model: Model


class GetModelsResponse(WireModel):
    models: list[Model]
    pagination: Pagination


class DeleteModelResponse(WireModel):
    pass


class PostModelVersionRequest(RequestModel):
    """``checkpointUuid`` (or the reference client's ``checkpoint_uuid``) and optional fields."""

    checkpoint_uuid: Annotated[Text, StringConstraints(min_length=1, max_length=64)]
    name: ShortText = ""
    comment: Description = ""
    labels: Labels | None = None
    notes: Notes = ""
    metadata: Metadata | None = None


class ModelVersionPatch(RequestModel):
    """The fields to replace; those absent (or null) are left as they are."""

    name: ShortText | None = None
    comment: Description | None = None
    notes: Notes | None = None
    labels: Labels | None = None
    metadata: Metadata | None = None


class PatchModelVersionRequest(RequestModel):
    model_version: ModelVersionPatch


class GetModelVersionResponse(WireModel):
    model_version: ModelVersion


class GetModelVersionsResponse(WireModel):
    model: Model
    model_versions: list[ModelVersion]
    pagination: Pagination


class DeleteModelVersionResponse(WireModel):
    pass
