"""Experiment bodies (Determined's experimentv1 messages and their v1 API requests).

``CreateExperimentRequest`` takes the config as YAML text or as a JSON object, and the
context either as Determined 0.15's ``modelDefinition`` file list or as ``contextArchive``
(a base64 ``.tar.gz``), not both; with neither the experiment has an empty context.
``PatchExperimentRequest`` accepts Determined's shape (the patched fields at the top level)
and the wrapped ``{"experiment": {...}}`` alike. Its caps are the config's: a description of
at most ``MAX_DESCRIPTION`` characters and at most ``MAX_LABELS`` labels of 1 to ``MAX_LABEL``
(``detlite.config``),
so an experiment's fields have the same bounds however they were set; notes have at most
``MAX_NOTES``.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from pydantic import Field, StringConstraints, model_validator

from detlite.api.enums import ExperimentState
from detlite.config.experiment import MAX_DESCRIPTION, MAX_LABEL, MAX_LABELS
from detlite.master.schemas._values import RequestModel, StoredJSON, StoredText
from detlite.master.schemas.base import WireModel
from detlite.master.schemas.common import Pagination

__all__ = [
    "MAX_NOTES",
    "ContextFile",
    "CreateExperimentRequest",
    "CreateExperimentResponse",
    "Experiment",
    "ExperimentResponse",
    "GetExperimentsResponse",
    "Label",
    "ModelDefResponse",
    "PatchExperimentRequest",
]

MAX_NOTES = 1_000_000

Label = Annotated[str, StringConstraints(min_length=1, max_length=MAX_LABEL)]
Description = Annotated[str, StringConstraints(max_length=MAX_DESCRIPTION)]


class ContextFile(RequestModel):
    """One entry of ``modelDefinition`` (Determined's utilv1.File).

    ``type`` is the tar type flag as Determined's client sent it (48 for a file, 53 for a
    directory) or ``"file"`` / ``"dir"``; ``content`` is base64 (files only).
    """

    path: str
    type: int | str = "file"
    content: str = ""
    # st_mode as a client's stat gave it (type bits included; only the permissions are kept).
    mode: Annotated[int, Field(ge=0, le=0o177777)] | None = None
    mtime: int | None = None
    uid: int | None = None
    gid: int | None = None


class CreateExperimentRequest(RequestModel):
    config: str | dict[str, Any]
    model_definition: list[ContextFile] | None = None
    context_archive: str | None = Field(
        default=None, description="the context as a base64-encoded .tar.gz"
    )
    validate_only: bool = False
    activate: bool = True
    archived: bool = False


class Experiment(WireModel):
    """experimentv1.Experiment. ``name`` repeats ``description``: configs of this era have
    no name, and Determined's later ``name`` took the description's place."""

    id: int
    description: StoredText
    name: StoredText
    labels: list[StoredText]
    notes: StoredText
    state: ExperimentState
    archived: bool
    start_time: dt.datetime
    end_time: dt.datetime | None
    num_trials: int
    trial_ids: list[int]
    user_id: int
    username: StoredText
    searcher_type: StoredText
    resource_pool: StoredText
    progress: float | None


class ExperimentResponse(WireModel):
    experiment: Experiment
    config: StoredJSON


class CreateExperimentResponse(WireModel):
    """``experiment`` is null for ``validateOnly`` (nothing was stored)."""

    experiment: Experiment | None
    config: StoredJSON


class GetExperimentsResponse(WireModel):
    experiments: list[Experiment]
    pagination: Pagination


class ModelDefResponse(WireModel):
    b64_tgz: str


class PatchExperimentRequest(RequestModel):
    """Fields left out are unchanged. ``name`` is another spelling of ``description``."""

    description: Description | None = None
    name: Description | None = None
    labels: Annotated[list[Label], Field(max_length=MAX_LABELS)] | None = None
    notes: Annotated[str, StringConstraints(max_length=MAX_NOTES)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _unwrap(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("experiment"), dict):
            return data["experiment"]
        return data

    @model_validator(mode="after")
    def _one_description(self) -> PatchExperimentRequest:
        if self.name is not None and self.description is not None and self.name != self.description:
            raise ValueError("name and description are the same field here; give one of them")
        return self
