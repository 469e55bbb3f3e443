"""``ExperimentReference``: one experiment on the master, by id (determined-api.md 1.6, 1.10).

Building a reference makes no request; each method makes its own. Decisions:

- ``top_n_checkpoints`` asks for COMPLETED checkpoints with COMPLETED validations and keeps
  only COMPLETED ones whatever the server sent (improvement 7); it ranks them by the rules of
  ``detlite.experimental._selection`` (improvement 6, deterministic ties) and returns the best
  checkpoint of each of the best ``limit`` distinct trials, best first. Nothing to rank is
  ``NoCheckpointFound`` (a ``CheckpointNotFound`` that is also the reference's
  ``AssertionError``); an unknown metric is ``MetricNotFound``.
- The lifecycle calls are Determined 0.15's ``POST /api/v1/experiments/{id}/<action>`` (and
  ``DELETE`` for delete); the master's errors arrive typed (``NotFound``, ``Forbidden``, ...).
- ``wait`` polls ``GET /api/v1/experiments/{id}`` until the state is terminal and returns it.
  A PAUSED experiment raises ``ExperimentPaused`` (a ``ValueError``, as the reference), since
  nothing would ever finish it; ``timeout`` (new) raises ``WaitTimeout`` (a ``TimeoutError``).
  Progress is printed when the state changes and once a minute, as the reference did.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

from detlite.api.enums import CheckpointState, ExperimentState
from detlite.errors import (
    ExperimentPaused,
    InvalidCheckpointSelection,
    NoCheckpointFound,
    WaitTimeout,
)
from detlite.experimental._selection import (
    completed,
    rank,
    resolve_metric,
)

if TYPE_CHECKING:
    from detlite.api import Session
    from detlite.experimental._checkpoint import Checkpoint
    from detlite.experimental._trial import TrialReference

__all__ = ["ExperimentReference"]

PROGRESS_EVERY = 60.0


class ExperimentReference:
    """An experiment on the master. ``id`` is its id; ``_master`` the session to the master."""

    def __init__(self, experiment_id: int, master: Session) -> None:
        self.id = int(experiment_id)
        self._master = master

    def __repr__(self) -> str:
        return f"Experiment(id={self.id})"

    @property
    def _path(self) -> str:
        return f"/api/v1/experiments/{self.id}"

    # -- lifecycle -------------------------------------------------------------------------

    def activate(self) -> None:
        self._master.post(f"{self._path}/activate")

    def pause(self) -> None:
        self._master.post(f"{self._path}/pause")

    def cancel(self) -> None:
        self._master.post(f"{self._path}/cancel")

    def kill(self) -> None:
        self._master.post(f"{self._path}/kill")

    def archive(self) -> None:
        self._master.post(f"{self._path}/archive")

    def unarchive(self) -> None:
        self._master.post(f"{self._path}/unarchive")

    def delete(self) -> None:
        self._master.delete(self._path)

    # -- reading -----------------------------------------------------------------------------

    def _get(self) -> dict[str, Any]:
        answer: dict[str, Any] = self._master.get(self._path)
        return answer

    def get_config(self) -> dict[str, Any]:
        """The experiment's (validated, defaults filled) config."""
        config: dict[str, Any] = self._get()["config"]
        return config

    def get_state(self) -> ExperimentState:
        """The experiment's current state (new in detlite; ``wait`` is built on it)."""
        return ExperimentState.parse(self._get()["experiment"]["state"])

    def get_trials(self) -> list[TrialReference]:
        """A reference to each of the experiment's trials, by trial id."""
        from detlite.experimental._trial import TrialReference

        answer = self._master.get(f"{self._path}/trials", params={"limit": 0})
        return [TrialReference(int(t["id"]), self._master) for t in answer["trials"]]

    def wait(self, interval: float = 5.0, timeout: float | None = None) -> ExperimentState:
        """Poll until the experiment is COMPLETED, CANCELED, ERROR or DELETED; return that state."""
        if interval <= 0:
            raise ValueError(f"interval must be positive (got {interval})")
        started = time.monotonic()
        last_report = started
        previous: ExperimentState | None = None
        while True:
            state = self.get_state()
            now = time.monotonic()
            if state.terminal:
                _progress(f"Experiment {self.id} finished: {_name(state)}")
                return state
            if state is ExperimentState.PAUSED:
                raise ExperimentPaused(
                    f"Experiment {self.id} is paused; activate it (detlite experiment activate "
                    f"{self.id}, or ExperimentReference.activate()) before waiting for it"
                )
            if state is not previous or now - last_report >= PROGRESS_EVERY:
                minutes = (now - started) / 60
                _progress(
                    f"Waiting for Experiment {self.id} to complete: {_name(state)}, "
                    f"{minutes:.1f} minutes elapsed"
                )
                previous, last_report = state, now
            if timeout is not None and now - started >= timeout:
                raise WaitTimeout(
                    f"Experiment {self.id} did not finish within {timeout:g} s "
                    f"(it is {_name(state)})"
                )
            delay = interval if timeout is None else min(interval, started + timeout - now)
            time.sleep(max(delay, 0.0))

    # -- checkpoints -------------------------------------------------------------------------

    def _completed_checkpoints(self) -> list[dict[str, Any]]:
        # Query enums as proto numbers, as the reference's client sent them.
        completed_state = CheckpointState.COMPLETED.number
        params = {"states": completed_state, "validation_states": completed_state, "limit": 0}
        answer = self._master.get(f"{self._path}/checkpoints", params=params)
        return completed(answer["checkpoints"])

    def top_n_checkpoints(
        self, limit: int, sort_by: str | None = None, smaller_is_better: bool | None = None
    ) -> list[Checkpoint]:
        """The best COMPLETED checkpoint of each of the best ``limit`` trials, best first.

        ``sort_by`` names a validation metric (default: the searcher's); ``smaller_is_better``
        its direction (default: the searcher's; ignored, with a warning, without ``sort_by``).
        """
        from detlite.experimental._checkpoint import Checkpoint

        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise InvalidCheckpointSelection(
                f"limit must be a non-negative integer (got {limit!r})"
            )
        what = f"experiment {self.id}"
        checkpoints = self._completed_checkpoints()
        if not checkpoints:
            raise NoCheckpointFound(f"No checkpoint found for {what}")
        config = checkpoints[0].get("experimentConfig")
        metric, smaller = resolve_metric(
            sort_by, smaller_is_better, lambda: config or self.get_config(), what
        )
        best_per_trial: dict[int, dict[str, Any]] = {}
        for checkpoint in rank(checkpoints, metric, smaller, what):
            best_per_trial.setdefault(int(checkpoint["trialId"]), checkpoint)
        # dicts keep insertion order, so the trials are in the order of their best checkpoint.
        chosen = list(best_per_trial.values())[:limit]
        return [Checkpoint.from_json(c, self._master) for c in chosen]

    def top_checkpoint(
        self, sort_by: str | None = None, smaller_is_better: bool | None = None
    ) -> Checkpoint:
        """The best COMPLETED checkpoint of the experiment (see ``top_n_checkpoints``)."""
        return self.top_n_checkpoints(1, sort_by=sort_by, smaller_is_better=smaller_is_better)[0]


def _name(state: ExperimentState) -> str:
    return state.value.removeprefix("STATE_")


def _progress(message: str) -> None:
    print(message, file=sys.stdout, flush=True)
