"""Training and validation metrics, and trial logs: storing workers' reports, reading them.

- Idempotent reports: a report is keyed by (trial, kind, trialRunId, stepsCompleted), which
  is unique in each metrics table. A repeat (a worker retrying after a crash or a lost
  answer) replaces the stored row's metrics (and ``endTime``) instead of adding a row, and
  answers as the first report did; within one batch request the last report of a key wins.
  Reports are written with one ``INSERT ... ON CONFLICT (key) DO UPDATE`` (both databases
  have it), so this holds when repeats arrive at the same time too: one inserts, the others
  wait for it and replace, and none gets a unique-constraint 409. A repeat identical to the
  stored report therefore changes nothing but ``endTime``.
- Effective rows: after a restart a trial may report a batch count again under a higher
  trialRunId. Readers keep, per (trial, batch count), the row of the highest trialRunId
  (then the newest row), and order by batch count.
- Training reports raise the trial's ``batches_trained`` to the most batches seen (in SQL,
  so that racing reports cannot lower it). A
  validation links the checkpoints recorded at the same batch count (their
  ``validation_id`` and ``searcher_metric``, through the checkpoints module's
  ``link_validation``).
- A trial that has ended (COMPLETED, CANCELED, ERROR...) refuses metrics with 409. Logs are
  accepted in any state: a worker's last lines often arrive after its trial ended.
- Values: ``metrics`` is a JSON object of any JSON values within the rules of
  ``schemas._values``; the schema has already turned each NaN and infinity into the
  string ``"NaN"``, ``"Infinity"`` or ``"-Infinity"`` (JSON cannot carry them, and
  PostgreSQL's json type refuses them), so they are stored as they come.

Read shapes: ``GET /api/v1/trials/{id}/metrics`` and ``GET /api/v1/experiments/{id}/metrics``
answer ``{"metrics": [MetricsRow], "pagination": Pagination}``, a MetricsRow being
``{"trialId", "trialRunId", "stepsCompleted", "metrics", "numInputs", "endTime"}``
(``numInputs`` null for training), ordered by trial id then batch count.

Downsampled series (``downsampled_metrics``, for charts: ``maxPoints``). A series is one
metric name of one trial's effective rows; its points are the rows where that metric is a
finite number (``schemas._values.finite_float``: not a bool, a string such as ``"NaN"``, a
list, an object or null; those values are never points, and are left out of the answer).
Where a row nests its metrics under a ``validation_metrics`` object, as some clients do,
that object's members are the series, as everywhere else they are read. A trial with at
most ``maxPoints`` rows keeps every point. Otherwise its batch range is cut into
``(maxPoints - 2) // 2`` buckets of equal width, and each series keeps, per bucket, the
point of its smallest and the point of its largest value (the earliest on ties), plus its
first and last point: at most ``maxPoints`` points, its overall minimum and maximum among
them. The answer is MetricsRow-shaped, one row per batch count where some series kept a
point, that row carrying only those series' values (nested again where the row nested
them).

Why min/max buckets and not LTTB: min/max per bucket keeps every spike (LTTB keeps the
point that makes the largest triangle, and can drop a bucket's extreme), its choice in a
bucket depends on that bucket alone (LTTB's depends on the point chosen before, so a new
point at the end can change the whole line), and the same buckets serve every series of a
trial. The rows are read in batch order, 10,000 at a time, each page's batch counts and
metrics joined into two strings by the database and parsed a bucket at a time (one
``json.loads`` per bucket, no ORM or Row objects). Exploding the JSON in SQL and grouping
per (series, bucket) there was slower on 1M rows: on SQLite its GROUP BY sorts every value
through temporary files (2 s of CPU, 10 s of wall time for one pass on the development
machine, against under 2 s of CPU for all of this), and on PostgreSQL it took longer too.
``bench/series.py`` measures it.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import json
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from detlite.errors import APIError, Conflict
from detlite.master.orm import TrainingMetrics, Trial, TrialLog, ValidationMetrics, utcnow
from detlite.master.queries import checkpoints as checkpoint_queries
from detlite.master.schemas import metrics as schemas
from detlite.master.schemas._values import finite_float
from detlite.master.schemas.common import Pagination, page_list, paginate

__all__ = [
    "MAX_POINTS",
    "MIN_POINTS",
    "add_logs",
    "downsampled_metrics",
    "effective_rows",
    "list_metrics",
    "log_wire",
    "metrics_model",
    "metrics_row_wire",
    "report_metrics",
    "require_reportable",
    "validation_values",
]

MetricsTable = type[TrainingMetrics] | type[ValidationMetrics]


def metrics_model(kind: schemas.MetricsKind) -> MetricsTable:
    return TrainingMetrics if kind == "training" else ValidationMetrics


def require_reportable(trial: Trial) -> None:
    if trial.state.terminal:
        raise Conflict(
            f"trial {trial.id} is {trial.state.value}; an ended trial takes no more metrics"
        )


def report_metrics(
    db: Session,
    trial: Trial,
    kind: schemas.MetricsKind,
    reports: Sequence[schemas.TrialMetrics],
) -> int:
    """Store ``reports`` of one kind for ``trial`` (see the module docstring); returns how
    many rows were written or replaced. Does not commit."""
    if not reports:
        return 0
    require_reportable(trial)
    wanted: dict[tuple[int, int], tuple[dict[str, Any], int | None]] = {}
    for i, report in enumerate(reports):
        if report.trial_id is not None and report.trial_id != trial.id:
            raise APIError(
                f"{kind}Metrics[{i}].trialId is {report.trial_id}, but the path names trial "
                f"{trial.id}",
                status=400,
            )
        run = report.trial_run_id if report.trial_run_id is not None else trial.restarts
        wanted[(run, report.steps_completed)] = (
            report.metrics,  # NaN and infinities already by name (schemas._values.Metrics)
            report.num_inputs,
        )
    model = metrics_model(kind)
    batch_counts = sorted({batches for _, batches in wanted})
    now = utcnow()
    rows: list[dict[str, Any]] = []
    # In key order, so that two requests writing the same keys lock them in the same order
    # (PostgreSQL) instead of deadlocking.
    for (run, batches), (metrics, num_inputs) in sorted(wanted.items()):
        values: dict[str, Any] = {
            "trial_id": trial.id,
            "trial_run_id": run,
            "batches_trained": batches,
            "metrics": metrics,
            "end_time": now,
        }
        if model is ValidationMetrics:
            values["num_inputs"] = num_inputs
        rows.append(values)
    connection = db.connection()  # Core: rows of plain values, no ORM bookkeeping
    connection.execute(_upsert(db, model), rows)
    if model is TrainingMetrics:
        most = batch_counts[-1]
        connection.execute(_RAISE_BATCHES_TRAINED, {"trial": trial.id, "most": most})
        set_committed_value(trial, "batches_trained", max(trial.batches_trained, most))
    else:
        db.flush()
        for batches in batch_counts:
            _link_checkpoints(db, trial, batches)
    return len(wanted)


def validation_values(
    db: Session, trial_id: int, batches: int, names: Sequence[str]
) -> dict[str, float]:
    """The finite values of ``names`` in a trial's effective validation at ``batches`` (its
    latest run's), NaN for each one missing or not a finite number."""
    stored = db.execute(
        sa.select(ValidationMetrics.metrics)
        .where(
            ValidationMetrics.trial_id == trial_id,
            ValidationMetrics.batches_trained == batches,
        )
        .order_by(ValidationMetrics.trial_run_id.desc(), ValidationMetrics.id.desc())
        .limit(1)
    ).scalar()
    metrics = checkpoint_queries.unnested_metrics(stored)
    values = {name: finite_float(metrics.get(name)) for name in names}
    return {name: math.nan if value is None else value for name, value in values.items()}


