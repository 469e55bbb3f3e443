"""Checkpoints: one row per saved checkpoint directory, keyed by its uuid.

``files`` maps each relative path to ``{"size": bytes, "sha256": hex}`` so that a download can
verify every file. ``experiment_id`` repeats the trial's experiment because checkpoints are
listed per experiment far more often than they are joined. ``validation_id`` links the
validation run at the same batch (its metrics are the checkpoint's ``metrics``) and
``searcher_metric`` copies the searcher's metric from it, so sorting needs no JSON access.
``storage_id`` names where the files live: the storage backend and its location, as the
storage layer writes it (for example ``shared_fs:/data/checkpoints``).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from detlite.api.enums import CheckpointState
from detlite.master.orm.base import Base, state_type, utcnow

__all__ = ["Checkpoint"]


class Checkpoint(Base):
    __tablename__ = "checkpoints"
    __table_args__ = (
        sa.Index(None, "experiment_id", "state"),
        sa.Index(None, "trial_id", "batches_trained"),
    )

    uuid: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    trial_id: Mapped[int] = mapped_column(sa.ForeignKey("trials.id", ondelete="CASCADE"))
    experiment_id: Mapped[int] = mapped_column(sa.ForeignKey("experiments.id", ondelete="CASCADE"))
    batches_trained: Mapped[int]
    state: Mapped[CheckpointState] = mapped_column(
        state_type(CheckpointState), default=CheckpointState.ACTIVE
    )
    files: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # "metadata" is reserved on declarative classes, so the attribute has a trailing underscore.
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    framework: Mapped[str] = mapped_column(sa.String(64), default="")
    format: Mapped[str] = mapped_column(sa.String(64), default="")
    detlite_version: Mapped[str] = mapped_column(sa.String(64), default="")
    validation_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("validation_metrics.id", ondelete="SET NULL")
    )
    searcher_metric: Mapped[float | None]
    storage_id: Mapped[str | None] = mapped_column(sa.String(1024))
    start_time: Mapped[dt.datetime] = mapped_column(default=utcnow)
    end_time: Mapped[dt.datetime | None]

    def __repr__(self) -> str:
        return f"Checkpoint(uuid={self.uuid!r}, trial_id={self.trial_id})"
