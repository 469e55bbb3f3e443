"""Experiments and their trials.

An experiment keeps everything needed to resume it after a master restart: the validated
config, the context archive (a blob in the database, or a path in checkpoint storage when it
is kept outside), and the searcher's state as JSON. A trial keeps what a restarted worker
needs: its hparams, seed, restarts so far, batches trained and warm-start checkpoint.

A trial also keeps the scheduler's run-time state (migration 0002), so that a restarted
master carries on exactly where the last one stopped (``detlite.master.scheduler``):

- the searcher's work for it: ``pending_ops`` (VALIDATE_AFTER operations not yet completed,
  in order, each ``{"units", "batches"}``), ``close_requested`` (the searcher closed it:
  CLOSE once ``pending_ops`` is empty), ``completed_batches`` (the length of the last
  completed operation; a repeated completion at or below it is ignored), and
  ``early_exit_reason`` (the worker reported an early exit);
- ``searcher_done``: the searcher has been told that the trial ended (closed or exited);
- its current worker group, if any: ``allocation_id`` (a uuid per launch; the protocol
  endpoints refuse any other), ``allocation_handle`` (the resource manager's handle),
  ``allocation_pids`` (the processes, when the resource manager tells them, so that a
  restarted master can stop a crashed one's workers), ``allocation_answers`` (the operation
  answer fixed for each ``after`` the group asked about, so that every rank sees the same
  sequence), ``allocation_stop`` (the group was told to stop, by CLOSE or preemption, so
  exiting 0 is expected) and ``allocation_start_time``. The worker group's token is bound to
  ``allocation_id`` (``Token.allocation_id``): once the trial has another allocation, or
  none, every request of the old group is refused (410) and nothing of it is stored.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, deferred, mapped_column, relationship

from detlite.api.enums import ExperimentState
from detlite.master.orm.base import SQLITE_AUTOINCREMENT, Base, state_type, utcnow
from detlite.master.orm.users import User

__all__ = ["Experiment", "Trial"]


class Experiment(Base):
    __tablename__ = "experiments"
    # What listings filter and sort on, with the id, so an index alone answers them (0006).
    __table_args__ = (
        sa.Index(None, "state", "archived", "id"),
        sa.Index(None, "owner_id", "id"),
        sa.Index(None, "start_time", "id"),
        sa.Index(None, "end_time", "id"),
        sa.Index(None, "progress", "id"),
        # SQLite only: PostgreSQL's btree keys stop at 2.7 kB (descriptions do not), so
        # there it is empty (WHERE false); migration 0006 says why SQLite needs it.
        sa.Index(None, "description", "id", "archived", "state", postgresql_where=sa.false()),
        SQLITE_AUTOINCREMENT,
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    owner_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"))
    config: Mapped[dict[str, Any]]
    state: Mapped[ExperimentState] = mapped_column(
        state_type(ExperimentState), default=ExperimentState.ACTIVE
    )
    archived: Mapped[bool] = mapped_column(default=False)
    description: Mapped[str] = mapped_column(sa.Text, default="")
    labels: Mapped[list[str]] = mapped_column(default=list)
    notes: Mapped[str] = mapped_column(sa.Text, default="")
    # The packed context directory (<= 96 MB): deferred so listing experiments never loads it.
    context_archive: Mapped[bytes | None] = deferred(mapped_column(sa.LargeBinary))
    context_path: Mapped[str | None] = mapped_column(sa.String(1024))
    progress: Mapped[float | None]
    searcher_state: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)
    start_time: Mapped[dt.datetime] = mapped_column(default=utcnow)
    end_time: Mapped[dt.datetime | None]

    owner: Mapped[User] = relationship()
    trials: Mapped[list[Trial]] = relationship(
        back_populates="experiment",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="Trial.id",
    )

    def __repr__(self) -> str:
        return f"Experiment(id={self.id}, state={self.state.value})"


class Trial(Base):
    __tablename__ = "trials"
    __table_args__ = (
        sa.UniqueConstraint("experiment_id", "request_id"),
        sa.Index(None, "experiment_id", "state"),
        SQLITE_AUTOINCREMENT,
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    experiment_id: Mapped[int] = mapped_column(sa.ForeignKey("experiments.id", ondelete="CASCADE"))
    # The searcher's id for the trial (its create operation), stable across master restarts.
    request_id: Mapped[str] = mapped_column(sa.String(64))
    hparams: Mapped[dict[str, Any]]
    state: Mapped[ExperimentState] = mapped_column(
        state_type(ExperimentState), default=ExperimentState.ACTIVE
    )
    restarts: Mapped[int] = mapped_column(default=0)
    batches_trained: Mapped[int] = mapped_column(default=0)
    seed: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    # Not a foreign key: the checkpoint may belong to another experiment, or be deleted later.
    warm_start_checkpoint_uuid: Mapped[str | None] = mapped_column(sa.String(36))
    start_time: Mapped[dt.datetime] = mapped_column(default=utcnow)
    # When its workers were first launched (migration 0005); start_time is its creation.
    launch_time: Mapped[dt.datetime | None]
    end_time: Mapped[dt.datetime | None]
    # Where the trial's latest workers ran, as their resource manager told the scheduler:
    # the nodes (comma-separated), each rank's device, and per rank in full (migration 0003).
    node: Mapped[str | None] = mapped_column(sa.String(255))
    devices: Mapped[list[str] | None] = mapped_column(sa.JSON)
    placement: Mapped[list[dict[str, Any]] | None] = mapped_column(sa.JSON)
    resource_manager: Mapped[str | None] = mapped_column(sa.String(64))
    # The scheduler's run-time state (see the module docstring).
    pending_ops: Mapped[list[dict[str, Any]] | None] = mapped_column(sa.JSON)
    # Server defaults too: migration 0002 added these NOT NULL columns to existing rows.
    close_requested: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    completed_batches: Mapped[int] = mapped_column(default=0, server_default=sa.text("0"))
    early_exit_reason: Mapped[str | None] = mapped_column(sa.String(32))
    searcher_done: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    allocation_id: Mapped[str | None] = mapped_column(sa.String(36), index=True)
    allocation_handle: Mapped[str | None] = mapped_column(sa.String(255))
    allocation_pids: Mapped[list[int] | None] = mapped_column(sa.JSON)
    allocation_answers: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)
    allocation_stop: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    allocation_start_time: Mapped[dt.datetime | None]

    experiment: Mapped[Experiment] = relationship(back_populates="trials")

    def __repr__(self) -> str:
        return f"Trial(id={self.id}, experiment_id={self.experiment_id})"
