"""The model registry client: ``Model``, ``ModelVersion``, ``ModelSortBy``, ``ModelOrderBy``.

``Model`` follows Determined's (section 1.8 of the spec): a named model whose versions are
checkpoints, numbered 1, 2, ... by the master. Decisions:

- ``master`` is a ``detlite.api.Session`` (what ``Determined`` passes), a master URL (a
  session is logged in on first use, as ``Determined(master)`` would) or None (a local
  object: any call that needs the master raises ValueError saying so).
- ``get_version(0)`` is the latest version; it and every other returned ``Checkpoint`` is
  bound to the session, so its metadata edits are saved (API.md improvement 5), and carries
  ``model_name`` and ``model_version``. No versions yet: None.
- ``add_metadata``/``remove_metadata`` merge or drop top-level keys locally and send the whole
  object, as the reference did; the master replaces it. Every change updates this object
  from the master's answer (``last_updated_time`` included).
- Improvement 14: ``labels`` and ``notes`` (``set_labels``, ``set_notes``), ``delete()`` and
  ``delete_version(n)``, and ``ModelVersion`` (``get_model_version``, ``get_model_versions``)
  with a version's own name, comment, labels, notes and metadata, editable the same way.
- Names are quoted into the path, so any name the master accepts works (no ``/``).
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from detlite.experimental._checkpoint import Checkpoint

if TYPE_CHECKING:
    from detlite.api import Session

__all__ = [
    "Model",
    "ModelOrderBy",
    "ModelSortBy",
    "ModelVersion",
    "create_model",
    "get_model",
    "get_models",
]


class ModelSortBy(enum.Enum):
    """How ``get_models`` sorts (``GetModelsRequest.SortBy``; there is no 3)."""

    UNSPECIFIED = 0
    NAME = 1
    DESCRIPTION = 2
    CREATION_TIME = 4
    LAST_UPDATED_TIME = 5


class ModelOrderBy(enum.Enum):
    """The direction of a listing (``ASC`` and ``DESC`` are aliases)."""

    ASCENDING = 1
    ASC = 1
    DESCENDING = 2
    DESC = 2


# The version listing's sort (``GetModelVersionsRequest.SortBy.VERSION``).
_SORT_BY_VERSION = 3


def _pick(data: Mapping[str, Any], camel: str, snake: str, default: Any = None) -> Any:
    if camel in data:
        return data[camel]
    return data.get(snake, default)


def _model_path(name: str) -> str:
    return f"/api/v1/models/{quote(name, safe='')}"


def _resolve(master: Session | str | None, what: str) -> Session:
    if master is None:
        raise ValueError(
            f"{what} is not bound to a master: get it with Determined().get_model() "
            "or pass master= (a detlite.api.Session or the master's URL)"
        )
    if isinstance(master, str):
        from detlite.api import login_session

        return login_session(master or None)
    return master


class ModelVersion:
    """One version of a model: its checkpoint and the version's own annotations."""

    def __init__(
        self,
        model_name: str,
        version: int,
        checkpoint: Checkpoint,
        creation_time: str | None = None,
        last_updated_time: str | None = None,
        name: str = "",
        comment: str = "",
        notes: str = "",
        labels: Iterable[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
        session: Session | None = None,
    ) -> None:
        self.model_name = model_name
        self.version = version
        self.checkpoint = checkpoint
        self.creation_time = creation_time
        self.last_updated_time = last_updated_time
        self.name = name
        self.comment = comment
        self.notes = notes
        self.labels: list[str] = list(labels or [])
        self.metadata: dict[str, Any] = dict(metadata or {})
        self._session = session

    @classmethod
    def from_json(cls, data: Mapping[str, Any], session: Session | None = None) -> ModelVersion:
        """From the master's ``ModelVersion`` object (camelCase or snake_case keys)."""
        model_name = str(data["model"]["name"])
        version = int(data["version"])
        checkpoint = Checkpoint.from_json(
            data["checkpoint"], session, model_version=version, model_name=model_name
        )
        return cls(
            model_name=model_name,
            version=version,
            checkpoint=checkpoint,
            creation_time=_pick(data, "creationTime", "creation_time"),
            last_updated_time=_pick(data, "lastUpdatedTime", "last_updated_time"),
            name=str(data.get("name") or ""),
            comment=str(data.get("comment") or ""),
            notes=str(data.get("notes") or ""),
            labels=data.get("labels") or [],
            metadata=data.get("metadata") or {},
            session=session,
        )

    def __repr__(self) -> str:
        return (
            f"ModelVersion(model={self.model_name}, version={self.version}, "
            f"checkpoint={self.checkpoint.uuid})"
        )

    def _patch(self, **fields: Any) -> None:
        session = _resolve(self._session, repr(self))
        path = f"{_model_path(self.model_name)}/versions/{self.version}"
        answer = session.patch(path, json={"modelVersion": fields})
        fresh = ModelVersion.from_json(answer["modelVersion"], session)
        self.__dict__.update(fresh.__dict__)

    def add_metadata(self, metadata: Mapping[str, Any]) -> None:
        """Merge ``metadata``'s top-level keys into the version's metadata, on the master."""
        self._patch(metadata={**self.metadata, **metadata})

    def remove_metadata(self, keys: Iterable[str]) -> None:
        """Remove these top-level keys of the version's metadata (missing ones are ignored)."""
        dropped = {keys} if isinstance(keys, str) else set(keys)
        self._patch(metadata={k: v for k, v in self.metadata.items() if k not in dropped})

    def set_name(self, name: str) -> None:
        self._patch(name=name)

    def set_comment(self, comment: str) -> None:
        self._patch(comment=comment)

    def set_labels(self, labels: Iterable[str]) -> None:
        self._patch(labels=list(labels))

    def set_notes(self, notes: str) -> None:
        self._patch(notes=notes)


class Model:
    """A model in the registry (Determined's ``Model``, plus labels, notes and deletion)."""

    def __init__(
        self,
        name: str,
        description: str = "",
        creation_time: str | None = None,
        last_updated_time: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        master: Session | str | None = None,
        *,
        labels: Iterable[str] | None = None,
        notes: str = "",
    ) -> None:
        self.name = name
        self.description = description
        self.creation_time = creation_time
        self.last_updated_time = last_updated_time
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.labels: list[str] = list(labels or [])
        self.notes = notes
        self._master = master

    @classmethod
    def from_json(cls, data: Mapping[str, Any], session: Session | str | None = None) -> Model:
        """From the master's ``Model`` object (camelCase) or ``to_json()``'s snake_case."""
        return cls(
            name=str(data["name"]),
            description=str(data.get("description") or ""),
            creation_time=_pick(data, "creationTime", "creation_time"),
            last_updated_time=_pick(data, "lastUpdatedTime", "last_updated_time"),
            metadata=data.get("metadata") or {},
            master=session,
            labels=data.get("labels") or [],
            notes=str(data.get("notes") or ""),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "creation_time": self.creation_time,
            "last_updated_time": self.last_updated_time,
            "metadata": self.metadata,
            "labels": self.labels,
            "notes": self.notes,
        }

    def __repr__(self) -> str:
        return f"Model(name={self.name}, metadata={json.dumps(self.metadata)})"

    @property
    def _session(self) -> Session:
        session = _resolve(self._master, repr(self))
        self._master = session  # a URL is logged in once
        return session

    @property
    def _path(self) -> str:
        return _model_path(self.name)

    def _refresh(self, data: Mapping[str, Any]) -> None:
        fresh = Model.from_json(data, self._master)
        self.__dict__.update(fresh.__dict__)

    # -- versions --------------------------------------------------------------------------

    def get_version(self, version: int = 0) -> Checkpoint | None:
        """The checkpoint of version ``version`` (0: the latest; None when there is none).

        A missing version ``n >= 1`` raises ``detlite.errors.NotFound``.
        """
        found = self.get_model_version(version)
        return found.checkpoint if found is not None else None

    def get_versions(self, order_by: ModelOrderBy = ModelOrderBy.DESC) -> list[Checkpoint]:
        """Every version's checkpoint, newest version first unless ``order_by`` says ASC."""
        return [v.checkpoint for v in self.get_model_versions(order_by)]

    def get_model_version(self, version: int = 0) -> ModelVersion | None:
        """Version ``version`` with its annotations (0: the latest; None when there is none)."""
        if isinstance(version, bool) or not isinstance(version, int) or version < 0:
            raise ValueError(f"a model version is a number >= 1, or 0 for the latest: {version!r}")
        session = self._session
        if version == 0:
            params = {"sort_by": _SORT_BY_VERSION, "order_by": ModelOrderBy.DESC.value}
            answer = session.get(f"{self._path}/versions", params={**params, "limit": 1})
            versions = answer["modelVersions"]
            return ModelVersion.from_json(versions[0], session) if versions else None
        answer = session.get(f"{self._path}/versions/{version}")
        return ModelVersion.from_json(answer["modelVersion"], session)

    def get_model_versions(self, order_by: ModelOrderBy = ModelOrderBy.DESC) -> list[ModelVersion]:
        """Every version, by version number (newest first unless ``order_by`` says ASC)."""
        session = self._session
        params = {"sort_by": _SORT_BY_VERSION, "order_by": ModelOrderBy(order_by).value}
        answer = session.get(f"{self._path}/versions", params=params)
        return [ModelVersion.from_json(v, session) for v in answer["modelVersions"]]

    def register_version(
        self,
        checkpoint_uuid: str,
        *,
        name: str = "",
        comment: str = "",
        labels: Iterable[str] | None = None,
        notes: str = "",
        metadata: Mapping[str, Any] | None = None,
    ) -> Checkpoint:
        """Register a COMPLETED checkpoint as the next version; returns its checkpoint.

        ``detlite.errors.NotFound`` if the checkpoint does not exist, ``Conflict`` if it is
        not COMPLETED.
        """
        body: dict[str, Any] = {"checkpointUuid": checkpoint_uuid, "name": name}
        body |= {"comment": comment, "notes": notes, "metadata": dict(metadata or {})}
        if labels is not None:
            body["labels"] = list(labels)
        session = self._session
        answer = session.post(f"{self._path}/versions", json=body)
        self._refresh(answer["modelVersion"]["model"])  # registering bumps lastUpdatedTime
        return ModelVersion.from_json(answer["modelVersion"], session).checkpoint

    def delete_version(self, version: int) -> None:
        """Delete version ``version`` (its checkpoint stays)."""
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ValueError(f"a model version is a number >= 1: {version!r}")
        self._session.delete(f"{self._path}/versions/{version}")

    # -- the model itself ----------------------------------------------------------------

    def _patch(self, **fields: Any) -> None:
        answer = self._session.patch(self._path, json={"model": fields})
        self._refresh(answer["model"])

    def add_metadata(self, metadata: Mapping[str, Any]) -> None:
        """Merge ``metadata``'s top-level keys into the model's metadata, on the master."""
        merged = {**self.metadata, **metadata}
        self.metadata = merged
        self._patch(metadata=merged, description=self.description)

    def remove_metadata(self, keys: Iterable[str]) -> None:
        """Remove these top-level keys (missing ones are ignored), on the master."""
        dropped = {keys} if isinstance(keys, str) else set(keys)
        kept = {k: v for k, v in self.metadata.items() if k not in dropped}
        self.metadata = kept
        self._patch(metadata=kept, description=self.description)

    def set_description(self, description: str) -> None:
        self._patch(description=description)

    def set_labels(self, labels: Iterable[str]) -> None:
        self._patch(labels=list(labels))

    def set_notes(self, notes: str) -> None:
        self._patch(notes=notes)

    def delete(self) -> None:
        """Delete the model and its versions from the registry (their checkpoints stay)."""
        self._session.delete(self._path)


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not name.strip() or "/" in name:
        raise ValueError(f"a model name is non-empty text without '/': {name!r}")


def create_model(
    session: Session,
    name: str,
    description: str = "",
    metadata: Mapping[str, Any] | None = None,
    *,
    labels: Iterable[str] | None = None,
    notes: str = "",
) -> Model:
    """Create a model; ``detlite.errors.Conflict`` if the name is taken."""
    _check_name(name)
    body: dict[str, Any] = {"description": description, "metadata": dict(metadata or {})}
    body |= {"labels": list(labels or []), "notes": notes}
    answer = session.post(_model_path(name), json=body)
    return Model.from_json(answer["model"], session)


def get_model(session: Session, name: str) -> Model:
    """The model called ``name``; ``detlite.errors.NotFound`` if there is none."""
    _check_name(name)
    return Model.from_json(session.get(_model_path(name))["model"], session)


def get_models(
    session: Session,
    sort_by: ModelSortBy = ModelSortBy.NAME,
    order_by: ModelOrderBy = ModelOrderBy.ASCENDING,
    name: str = "",
    description: str = "",
    *,
    labels: Iterable[str] | None = None,
) -> list[Model]:
    """Every model whose name and description contain the given text (any case) and that
    has all ``labels``, sorted as asked."""
    params: dict[str, Any] = {
        "sort_by": ModelSortBy(sort_by).value,
        "order_by": ModelOrderBy(order_by).value,
        "name": name,
        "description": description,
    }
    if labels is not None:
        params["labels"] = list(labels)
    answer = session.get("/api/v1/models/", params=params)
    return [Model.from_json(m, session) for m in answer["models"]]