# A trial's batches_trained only grows, whatever order its reports arrive in.
_RAISE_BATCHES_TRAINED = (
    sa.update(Trial)
    .where(Trial.id == sa.bindparam("trial"))
    .values(
        batches_trained=sa.case(
            (Trial.batches_trained < sa.bindparam("most"), sa.bindparam("most")),
            else_=Trial.batches_trained,
        )
    )
    .execution_options(synchronize_session=False)
)


def _upsert(db: Session, model: MetricsTable) -> Any:
    """``INSERT`` of rows of ``model`` that replaces the row already stored under the same
    (trial, trialRunId, batches) key: its metrics, end time and inputs."""
    return _upsert_statement(db.get_bind().dialect.name, model)


@functools.cache
def _upsert_statement(dialect: str, model: MetricsTable) -> Any:
    # Built once per dialect and table: statements are immutable, and building this one
    # (its ``excluded`` columns) costs more than executing it.
    insert: Any = postgresql.insert(model) if dialect == "postgresql" else sqlite.insert(model)
    replaced: dict[str, Any] = {
        "metrics": insert.excluded.metrics,
        "end_time": insert.excluded.end_time,
    }
    if model is ValidationMetrics:
        replaced["num_inputs"] = insert.excluded.num_inputs
    return insert.on_conflict_do_update(
        index_elements=[model.trial_id, model.trial_run_id, model.batches_trained],
        set_=replaced,
    )


