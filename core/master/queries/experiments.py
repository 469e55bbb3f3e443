"""Experiments: creating, listing, patching, and the state machine the scheduler reuses.

State machine (``set_experiment_state``; trials share the states)::

    ACTIVE <-> PAUSED                  activate / pause (their trials follow)
    ACTIVE|PAUSED -> STOPPING_CANCELED cancel: trials stop at their next checkpoint
    ACTIVE|PAUSED -> STOPPING_KILLED   kill: trials stop at once
    ACTIVE|PAUSED -> STOPPING_COMPLETED / STOPPING_ERROR   (the searcher, later)
    STOPPING_* -> COMPLETED | CANCELED | ERROR   once no trial is still running

- A stop escalates but never softens: COMPLETED < CANCELED < KILLED < ERROR, so killing a
  canceling experiment turns it into STOPPING_KILLED, and canceling a killed one is a no-op.
- On a stop, trials that are not running (PAUSED) end at once; ACTIVE trials move to the
  same STOPPING_* state, which is what tells the scheduler (issue 5) to stop their workers;
  it then calls ``finish_trial`` for each. Once no trial is ACTIVE or STOPPING, the
  experiment ends (``settle_experiment``): STOPPING_COMPLETED -> COMPLETED,
  STOPPING_ERROR -> ERROR, the others -> CANCELED, with its end time. No scheduler exists
  yet, so an experiment without running trials ends in the same call.
- Cancel and kill of an experiment that has already ended are no-ops (as in Determined);
  activate and pause of a stopping or ended one are 409 Conflicts.
- Archive needs an ended experiment (409 otherwise); unarchive works in any state.
  Delete needs an ended experiment and no registered model version among its checkpoints;
  it removes the experiment's rows, the database cascading to trials, metrics, logs and
  checkpoint rows (checkpoint files in storage are garbage collection's business).

Listings: ``sort_by`` follows GetExperimentsRequest.SortBy's proto numbers (ID=1,
DESCRIPTION=2, START_TIME=4, END_TIME=5, STATE=6, NUM_TRIALS=8, PROGRESS=9, USER=10,
NAME=11; UNSPECIFIED sorts by id). NAME sorts by the description, as ``name`` filters it.
STATE sorts by the proto number of the state; NULL end times and progress come last in
either direction; the id breaks ties. ``labels`` keeps experiments having every label given.
"""

from __future__ import annotations

import enum
import json
import secrets
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session

from detlite.api.enums import ExperimentState
from detlite.config import ExperimentConfig
from detlite.errors import Conflict, NotFound
from detlite.master.orm import Checkpoint, Experiment, Model, ModelVersion, Trial, User, utcnow
from detlite.master.queries.users import require_owner_or_admin
from detlite.master.schemas import experiments as schemas
from detlite.master.schemas.common import OrderBy, Pagination, page_window

__all__ = [
    "IDS_PER_QUERY",
    "STOP_OUTCOME",
    "ExperimentSortBy",
    "archive_experiment",
    "create_experiment",
    "delete_experiment",
    "ensure_deletable",
    "experiment_filters",
    "experiment_wire",
    "experiments_by_id",
    "experiments_wire",
    "get_experiment",
    "has_label",
    "list_experiments",
    "patch_experiment",
    "require_owner",
    "searchers_of",
    "set_experiment_state",
    "settle_experiment",
    "trial_ends",
]

S = ExperimentState


class ExperimentSortBy(enum.IntEnum):
    """GetExperimentsRequest.SortBy (proto numbers)."""

    UNSPECIFIED = 0
    ID = 1
    DESCRIPTION = 2
    START_TIME = 4
    END_TIME = 5
    STATE = 6
    NUM_TRIALS = 8
    PROGRESS = 9
    USER = 10
    NAME = 11


#: What each stopping state ends as.
STOP_OUTCOME: dict[ExperimentState, ExperimentState] = {
    S.STOPPING_COMPLETED: S.COMPLETED,
    S.STOPPING_CANCELED: S.CANCELED,
    S.STOPPING_KILLED: S.CANCELED,
    S.STOPPING_ERROR: S.ERROR,
}
_STOP_RANK = {
    S.STOPPING_COMPLETED: 1,
    S.STOPPING_CANCELED: 2,
    S.STOPPING_KILLED: 3,
    S.STOPPING_ERROR: 4,
}
_RUNNING = (S.ACTIVE, S.PAUSED)
# States in which a trial may still have (or get) a worker.
_LIVE_TRIAL = (S.ACTIVE, *STOP_OUTCOME)


