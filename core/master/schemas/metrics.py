"""Metrics and trial log bodies: what workers report and what readers get back.

A report (Determined's trialv1.TrialMetrics)::

    {"trialRunId": 0, "stepsCompleted": 100, "metrics": {"loss": 0.25}, "numInputs": 64}

``stepsCompleted`` is the trial's total batches trained at the report; ``trialRunId`` is the
trial's restart count when the worker started (default: the trial's current ``restarts``).
``metrics`` must be a JSON object; its values may be any JSON within the rules of
``schemas._values``, and NaN or +-Infinity, which are stored (and returned) as null: JSON
has neither. Counts are bounded to 32-bit integers, the columns' size. A log line keeps its
text; its NUL characters and lone surrogates become U+FFFD.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints, field_validator, model_validator

from detlite.master.schemas._values import (
    INT32_MAX,
    Count,
    DbId,
    LogText,
    Metrics,
    RequestModel,
    StoredJSON,
    StoredText,
)
from detlite.master.schemas.base import WireModel
from detlite.master.schemas.common import Pagination

__all__ = [
    "INT32_MAX",
    "MAX_LOGS_PER_REQUEST",
    "MAX_REPORTS_PER_REQUEST",
    "BatchMetricsRequest",
    "BatchMetricsResponse",
    "Count",
    "GetMetricsResponse",
    "GetTrialLogsResponse",
    "MetricsKind",
    "MetricsRow",
    "PostTrialLogsRequest",
    "PostTrialLogsResponse",
    "ReportMetricsResponse",
    "TrainingMetricsRequest",
    "TrialLog",
    "TrialLogEntry",
    "TrialMetrics",
    "ValidationMetricsRequest",
]

MAX_REPORTS_PER_REQUEST = 10_000
MAX_LOGS_PER_REQUEST = 10_000

MetricsKind = Literal["training", "validation"]


class TrialMetrics(RequestModel):
    trial_id: DbId | None = Field(default=None, description="if given, must match the path")
    trial_run_id: Count | None = None
    steps_completed: Count
    metrics: Metrics
    num_inputs: Count | None = None


def _unwrap(data: Any, key: str) -> Any:
    # Determined's gateway took the TrialMetrics itself as the body; the brief's shape
    # wraps it. Accept both.
    if isinstance(data, dict) and key not in data and "metrics" in data:
        return {key: data}
    return data


class TrainingMetricsRequest(RequestModel):
    training_metrics: TrialMetrics

    @model_validator(mode="before")
    @classmethod
    def _bare(cls, data: Any) -> Any:
        return _unwrap(data, "trainingMetrics")


class ValidationMetricsRequest(RequestModel):
    validation_metrics: TrialMetrics

    @model_validator(mode="before")
    @classmethod
    def _bare(cls, data: Any) -> Any:
        return _unwrap(data, "validationMetrics")


class BatchMetricsRequest(RequestModel):
    training_metrics: list[TrialMetrics] = Field(
        default_factory=list, max_length=MAX_REPORTS_PER_REQUEST
    )
    validation_metrics: list[TrialMetrics] = Field(
        default_factory=list, max_length=MAX_REPORTS_PER_REQUEST
    )


class ReportMetricsResponse(WireModel):
    pass


class BatchMetricsResponse(WireModel):
    """How many reports of each kind were stored (repeats count: they replaced a row)."""

    training: int
    validation: int


class MetricsRow(WireModel):
    trial_id: int
    trial_run_id: int
    steps_completed: int
    metrics: StoredJSON
    num_inputs: int | None = None
    end_time: dt.datetime


class GetMetricsResponse(WireModel):
    metrics: list[MetricsRow]
    pagination: Pagination


#: A log line's time, in UTC, lies between these: a session in any time zone can then read
#: it back (year 1 at +14:00 is before the first day Python or PostgreSQL can show).
EARLIEST_TIME = dt.datetime(1, 1, 2, tzinfo=dt.timezone.utc)
LATEST_TIME = dt.datetime(9999, 12, 30, tzinfo=dt.timezone.utc)


def _as_utc(value: dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)  # a naive time is taken as UTC
    try:
        in_range = EARLIEST_TIME <= value.astimezone(dt.timezone.utc) <= LATEST_TIME
    except OverflowError:
        in_range = False
    if not in_range:
        raise ValueError(f"must lie between {EARLIEST_TIME.date()} and {LATEST_TIME.date()} (UTC)")
    return value


class TrialLogEntry(RequestModel):
    message: Annotated[LogText, StringConstraints(max_length=1_000_000)]
    level: Annotated[str, StringConstraints(max_length=16)] | None = None
    rank: Count | None = None
    timestamp: dt.datetime | None = None

    @field_validator("timestamp")
    @classmethod
    def _utc(cls, value: dt.datetime | None) -> dt.datetime | None:
        return _as_utc(value)


class PostTrialLogsRequest(RequestModel):
    logs: list[TrialLogEntry] = Field(max_length=MAX_LOGS_PER_REQUEST)


class PostTrialLogsResponse(WireModel):
    count: int


class TrialLog(WireModel):
    id: int
    trial_id: int
    message: StoredText
    level: StoredText | None
    rank: int | None
    timestamp: dt.datetime
    #: The trial's run (restart count) the line came from; None for lines stored before runs
    #: were recorded.
    trial_run_id: int | None = None


class GetTrialLogsResponse(WireModel):
    logs: list[TrialLog]
    pagination: Pagination
