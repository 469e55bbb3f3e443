"""``TrialReference``: one trial on the master, by id (determined-api.md 1.7).

Building a reference makes no request. Decisions:

- ``select_checkpoint`` keeps the reference's argument rules, raising
  ``InvalidCheckpointSelection`` (a ``ValueError``) instead of a bare ``AssertionError``:
  exactly one of ``latest``, ``best`` and ``uuid``; ``sort_by``/``smaller_is_better`` only
  with ``best=True``. The rule that the two must be given together is replaced by
  improvement 6, as for experiments: ``sort_by`` alone ranks in the config's direction, and
  ``smaller_is_better`` alone is ignored with a warning.
- ``latest`` and ``best`` choose among COMPLETED checkpoints only (improvement 7): the
  reference could hand back a checkpoint that was still being written, had failed or had
  been garbage-collected. ``latest`` is the one with the most batches trained.
- ``uuid`` fetches that checkpoint whatever its state, but it must belong to this trial (the
  reference returned any checkpoint, silently); otherwise ``NoCheckpointFound``.
- ``iter_metrics``/``get_metrics`` (new) read the trial's training or validation reports from
  ``GET /api/v1/trials/{id}/metrics?kind=...`` page by page, as the master keeps them (the
  latest run's row per batch count, in batch order): dicts with ``trialId``,
  ``trialRunId``, ``stepsCompleted``, ``metrics``, ``numInputs`` and ``endTime``.
- ``iter_logs`` (new) reads the trial's log lines from ``GET /api/v1/trials/{id}/logs``
  page by page, following ``pagination.endIndex`` until ``total`` (the master caps each
  page at 10,000 lines and 1 MiB of text): dicts with ``id``, ``trialId``, ``message``,
  ``level``, ``rank`` and ``timestamp``. ``logs`` yields their messages, as Determined's
  ``TrialReference.logs`` did; ``follow=True`` keeps polling until the trial has ended and
  every line has been read.
- No candidate is ``NoCheckpointFound`` (a ``CheckpointNotFound`` that is also the
  reference's ``AssertionError``); an unknown metric is ``MetricNotFound``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Literal

from detlite.api.enums import CheckpointState, ExperimentState
from detlite.errors import InvalidCheckpointSelection, NoCheckpointFound
from detlite.experimental._selection import (
    completed,
    rank,
    resolve_metric,
)

if TYPE_CHECKING:
    from detlite.api import Session
    from detlite.experimental._checkpoint import Checkpoint

__all__ = ["TrialReference"]

# The trial checkpoint listing's sort enum: BATCH_NUMBER (determined-api.md section 2).
SORT_BY_BATCH_NUMBER = 6
ORDER_BY_DESC = 2

MetricsKind = Literal["training", "validation"]


class TrialReference:
    """A trial on the master. ``id`` is its id; ``_master`` the session to the master."""

    def __init__(self, trial_id: int, master: Session) -> None:
        self.id = int(trial_id)
        self._master = master

    def __repr__(self) -> str:
        return f"Trial(id={self.id})"

    @property
    def _path(self) -> str:
        return f"/api/v1/trials/{self.id}"

    def kill(self) -> None:
        self._master.post(f"{self._path}/kill")

    def iter_metrics(
        self, kind: MetricsKind = "training", page_size: int = 1000
    ) -> Iterator[dict[str, Any]]:
        """The trial's ``kind`` metrics reports, in batch order, fetched ``page_size`` at a time."""
        return iter_metric_rows(self._master, self.id, kind, page_size)

    def get_metrics(self, kind: MetricsKind = "training") -> list[dict[str, Any]]:
        """Every ``kind`` metrics report of the trial (see ``iter_metrics``)."""
        return list(self.iter_metrics(kind))

    def iter_logs(self, offset: int = 0) -> Iterator[dict[str, Any]]:
        """The trial's log lines from line ``offset`` to the latest, one capped page at a time.

        Lines come in the order the master received them, each exactly once: the caller's
        next ``offset`` is this one plus the lines it was given.
        """
        if offset < 0:
            raise ValueError(f"offset must be 0 or more (got {offset})")
        while True:
            answer = self._master.get(f"{self._path}/logs", params={"offset": offset})
            lines: list[dict[str, Any]] = answer["logs"]
            yield from lines
            offset = int(answer["pagination"]["endIndex"])
            if not lines or offset >= int(answer["pagination"]["total"]):
                return

    def logs(self, follow: bool = False, interval: float = 1.0) -> Iterator[str]:
        """The messages of the trial's log lines; ``follow`` waits for more until it ends."""
        if interval <= 0:
            raise ValueError(f"interval must be positive (got {interval})")
        read = 0
        while True:
            # Asked before reading, so the round after the end still reads the last lines.
            ended = not follow or self._ended()
            for line in self.iter_logs(read):
                read += 1
                yield str(line["message"])
            if ended:
                return
            time.sleep(interval)

    def _ended(self) -> bool:
        state = ExperimentState.parse(self._master.get(self._path)["trial"]["state"])
        return state.terminal or state is ExperimentState.DELETE_FAILED

    def _completed_checkpoints(self) -> list[dict[str, Any]]:
        params = {
            "sort_by": SORT_BY_BATCH_NUMBER,
            "order_by": ORDER_BY_DESC,
            "states": CheckpointState.COMPLETED.number,
            "limit": 0,
        }
        answer = self._master.get(f"{self._path}/checkpoints", params=params)
        return completed(answer["checkpoints"])

    def select_checkpoint(
        self,
        latest: bool = False,
        best: bool = False,
        uuid: str | None = None,
        sort_by: str | None = None,
        smaller_is_better: bool | None = None,
    ) -> Checkpoint:
        """The trial's latest or best COMPLETED checkpoint, or its checkpoint ``uuid``."""
        from detlite.experimental._checkpoint import Checkpoint

        if sum([bool(latest), bool(best), uuid is not None]) != 1:
            raise InvalidCheckpointSelection("Exactly one of latest, best, or uuid must be set")
        if (sort_by is not None or smaller_is_better is not None) and not best:
            raise InvalidCheckpointSelection(
                "sort_by and smaller_is_better choose the best checkpoint: pass them with best=True"
            )
        what = f"trial {self.id}"
        if uuid is not None:
            found = self._master.get(f"/api/v1/checkpoints/{uuid}")["checkpoint"]
            if int(found["trialId"]) != self.id:
                raise NoCheckpointFound(
                    f"checkpoint {uuid} belongs to trial {found['trialId']}, not to {what}"
                )
            return Checkpoint.from_json(found, self._master)
        checkpoints = self._completed_checkpoints()
        if not checkpoints:
            raise NoCheckpointFound(f"No checkpoint found for {what}")
        if latest:
            newest = max(checkpoints, key=lambda c: int(c.get("batchNumber") or 0))
            return Checkpoint.from_json(newest, self._master)
        config = checkpoints[0].get("experimentConfig")
        metric, smaller = resolve_metric(sort_by, smaller_is_better, lambda: config, what)
        return Checkpoint.from_json(rank(checkpoints, metric, smaller, what)[0], self._master)

    def top_checkpoint(
        self, sort_by: str | None = None, smaller_is_better: bool | None = None
    ) -> Checkpoint:
        """``select_checkpoint(best=True, ...)``."""
        return self.select_checkpoint(
            best=True, sort_by=sort_by, smaller_is_better=smaller_is_better
        )


def iter_metric_rows(
    master: Session, trial_id: int, kind: MetricsKind, page_size: int = 1000
) -> Iterator[dict[str, Any]]:
    """Trial ``trial_id``'s ``kind`` metrics rows, in batch order, page by page (the master
    may answer fewer than ``page_size``: it caps a page's bytes)."""
    if kind not in ("training", "validation"):
        raise ValueError(f"kind must be 'training' or 'validation' (got {kind!r})")
    if page_size < 1:
        raise ValueError(f"page_size must be positive (got {page_size})")
    offset = 0
    while True:
        params = {"kind": kind, "offset": offset, "limit": page_size}
        answer = master.get(f"/api/v1/trials/{trial_id}/metrics", params=params)
        rows: list[dict[str, Any]] = answer["metrics"]
        yield from rows
        offset += len(rows)
        if not rows or offset >= int(answer["pagination"]["total"]):
            return