def get_experiment(db: Session, experiment_id: int) -> Experiment:
    row = db.get(Experiment, experiment_id)
    if row is None:
        raise NotFound(f"experiment {experiment_id} not found")
    return row


def require_owner(user: User, experiment: Experiment, action: str) -> None:
    """Forbidden unless ``user`` owns ``experiment`` or is an admin."""
    require_owner_or_admin(user, experiment.owner_id, f"{action} experiment {experiment.id}", "it")


# -- creating and reading ---------------------------------------------------------------------


def create_experiment(
    db: Session,
    owner: User,
    config: ExperimentConfig,
    context_archive: bytes,
    *,
    activate: bool = True,
    archived: bool = False,
) -> Experiment:
    """Store a validated experiment; the experiment seed is fixed now if the config has none
    (so the trials' seeds are reproducible from the stored config). Flushes, no commit."""
    if config.experiment_seed is None:
        config = config.with_experiment_seed(secrets.randbelow(2**31))
    row = Experiment(
        owner_id=owner.id,
        config=config.to_dict(),
        state=S.ACTIVE if activate else S.PAUSED,
        archived=archived,
        description=config.description or "",
        labels=_unique(config.labels),
        context_archive=context_archive,
    )
    db.add(row)
    db.flush()
    return row


def _unique(labels: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(labels))


#: Ids per ``IN`` list: PostgreSQL takes at most 65,535 parameters a statement, and a
#: listing without a limit may hold every experiment.
IDS_PER_QUERY = 10_000


def _id_chunks(ids: Sequence[int]) -> Iterator[Sequence[int]]:
    return (ids[i : i + IDS_PER_QUERY] for i in range(0, len(ids), IDS_PER_QUERY))


def experiments_by_id(db: Session, ids: Sequence[int]) -> list[Experiment]:
    """The experiments of ``ids`` (which exist), in that order."""
    rows: dict[int, Experiment] = {}
    for chunk in _id_chunks(ids):
        query = sa.select(Experiment).where(Experiment.id.in_(chunk))
        rows.update((row.id, row) for row in db.scalars(query))
    return [rows[i] for i in ids]


def searchers_of(db: Session, where: Sequence[sa.ColumnElement[bool]]) -> dict[int, Any]:
    """The config's ``searcher`` of each experiment matching ``where``, by id: extracted by
    the database rather than read with the whole config. SQLite's JSON functions refuse some
    text Python's parser reads (a ``NaN`` an older master stored), so those few configs are
    read and parsed here instead."""
    searcher: Any = Experiment.config["searcher"]
    sqlite = db.get_bind().dialect.name == "sqlite"
    valid = sa.func.json_valid(Experiment.config)
    if sqlite:  # NULL for a config SQLite cannot parse: read below
        searcher = sa.type_coerce(sa.case((valid, searcher)), sa.JSON)
    query = sa.select(Experiment.id, searcher).where(*where)
    found = {experiment_id: value for experiment_id, value in db.execute(query)}
    if sqlite:
        texts = sa.select(Experiment.id, sa.cast(Experiment.config, sa.Text)).where(*where, ~valid)
        for experiment_id, text in db.execute(texts):
            try:
                config = json.loads(text)
            except ValueError:
                config = None
            found[experiment_id] = config.get("searcher") if isinstance(config, dict) else None
    return found


def experiments_wire(db: Session, rows: Sequence[Experiment]) -> list[schemas.Experiment]:
    """The wire objects of ``rows``, with two queries for all their trial ids and owners
    (per ``IDS_PER_QUERY`` rows)."""
    ids = [row.id for row in rows]
    trial_ids: dict[int, list[int]] = {i: [] for i in ids}
    for chunk in _id_chunks(ids):
        query = (
            sa.select(Trial.experiment_id, Trial.id)
            .where(Trial.experiment_id.in_(chunk))
            .order_by(Trial.id)
        )
        for experiment_id, trial_id in db.execute(query):
            trial_ids[experiment_id].append(trial_id)
    owner_ids = {row.owner_id for row in rows}
    names: dict[int, str] = {}
    if owner_ids:
        query_users = sa.select(User.id, User.username).where(User.id.in_(owner_ids))
        names = {uid: name for uid, name in db.execute(query_users)}
    return [_wire(row, trial_ids[row.id], names.get(row.owner_id, "")) for row in rows]


