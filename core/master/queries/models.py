"""The model registry: models, their numbered versions, and the wire objects of both.

Decisions:

- Only a model's owner or an admin may change or delete it or its versions; any logged-in
  user may read and list. A model whose owner was deleted is left to admins.
- Registering a version takes a lock on the model first: ``UPDATE models SET
  last_updated_time`` is the transaction's first write. On PostgreSQL that row lock queues
  concurrent registrations of the same model; on SQLite the write starts the transaction
  (pysqlite begins one at the first write) and takes the database's write lock before the
  highest version is read. Either way ``max(version) + 1`` is read by one registration at a
  time, so versions are 1, 2, ... without gaps or duplicates from races; the unique
  constraint stays as the last line of defence (its violation answers 409).
- Who may register whose checkpoint: registering needs the right to change the model (its
  owner or an admin) and the right to change the checkpoint's experiment (its owner or an
  admin), on top of reading the checkpoint (anyone logged in may). Otherwise 403, saying who
  may. A model version keeps its checkpoint, and with it the checkpoint's experiment: that
  experiment cannot be deleted until those versions are (``queries.experiments.
  ensure_deletable`` answers 409 naming every model version that holds one), so only those
  who may delete the experiment may tie it down.
- Only a COMPLETED checkpoint can be registered (409 otherwise, naming its state). The
  checkpoint's row is locked from that check to the commit (``SELECT ... FOR UPDATE`` on
  PostgreSQL; SQLite's write lock, held since the model's lock, covers it), so garbage
  collection (``detlite.master.gc``, which locks the row before deciding) either marks it
  DELETED first, and the registration answers 409, or sees the new version and keeps it.
- Name and description filters are case-insensitive substrings (LIKE with the user's ``%``
  and ``_`` escaped); the labels filter keeps models with every given label, in SQL as the
  experiments' does (``queries.experiments.has_label``).
- Listings sort by the chosen key and then by id, so pages are stable under ties. Names and
  descriptions sort case-insensitively by code point (lower-cased, collation "C" on
  PostgreSQL), so both databases give the same order whatever the server's locale.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.orm import Session

from detlite.api.enums import CheckpointState
from detlite.errors import Conflict, NotFound
from detlite.master.orm import (
    Checkpoint,
    Experiment,
    Model,
    ModelVersion,
    Trial,
    User,
    ValidationMetrics,
    utcnow,
)
from detlite.master.queries.checkpoints import checkpoint_wire
from detlite.master.queries.experiments import has_label
from detlite.master.queries.users import require_owner_or_admin
from detlite.master.schemas import models as wire
from detlite.master.schemas.common import OrderBy, Pagination, paginate

__all__ = [
    "check_can_modify",
    "create_model",
    "delete_model",
    "delete_version",
    "get_model",
    "list_models",
    "list_versions",
    "model_wire",
    "models_wire",
    "register_version",
    "require_model",
    "require_version",
    "update_model",
    "update_version",
    "version_wire",
    "versions_wire",
]

_MODEL_SORT_COLUMNS: dict[wire.ModelSortBy, Any] = {
    wire.ModelSortBy.UNSPECIFIED: Model.last_updated_time,
    wire.ModelSortBy.NAME: Model.name,
    wire.ModelSortBy.DESCRIPTION: Model.description,
    wire.ModelSortBy.CREATION_TIME: Model.creation_time,
    wire.ModelSortBy.LAST_UPDATED_TIME: Model.last_updated_time,
}
_VERSION_SORT_COLUMNS: dict[wire.VersionSortBy, Any] = {
    wire.VersionSortBy.UNSPECIFIED: ModelVersion.version,
    wire.VersionSortBy.VERSION: ModelVersion.version,
    wire.VersionSortBy.CREATION_TIME: ModelVersion.creation_time,
}


def _ordered(statement: sa.Select[Any], column: Any, tiebreak: Any, order: OrderBy) -> Any:
    if order is OrderBy.DESC:
        return statement.order_by(column.desc(), tiebreak.desc())
    return statement.order_by(column.asc(), tiebreak.asc())


# Models


def get_model(db: Session, name: str) -> Model | None:
    if "\x00" in name:  # no model has one, and PostgreSQL refuses it in a query
        return None
    return db.scalar(sa.select(Model).where(Model.name == name))


def require_model(db: Session, name: str) -> Model:
    model = get_model(db, name)
    if model is None:
        raise NotFound(f"model {name!r} not found")
    return model


def check_can_modify(user: User, model: Model) -> None:
    """Forbidden unless ``user`` owns ``model`` or is an admin."""
    require_owner_or_admin(user, model.owner_id, f"change model {model.name!r}", "it")


def create_model(
    db: Session,
    owner: User,
    name: str,
    *,
    description: str = "",
    metadata: dict[str, Any] | None = None,
    labels: Sequence[str] | None = None,
    notes: str = "",
) -> Model:
    if get_model(db, name) is not None:
        raise Conflict(f"model {name!r} already exists")
    now = utcnow()
    model = Model(
        name=name,
        description=description,
        metadata_=dict(metadata or {}),
        labels=list(labels or []),
        notes=notes,
        owner_id=owner.id,
        creation_time=now,
        last_updated_time=now,
    )
    db.add(model)
    db.flush()
    return model


def update_model(
    db: Session,
    model: Model,
    *,
    description: str | None = None,
    metadata: dict[str, Any] | None = None,
    labels: Sequence[str] | None = None,
    notes: str | None = None,
) -> None:
    """Replace the fields given (not None) and bump ``last_updated_time``."""
    if description is not None:
        model.description = description
    if metadata is not None:
        model.metadata_ = dict(metadata)
    if labels is not None:
        model.labels = list(labels)
    if notes is not None:
        model.notes = notes
    model.last_updated_time = utcnow()


def delete_model(db: Session, model: Model) -> None:
    """Delete ``model`` and its versions (their checkpoints stay)."""
    db.execute(sa.delete(ModelVersion).where(ModelVersion.model_id == model.id))
    db.delete(model)


def _like(column: Any, text: str) -> Any:
    return sa.func.lower(column).contains(text.lower(), autoescape=True)


def list_models(
    db: Session,
    *,
    sort_by: wire.ModelSortBy = wire.ModelSortBy.UNSPECIFIED,
    order_by: OrderBy = OrderBy.ASC,
    name: str = "",
    description: str = "",
    labels: Sequence[str] = (),
    offset: int = 0,
    limit: int = 0,
) -> tuple[list[Model], Pagination]:
    statement = sa.select(Model)
    if name:
        statement = statement.where(_like(Model.name, name))
    if description:
        statement = statement.where(_like(Model.description, description))
    for label in dict.fromkeys(labels):
        statement = statement.where(has_label(db, Model.labels, label))
    column = _MODEL_SORT_COLUMNS[sort_by]
    if sort_by in (wire.ModelSortBy.NAME, wire.ModelSortBy.DESCRIPTION):
        column = sa.func.lower(column)
        if db.get_bind().dialect.name == "postgresql":
            column = column.collate("C")
    statement = _ordered(statement, column, Model.id, order_by)
    return paginate(db, statement, offset, limit)


def _version_counts(db: Session, model_ids: Sequence[int]) -> dict[int, int]:
    if not model_ids:
        return {}
    query = (
        sa.select(ModelVersion.model_id, sa.func.count())
        .where(ModelVersion.model_id.in_(model_ids))
        .group_by(ModelVersion.model_id)
    )
    return {model_id: int(count) for model_id, count in db.execute(query)}


def _usernames(db: Session, user_ids: Sequence[int | None]) -> dict[int, str]:
    ids = {i for i in user_ids if i is not None}
    if not ids:
        return {}
    query = sa.select(User.id, User.username).where(User.id.in_(ids))
    return {user_id: username for user_id, username in db.execute(query)}


def models_wire(db: Session, models: Sequence[Model]) -> list[wire.Model]:
    """The wire objects of ``models``, with their owners and version counts (two queries)."""
    counts = _version_counts(db, [m.id for m in models])
    names = _usernames(db, [m.owner_id for m in models])
    return [
        wire.Model(
            name=m.name,
            description=m.description,
            metadata=m.metadata_,
            labels=m.labels,
            notes=m.notes,
            creation_time=m.creation_time,
            last_updated_time=m.last_updated_time,
            id=m.id,
            username=names.get(m.owner_id) if m.owner_id is not None else None,
            num_versions=counts.get(m.id, 0),
        )
        for m in models
    ]


def model_wire(db: Session, model: Model) -> wire.Model:
    return models_wire(db, [model])[0]


# Versions


def require_version(db: Session, model: Model, version: int) -> ModelVersion:
    row = db.scalar(
        sa.select(ModelVersion).where(
            ModelVersion.model_id == model.id, ModelVersion.version == version
        )
    )
    if row is None:
        raise NotFound(f"model {model.name!r} has no version {version}")
    return row


def register_version(
    db: Session,
    user: User,
    model: Model,
    checkpoint_uuid: str,
    *,
    name: str = "",
    comment: str = "",
    labels: Sequence[str] | None = None,
    notes: str = "",
    metadata: dict[str, Any] | None = None,
) -> ModelVersion:
    """Add the next version of ``model`` pointing at a COMPLETED checkpoint, for ``user``
    (who may change ``model``: the caller checks) if ``user`` may also change the
    checkpoint's experiment (the module docstring has the rule)."""
    now = utcnow()
    # The lock described in the module docstring: this must be the transaction's first write.
    lock = sa.update(Model).where(Model.id == model.id).values(last_updated_time=now)
    if not cast(
        "sa.CursorResult[Any]", db.execute(lock)
    ).rowcount:  # deleted since it was looked up
        raise NotFound(f"model {model.name!r} not found")
    # Locked (PostgreSQL) so that GC, which marks a checkpoint DELETED with a conditional
    # UPDATE of this row, cannot take it between this check and the commit.
    checkpoint = db.get(Checkpoint, checkpoint_uuid, with_for_update=True)
    if checkpoint is None:
        raise NotFound(f"checkpoint {checkpoint_uuid} not found")
    owner_id = db.scalar(
        sa.select(Experiment.owner_id).where(Experiment.id == checkpoint.experiment_id)
    )
    require_owner_or_admin(
        user,
        owner_id,
        f"register checkpoint {checkpoint_uuid} as a model version",
        f"its experiment {checkpoint.experiment_id}",
    )
    if checkpoint.state is not CheckpointState.COMPLETED:
        raise Conflict(
            f"checkpoint {checkpoint_uuid} is in state {checkpoint.state.value}; "
            "only COMPLETED checkpoints can be registered"
        )
    highest = db.scalar(
        sa.select(sa.func.max(ModelVersion.version)).where(ModelVersion.model_id == model.id)
    )
    row = ModelVersion(
        model_id=model.id,
        version=(highest or 0) + 1,
        checkpoint_uuid=checkpoint_uuid,
        name=name,
        comment=comment,
        labels=list(labels or []),
        notes=notes,
        metadata_=dict(metadata or {}),
        creation_time=now,
        last_updated_time=now,
    )
    db.add(row)
    db.flush()
    db.refresh(model)
    return row