def _link_checkpoints(db: Session, trial: Trial, batches: int) -> None:
    query = (
        sa.select(ValidationMetrics)
        .where(ValidationMetrics.trial_id == trial.id, ValidationMetrics.batches_trained == batches)
        .order_by(ValidationMetrics.trial_run_id.desc(), ValidationMetrics.id.desc())
        .limit(1)
    )
    latest = db.scalar(query)
    if latest is not None:
        checkpoint_queries.link_validation(db, latest)


def effective_rows(model: MetricsTable, where: sa.ColumnElement[bool]) -> sa.Select[Any]:
    """Rows of ``model`` matching ``where``, one per (trial, batch count): the latest run's."""
    rank = (
        sa.func.row_number()
        .over(
            partition_by=(model.trial_id, model.batches_trained),
            order_by=(model.trial_run_id.desc(), model.id.desc()),
        )
        .label("rank")
    )
    ranked = sa.select(model.id.label("row_id"), rank).where(where).subquery()
    return (
        sa.select(model)
        .join(ranked, ranked.c.row_id == model.id)
        .where(ranked.c.rank == 1)
        .order_by(model.trial_id, model.batches_trained)
    )


#: A page of metrics holds at most this many rows, and ends before the row that would take
#: its stored JSON past ``PAGE_BYTES`` (it always holds one): a report may hold 16 MiB,
#: and a read of every row at once could take the master's memory. Readers follow
#: ``pagination.endIndex`` until ``total``, whatever ``limit`` they asked for.
PAGE_ROWS = 10_000
PAGE_BYTES = 8 << 20


def list_metrics(
    db: Session,
    kind: schemas.MetricsKind,
    trial_ids: sa.ColumnElement[bool] | Sequence[int],
    offset: int = 0,
    limit: int = 0,
) -> tuple[list[schemas.MetricsRow], Pagination]:
    """One page of effective rows for the given trial ids (or a subquery condition), capped
    by ``PAGE_ROWS`` and ``PAGE_BYTES``."""
    model = metrics_model(kind)
    where = model.trial_id.in_(list(trial_ids)) if isinstance(trial_ids, Sequence) else trial_ids
    statement: Any = effective_rows(model, where).with_only_columns(
        model.id, maintain_column_froms=True
    )
    page = PAGE_ROWS if limit <= 0 else min(limit, PAGE_ROWS)
    ids: list[int]
    ids, pagination = paginate(db, statement, offset, page)
    pagination.limit = limit
    if ids:
        size = sa.func.length(sa.cast(model.metrics, sa.Text))
        query = sa.select(model.id, size).where(model.id.in_(ids))
        sizes: dict[int, int | None] = {row[0]: row[1] for row in db.execute(query)}
        held, kept = 0, 0
        for row_id in ids:
            held += int(sizes.get(row_id) or 0)
            if kept and held > PAGE_BYTES:
                break
            kept += 1
        ids = ids[:kept]
    found: Sequence[Any] = db.scalars(sa.select(model).where(model.id.in_(ids))).all()
    rows: dict[int, TrainingMetrics | ValidationMetrics] = {row.id: row for row in found}
    pagination.end_index = pagination.start_index + len(ids)
    return [metrics_row_wire(rows[row_id]) for row_id in ids], pagination