def experiment_wire(db: Session, row: Experiment) -> schemas.Experiment:
    return experiments_wire(db, [row])[0]


def _wire(row: Experiment, trial_ids: list[int], username: str) -> schemas.Experiment:
    config = row.config or {}
    searcher = config.get("searcher") or {}
    resources = config.get("resources") or {}
    return schemas.Experiment(
        id=row.id,
        description=row.description,
        name=row.description,
        labels=list(row.labels or []),
        notes=row.notes,
        state=row.state,
        archived=row.archived,
        start_time=row.start_time,
        end_time=row.end_time,
        num_trials=len(trial_ids),
        trial_ids=trial_ids,
        user_id=row.owner_id,
        username=username,
        searcher_type=str(searcher.get("name", "")),
        resource_pool=str(resources.get("resource_pool") or ""),
        progress=row.progress,
    )


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def has_label(db: Session, labels: Any, label: str) -> sa.ColumnElement[bool]:
    """Whether the JSON list column ``labels`` (experiments', models') holds ``label``."""
    if db.get_bind().dialect.name == "postgresql":
        # One row whose labels hold an escaped NUL or lone surrogate (an older master
        # stored them) would fail the cast to jsonb, and with it the whole listing: such
        # rows are left out of label-filtered listings instead. CASE (unlike AND)
        # evaluates only the branch it takes.
        text = sa.cast(labels, sa.Text)
        uncastable = text.op("~*", return_type=sa.Boolean)(_UNCASTABLE_JSON)
        contains = sa.cast(labels, JSONB).contains([label])
        return sa.case((uncastable, sa.false()), else_=contains)
    values = sa.func.json_each(labels).table_valued("value")
    return sa.exists(sa.select(1).select_from(values).where(values.c.value == label))


#: JSON text that PostgreSQL's jsonb refuses: an escaped NUL, or an escaped surrogate that
#: is not half of a pair.
_UNCASTABLE_JSON = (
    r"\\u0000|\\ud[89ab][0-9a-f]{2}(?!\\ud[c-f][0-9a-f]{2})"
    r"|(?<!\\ud[89ab][0-9a-f]{2})\\ud[c-f][0-9a-f]{2}"
)


def _state_number() -> sa.ColumnElement[Any]:
    return sa.case({s.value: s.number for s in S}, value=Experiment.state, else_=0)


def experiment_filters(
    db: Session,
    *,
    states: Sequence[ExperimentState] = (),
    archived: bool | None = None,
    users: Sequence[str] = (),
    labels: Sequence[str] = (),
    description: str = "",
    name: str = "",
) -> list[sa.ColumnElement[bool]]:
    """The conditions on ``Experiment`` a listing's filters make (none joins another table)."""
    where: list[sa.ColumnElement[bool]] = []
    if states:
        where.append(Experiment.state.in_(list(states)))
    if archived is not None:
        where.append(Experiment.archived.is_(archived))
    if users:
        owners = sa.select(User.id).where(User.username.in_(list(users)))
        where.append(Experiment.owner_id.in_(owners))
    for label in dict.fromkeys(labels):
        where.append(has_label(db, Experiment.labels, label))
    for text in (description, name):
        if text:
            where.append(Experiment.description.ilike(_like(text), escape="\\"))
    return where


def list_experiments(
    db: Session,
    *,
    states: Sequence[ExperimentState] = (),
    archived: bool | None = None,
    users: Sequence[str] = (),
    labels: Sequence[str] = (),
    description: str = "",
    name: str = "",
    sort_by: ExperimentSortBy = ExperimentSortBy.UNSPECIFIED,
    order_by: OrderBy = OrderBy.UNSPECIFIED,
    offset: int = 0,
    limit: int = 0,
) -> tuple[list[Experiment], Pagination]:
    """One page of experiments, as ``paginate`` pages a query.

    The count, the filters and the sort run on the experiments' ids and the few columns they
    name, which indexes hold (migration 0006), never reading a config; only the page's rows
    are read whole, by id."""
    where = experiment_filters(
        db,
        states=states,
        archived=archived,
        users=users,
        labels=labels,
        description=description,
        name=name,
    )
    total = int(db.scalar(sa.select(sa.func.count()).select_from(Experiment).where(*where)) or 0)
    pagination = page_window(total, offset, limit)
    start, end = pagination.start_index, pagination.end_index
    if end <= start:
        return [], pagination
    ids = sa.select(Experiment.id).where(*where)
    descending = order_by == OrderBy.DESC
    key = _sort_key(sort_by)
    if key is not None:
        if sort_by == ExperimentSortBy.USER:
            ids = ids.join(User, Experiment.owner_id == User.id)
        ordered = key.desc() if descending else key.asc()
        if sort_by in (ExperimentSortBy.END_TIME, ExperimentSortBy.PROGRESS):
            ordered = ordered.nulls_last()
        ids = ids.order_by(ordered)
    ids = ids.order_by(Experiment.id.desc() if descending else Experiment.id.asc())
    page = list(db.scalars(ids.offset(start).limit(end - start)))
    return experiments_by_id(db, page), pagination