def list_versions(
    db: Session,
    model: Model,
    *,
    sort_by: wire.VersionSortBy = wire.VersionSortBy.VERSION,
    order_by: OrderBy = OrderBy.ASC,
    offset: int = 0,
    limit: int = 0,
) -> tuple[list[ModelVersion], Pagination]:
    statement = sa.select(ModelVersion).where(ModelVersion.model_id == model.id)
    column = _VERSION_SORT_COLUMNS[sort_by]
    statement = _ordered(statement, column, ModelVersion.version, order_by)
    return paginate(db, statement, offset, limit)


def update_version(
    db: Session,
    row: ModelVersion,
    *,
    name: str | None = None,
    comment: str | None = None,
    notes: str | None = None,
    labels: Sequence[str] | None = None,
    metadata: dict[str, Any] | None = None,
) -> None:
    """Replace the fields given (not None) and bump the version's ``last_updated_time``."""
    if name is not None:
        row.name = name
    if comment is not None:
        row.comment = comment
    if notes is not None:
        row.notes = notes
    if labels is not None:
        row.labels = list(labels)
    if metadata is not None:
        row.metadata_ = dict(metadata)
    row.last_updated_time = utcnow()


def delete_version(db: Session, row: ModelVersion) -> None:
    """Delete one version; its checkpoint stays (and becomes collectable again)."""
    db.delete(row)