def metrics_row_wire(row: TrainingMetrics | ValidationMetrics) -> schemas.MetricsRow:
    return schemas.MetricsRow(
        trial_id=row.trial_id,
        trial_run_id=row.trial_run_id,
        steps_completed=row.batches_trained,
        metrics=dict(row.metrics or {}),
        num_inputs=row.num_inputs if isinstance(row, ValidationMetrics) else None,
        end_time=row.end_time,
    )


#: ``maxPoints`` bounds. A series keeps its first and last point, its minimum and its
#: maximum: four points at least; more than 10,000 is wider than any chart.
MIN_POINTS = 4
MAX_POINTS = 10_000
_SCAN_ROWS = 10_000  # rows read (and parsed) at a time by a downsampling scan
_STEPS_PER_QUERY = 500  # batch counts per IN list when the kept rows are read back
_NUMBER_TYPES = frozenset({int, float})


def downsampled_metrics(
    db: Session,
    kind: schemas.MetricsKind,
    trials: sa.ColumnElement[bool],
    max_points: int,
    offset: int = 0,
    limit: int = 0,
) -> tuple[list[schemas.MetricsRow], Pagination]:
    """The downsampled series (module docstring) of the trials matching ``trials`` (a
    condition on ``Trial``), ordered by trial id then batch count; ``offset`` and ``limit``
    page through those rows as ``paginate`` pages a query's."""
    if not MIN_POINTS <= max_points <= MAX_POINTS:
        raise ValueError(f"max_points must lie in {MIN_POINTS}..{MAX_POINTS}")
    model = metrics_model(kind)
    rows: list[schemas.MetricsRow] = []
    for bounds in db.execute(_bounds(model, trials)).all():
        if not bounds.rows:
            continue
        chosen = None if bounds.rows <= max_points else _choose(db, model, bounds, max_points)
        rows.extend(_kept_rows(db, model, bounds.trial_id, chosen))
    return page_list(rows, offset, limit)


def _bounds(model: MetricsTable, trials: sa.ColumnElement[bool]) -> sa.Select[Any]:
    """Per trial: its rows, first and last batch count, and whether it has rows of more
    than one run (index lookups only)."""

    def of_trial(aggregate: sa.ColumnElement[Any]) -> sa.ScalarSelect[Any]:
        return sa.select(aggregate).where(model.trial_id == Trial.id).scalar_subquery()

    return (
        sa.select(
            Trial.id.label("trial_id"),
            of_trial(sa.func.count(model.id)).label("rows"),
            of_trial(sa.func.min(model.batches_trained)).label("first"),
            of_trial(sa.func.max(model.batches_trained)).label("last"),
            of_trial(sa.func.min(model.trial_run_id)).label("first_run"),
            of_trial(sa.func.max(model.trial_run_id)).label("last_run"),
        )
        .where(trials)
        .order_by(Trial.id)
    )