def _sort_key(sort_by: ExperimentSortBy) -> Any:
    if sort_by in (ExperimentSortBy.DESCRIPTION, ExperimentSortBy.NAME):
        return Experiment.description
    if sort_by == ExperimentSortBy.START_TIME:
        return Experiment.start_time
    if sort_by == ExperimentSortBy.END_TIME:
        return Experiment.end_time
    if sort_by == ExperimentSortBy.STATE:
        return _state_number()
    if sort_by == ExperimentSortBy.NUM_TRIALS:
        count = sa.select(sa.func.count(Trial.id)).where(Trial.experiment_id == Experiment.id)
        return count.scalar_subquery()
    if sort_by == ExperimentSortBy.PROGRESS:
        return Experiment.progress
    if sort_by == ExperimentSortBy.USER:
        return User.username
    return None  # ID and UNSPECIFIED: the id tie-breaker alone


def patch_experiment(
    db: Session,
    row: Experiment,
    *,
    description: str | None = None,
    labels: Sequence[str] | None = None,
    notes: str | None = None,
) -> None:
    """Change the given fields; description and labels are kept in the stored config too."""
    config = dict(row.config or {})
    if description is not None:
        row.description = description
        config["description"] = description
    if labels is not None:
        row.labels = _unique(labels)
        config["labels"] = list(row.labels)
    if notes is not None:
        row.notes = notes
    row.config = config  # a new dict, so the JSON column sees the change


# -- the state machine ------------------------------------------------------------------------


def _trials_in(db: Session, row: Experiment, states: Iterable[ExperimentState]) -> list[Trial]:
    query = (
        sa.select(Trial)
        .where(Trial.experiment_id == row.id, Trial.state.in_(list(states)))
        .order_by(Trial.id)
    )
    return list(db.scalars(query))


def _end(row: Experiment | Trial, state: ExperimentState) -> None:
    row.state = state
    row.end_time = utcnow()


def set_experiment_state(db: Session, row: Experiment, target: ExperimentState) -> bool:
    """Move ``row`` towards ``target`` under the rules of the module docstring.

    ``target`` is ACTIVE, PAUSED, a STOPPING_* state, or a terminal state (which stops the
    experiment as its STOPPING_* counterpart would). Returns whether anything changed;
    raises Conflict for a transition that is not allowed. Does not commit.
    """
    current = row.state
    if target in _RUNNING:
        if current == target:
            return False
        if current not in _RUNNING:
            verb = "activated" if target == S.ACTIVE else "paused"
            raise Conflict(
                f"experiment {row.id} is {current.value} and cannot be {verb}: only an "
                "ACTIVE or PAUSED experiment can be"
            )
        row.state = target
        for trial in _trials_in(db, row, [current]):
            trial.state = target
        return True
    stopping = _stopping_state(target)
    if current.terminal:
        return False
    if current in _STOP_RANK and _STOP_RANK[current] >= _STOP_RANK[stopping]:
        return False
    row.state = stopping
    for trial in _trials_in(db, row, [S.PAUSED, *_LIVE_TRIAL]):
        if trial.state == S.PAUSED:
            _end(trial, STOP_OUTCOME[stopping])
        elif trial.state == S.ACTIVE or _STOP_RANK[trial.state] < _STOP_RANK[stopping]:
            trial.state = stopping
    settle_experiment(db, row)
    return True