def versions_wire(
    db: Session, rows: Sequence[ModelVersion], model: wire.Model
) -> list[wire.ModelVersion]:
    """``version_wire`` of each of a model's ``rows``, reading their checkpoints and those
    checkpoints' trials, experiments and validations in four queries, not four per row."""
    uuids = {row.checkpoint_uuid for row in rows}
    if not uuids:
        return []
    checkpoints = list(db.scalars(sa.select(Checkpoint).where(Checkpoint.uuid.in_(uuids))))
    trial_ids = {c.trial_id for c in checkpoints}
    experiment_ids = {c.experiment_id for c in checkpoints}
    validation_ids = {c.validation_id for c in checkpoints if c.validation_id is not None}
    # Held here while the wire objects are made: the session's identity map, where their
    # db.get finds them, keeps only what something else references.
    held = [
        *checkpoints,
        *db.scalars(sa.select(Trial).where(Trial.id.in_(trial_ids))),
        *db.scalars(sa.select(Experiment).where(Experiment.id.in_(experiment_ids))),
        *db.scalars(sa.select(ValidationMetrics).where(ValidationMetrics.id.in_(validation_ids))),
    ]
    out = [version_wire(db, row, model) for row in rows]
    del held
    return out


def version_wire(
    db: Session, row: ModelVersion, model: wire.Model | None = None
) -> wire.ModelVersion:
    """The wire object of ``row``; pass ``model`` (its model's) to save the queries."""
    checkpoint = db.get(Checkpoint, row.checkpoint_uuid)
    if checkpoint is None:  # the foreign key restricts deletion; this is a broken database
        raise NotFound(f"checkpoint {row.checkpoint_uuid} of model version {row.id} is gone")
    return wire.ModelVersion(
        model=model if model is not None else model_wire(db, row.model),
        checkpoint=checkpoint_wire(db, checkpoint),
        version=row.version,
        creation_time=row.creation_time,
        last_updated_time=row.last_updated_time,
        name=row.name,
        comment=row.comment,
        notes=row.notes,
        labels=row.labels,
        metadata=row.metadata_,
        id=row.id,
    )