def _choose(db: Session, model: MetricsTable, bounds: Any, max_points: int) -> dict[int, set[str]]:
    """Which series keep a point at which batch count, from one scan of the trial's rows in
    batch order, each page cut where its buckets meet."""
    buckets = (max_points - 2) // 2
    first, span = bounds.first, bounds.last - bounds.first + 1
    picker = _Picker()
    for steps, texts in _scan(db, model, bounds):
        done = 0
        while done < len(steps):
            bucket = (steps[done] - first) * buckets // span
            next_first = first + -(-(bucket + 1) * span // buckets)  # rounded up
            end = bisect.bisect_left(steps, next_first, done)
            picker.add(bucket, steps[done:end], texts[done:end])
            done = end
    return picker.chosen()


# Joins a page's metrics texts: U+001E cannot occur in JSON text (in a string it is escaped).
_SEPARATOR = "\x1e"


def _scan(db: Session, model: MetricsTable, bounds: Any) -> Iterator[tuple[list[int], list[str]]]:
    """The trial's effective rows' batch counts and metrics JSON text, in batch order, a
    page at a time.

    The database joins a page into two strings, so no row becomes a Python object but its
    text (which the garbage collector does not track); the JSON is parsed a bucket at a time
    (``_Picker.add``), so its objects die young. Both cost a fraction of fetching rows."""
    where = [model.trial_id == bounds.trial_id]
    if bounds.first_run != bounds.last_run:
        # The effective row of a batch count is its latest run's; (trial, run, batches)
        # is unique, so no other row ties with it.
        later = sa.orm.aliased(model)
        where.append(
            ~sa.exists().where(
                later.trial_id == model.trial_id,
                later.batches_trained == model.batches_trained,
                later.trial_run_id > model.trial_run_id,
            )
        )
    join = (
        sa.func.string_agg if db.get_bind().dialect.name == "postgresql" else sa.func.group_concat
    )
    after = bounds.first - 1
    while True:
        page = (
            sa.select(
                model.batches_trained.label("step"), sa.cast(model.metrics, sa.Text).label("text")
            )
            .where(*where, model.batches_trained > after)
            .order_by(model.batches_trained)
            .limit(_SCAN_ROWS)
            .subquery()
        )
        joined = sa.select(join(sa.cast(page.c.step, sa.Text), ","), join(page.c.text, _SEPARATOR))
        steps_text, texts_text = db.execute(joined).one()
        if steps_text is None:
            return
        steps = list(map(int, steps_text.split(",")))
        texts = texts_text.split(_SEPARATOR)
        if len(texts) != len(steps) or steps != sorted(steps):
            # A text holding the separator (hand-edited), or a join in another order.
            rows = db.execute(sa.select(page.c.step, page.c.text).order_by(page.c.step)).all()
            steps, texts = [row[0] for row in rows], [row[1] for row in rows]
        yield steps, texts
        after = steps[-1]


class _Picker:
    """The points kept so far: each bucket's extremes per series, and each series' first
    and last point. A bucket comes in one or more pieces, in batch order."""

    def __init__(self) -> None:
        self._kept: dict[int, set[str]] = {}
        self._first: dict[str, int] = {}
        self._last: dict[str, int] = {}
        self._bucket = -1
        self._low: dict[str, tuple[Any, int]] = {}  # the bucket's (value, batches) so far
        self._high: dict[str, tuple[Any, int]] = {}

    def add(self, bucket: int, steps: list[int], texts: list[str]) -> None:
        """A piece of ``bucket``: its rows' batch counts (ascending) and metrics JSON."""
        if bucket != self._bucket:
            self._close_bucket()
            self._bucket = bucket
        try:
            parsed = json.loads("[" + ",".join(texts) + "]")
        except ValueError:
            parsed = None
        if not isinstance(parsed, list) or len(parsed) != len(texts):
            parsed = [_loads(text) for text in texts]  # a row a hand-edited database spoiled
        values = [
            m if type(m) is dict and "validation_metrics" not in m else _series_of(m)
            for m in parsed
        ]
        for name in set().union(*values):
            column = list(map(dict.get, values, itertools.repeat(name)))  # C loops
            points = _finite(column)
            if not points:
                continue
            value_at: Callable[[int], Any] = column.__getitem__
            low, high = min(points, key=value_at), max(points, key=value_at)
            # Strict comparisons: on a tie the earlier piece's point stays.
            if name not in self._low or column[low] < self._low[name][0]:
                self._low[name] = (column[low], steps[low])
            if name not in self._high or column[high] > self._high[name][0]:
                self._high[name] = (column[high], steps[high])
            self._first.setdefault(name, steps[points[0]])
            self._last[name] = steps[points[-1]]

    def _close_bucket(self) -> None:
        for extremes in (self._low, self._high):
            for name, (_, step) in extremes.items():
                self._kept.setdefault(step, set()).add(name)
            extremes.clear()

    def chosen(self) -> dict[int, set[str]]:
        self._close_bucket()
        for ends in (self._first, self._last):
            for name, step in ends.items():
                self._kept.setdefault(step, set()).add(name)
        return self._kept


def _finite(column: list[Any]) -> Sequence[int]:
    """The indices of ``column``'s finite numbers."""
    if _NUMBER_TYPES.issuperset(map(type, column)):
        try:
            if math.isfinite(sum(column)):  # no NaN, no infinity (C loops, the usual case)
                return range(len(column))
        except OverflowError:  # an integer past a double's range: the slow way below
            pass
    return [i for i, value in enumerate(column) if finite_float(value) is not None]


def _loads(text: Any) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return None


def _series_of(metrics: Any) -> dict[str, Any]:
    """A row's series values: its metrics, or their ``validation_metrics`` object."""
    if not isinstance(metrics, dict):
        return {}
    nested = metrics.get("validation_metrics")
    return nested if isinstance(nested, dict) else metrics


def _kept_rows(
    db: Session, model: MetricsTable, trial_id: int, chosen: dict[int, set[str]] | None
) -> list[schemas.MetricsRow]:
    """The effective rows at the chosen batch counts (every row when ``chosen`` is None),
    each carrying the values of the series that keep a point there."""
    table = model.__table__
    columns = [c for c in table.c if c.name != "metrics"]
    # The metrics as text, parsed here: a row that is not JSON then spoils only itself.
    query = sa.select(*columns, sa.cast(table.c.metrics, sa.Text).label("metrics"))
    query = query.where(table.c.trial_id == trial_id)
    query = query.order_by(table.c.batches_trained, table.c.trial_run_id, table.c.id)
    if chosen is None:
        results: Iterable[Any] = [db.execute(query)]
    else:
        steps = sorted(chosen)
        chunks = (steps[i : i + _STEPS_PER_QUERY] for i in range(0, len(steps), _STEPS_PER_QUERY))
        results = (db.execute(query.where(table.c.batches_trained.in_(c))) for c in chunks)
    # In run order, so a batch count's effective row is the one left.
    effective = {row.batches_trained: row for result in results for row in result}
    out = []
    for step, row in effective.items():
        metrics = _loads(row.metrics)
        values = _series_of(metrics)
        names = chosen[step] if chosen is not None else values
        kept = {name: values[name] for name in names if finite_float(values.get(name)) is not None}
        if not kept:
            continue
        if values is not metrics:
            kept = {"validation_metrics": kept}
        out.append(
            schemas.MetricsRow(
                trial_id=row.trial_id,
                trial_run_id=row.trial_run_id,
                steps_completed=step,
                metrics=kept,
                num_inputs=row.num_inputs if model is ValidationMetrics else None,
                end_time=row.end_time,
            )
        )
    return out


def add_logs(db: Session, trial: Trial, entries: Sequence[schemas.TrialLogEntry]) -> int:
    if not entries:
        return 0
    now = utcnow()
    rows = [
        {
            "trial_id": trial.id,
            "message": entry.message,
            "level": entry.level,
            "rank": entry.rank,
            "timestamp": entry.timestamp or now,
            # The run the lines belong to: a stale run's are refused before they get here.
            "trial_run_id": trial.restarts,
        }
        for entry in entries
    ]
    db.connection().execute(sa.insert(TrialLog), rows)  # Core: no ORM bookkeeping per line
    return len(rows)


def log_wire(row: TrialLog) -> schemas.TrialLog:
    return schemas.TrialLog(
        id=row.id,
        trial_id=row.trial_id,
        message=row.message,
        level=row.level,
        rank=row.rank,
        timestamp=row.timestamp,
        trial_run_id=row.trial_run_id,
    )