def _stopping_state(target: ExperimentState) -> ExperimentState:
    if target in _STOP_RANK:
        return target
    for stopping, outcome in STOP_OUTCOME.items():
        if outcome == target and stopping != S.STOPPING_KILLED:
            return stopping
    raise ValueError(f"{target.value} is not a state an experiment can be moved to")


def settle_experiment(db: Session, row: Experiment) -> bool:
    """End a stopping experiment once none of its trials is ACTIVE or stopping; returns
    whether it ended. The scheduler calls this (through ``trial_ends``) as trials exit."""
    if row.state not in STOP_OUTCOME:
        return False
    db.flush()
    live = db.scalar(
        sa.select(sa.func.count())
        .select_from(Trial)
        .where(Trial.experiment_id == row.id, Trial.state.in_(list(_LIVE_TRIAL)))
    )
    if live:
        return False
    _end(row, STOP_OUTCOME[row.state])
    return True


def trial_ends(db: Session, trial: Trial, state: ExperimentState) -> None:
    """Record that ``trial``'s workers have exited with terminal ``state``, and end its
    experiment if that was the last running trial of a stopping experiment."""
    if not state.terminal:
        raise ValueError(f"{state.value} is not a terminal state")
    if not trial.state.terminal:
        _end(trial, state)
    settle_experiment(db, trial.experiment)


def archive_experiment(db: Session, row: Experiment, archived: bool) -> bool:
    """Set the archived flag; archiving needs an ended experiment. Returns whether it changed."""
    if archived and not row.state.terminal:
        raise Conflict(
            f"experiment {row.id} is {row.state.value}; only an ended experiment (COMPLETED, "
            "CANCELED or ERROR) can be archived: cancel or kill it first"
        )
    changed = row.archived != archived
    row.archived = archived
    return changed


def delete_experiment(db: Session, row: Experiment) -> None:
    """Delete an ended experiment and, by cascade, everything recorded under it.

    The caller deletes the checkpoint files first (``detlite.master.gc``), after
    ``ensure_deletable``, so that a refused deletion deletes no file."""
    ensure_deletable(db, row)
    db.delete(row)


_HOLDERS_LISTED = 20  # model versions a refused deletion names


def ensure_deletable(db: Session, row: Experiment) -> None:
    """Raise Conflict unless the experiment has ended and none of its checkpoints is still
    needed elsewhere (a model version, or a trial of another experiment warm-starting)."""
    if not row.state.terminal:
        raise Conflict(
            f"experiment {row.id} is {row.state.value} and cannot be deleted while it may "
            f"still run: kill it (POST /api/v1/experiments/{row.id}/kill), wait for "
            "STATE_CANCELED, then delete it"
        )
    # A registered checkpoint is kept, and so is its experiment (its rows hold the
    # checkpoint's); only its experiment's owner or an admin can have registered it
    # (``queries.models.register_version``). Name every holder, so one answer says it all.
    registered = db.execute(
        sa.select(Model.name, ModelVersion.version, Checkpoint.uuid)
        .join(ModelVersion, ModelVersion.model_id == Model.id)
        .join(Checkpoint, Checkpoint.uuid == ModelVersion.checkpoint_uuid)
        .where(Checkpoint.experiment_id == row.id)
        .order_by(Model.name, ModelVersion.version)
        .limit(_HOLDERS_LISTED + 1)
    ).all()
    if registered:
        held = "; ".join(
            f"model {model!r} version {version} holds checkpoint {uuid}"
            for model, version, uuid in registered[:_HOLDERS_LISTED]
        )
        if len(registered) > _HOLDERS_LISTED:
            held += "; and more"
        raise Conflict(
            f"experiment {row.id} cannot be deleted while its checkpoints are registered "
            f"as model versions ({held}): delete those versions first (DELETE "
            "/api/v1/models/{name}/versions/{version}, by the model's owner or an admin), "
            "then delete the experiment again"
        )
    source = db.execute(
        sa.select(Trial.id, Checkpoint.uuid)
        .join(Checkpoint, Checkpoint.uuid == Trial.warm_start_checkpoint_uuid)
        .where(Checkpoint.experiment_id == row.id, Trial.experiment_id != row.id)
        .limit(1)
    ).first()
    if source is not None:
        trial_id, uuid = source
        raise Conflict(
            f"experiment {row.id} cannot be deleted: trial {trial_id} of another experiment "
            f"warm-starts from its checkpoint {uuid}; delete that experiment first"
        )
