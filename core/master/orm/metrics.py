"""Training and validation metrics, and trial logs: the append-only, high-volume tables.

Rows are read back per trial in batch order (``trial_id, batches_trained``) or in insertion
order for logs (``trial_id, id``), so those are the indexes. ``trial_run_id`` is the trial's
restart count when the row was reported: after a restart from an older checkpoint, readers
keep the latest run's rows for a batch number. (trial, trialRunId, batches) is unique in each
metrics table (migration 0002): reports upsert on it, so that repeats racing each other
leave one row (``detlite.master.queries.metrics``).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from detlite.master.orm.base import SQLITE_AUTOINCREMENT, Base, BigIntPK, utcnow

__all__ = ["TrainingMetrics", "TrialLog", "ValidationMetrics"]


class _MetricsRow:
    """Columns shared by the two metrics tables."""

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    trial_id: Mapped[int] = mapped_column(sa.ForeignKey("trials.id", ondelete="CASCADE"))
    trial_run_id: Mapped[int] = mapped_column(default=0)
    batches_trained: Mapped[int]
    metrics: Mapped[dict[str, Any]]
    start_time: Mapped[dt.datetime | None]
    end_time: Mapped[dt.datetime] = mapped_column(default=utcnow)


class TrainingMetrics(_MetricsRow, Base):
    """The metrics of one scheduling unit of training (averaged per batch, or per batch)."""

    __tablename__ = "training_metrics"
    __table_args__ = (
        sa.Index(None, "trial_id", "batches_trained"),
        sa.Index(None, "trial_id", "trial_run_id", "batches_trained", unique=True),
        SQLITE_AUTOINCREMENT,
    )


class ValidationMetrics(_MetricsRow, Base):
    """One validation's metrics; ``num_inputs`` is how many records it averaged over."""

    __tablename__ = "validation_metrics"
    __table_args__ = (
        sa.Index(None, "trial_id", "batches_trained"),
        sa.Index(None, "trial_id", "trial_run_id", "batches_trained", unique=True),
        SQLITE_AUTOINCREMENT,
    )

    num_inputs: Mapped[int | None]


class TrialLog(Base):
    __tablename__ = "trial_logs"
    __table_args__ = (sa.Index(None, "trial_id", "id"), SQLITE_AUTOINCREMENT)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    trial_id: Mapped[int] = mapped_column(sa.ForeignKey("trials.id", ondelete="CASCADE"))
    timestamp: Mapped[dt.datetime] = mapped_column(default=utcnow)
    level: Mapped[str | None] = mapped_column(sa.String(16))
    message: Mapped[str] = mapped_column(sa.Text)
    rank: Mapped[int | None]
    # The trial's run (restart count) when the line was stored; None before migration 0005.
    trial_run_id: Mapped[int | None]
