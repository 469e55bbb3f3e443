"""Stopping a worker in the middle of an operation when the master asks, or fences it.

``PreemptionWatch`` polls ``GET /api/v1/trials/{id}/preemption`` from a thread, at most
once a second and only while armed (while the worker trains), with a client of its own.
With ``stops`` (a single-slot worker), an answer of ``preempt`` requests a stop through the
trial context (``set_stop_requested(True)``), which the ``TrialRunner`` checks after every
workload: the runner then checkpoints and raises ``TrialStopped``, and ``preempted`` tells
the worker that the master asked, not the trial. Every rank polls, ``stops`` or not: a run
the master no longer counts is answered 410, which ends the process through the client's
stale-run handler (``detlite.exec._master``) within about a second even while it trains.
Other poll errors are ignored here: the operation loop meets a master that stays away on
its own requests.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING

from detlite.exec._master import MasterClient

if TYPE_CHECKING:
    from detlite.exec._env import WorkerEnv
    from detlite.workloads import TrialRunner

__all__ = ["POLL_S", "PreemptionWatch"]

log = logging.getLogger("detlite.exec")

POLL_S = 1.0


class PreemptionWatch:
    """Polls ``/preemption`` from a thread while armed; on ``preempt`` requests a stop."""

    def __init__(self, env: WorkerEnv, runner: TrialRunner, *, stops: bool = True) -> None:
        self._client = MasterClient(env.master, env.token)
        self._stops = stops
        self._path = f"/api/v1/trials/{env.trial_id}/preemption"
        self._params = {"allocationId": env.allocation_id}
        self._runner = runner
        self.preempted = False
        self._armed = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="detlite-preemption", daemon=True)
        self._thread.start()

    def arm(self, armed: bool) -> None:
        if armed:
            self._armed.set()
        else:
            self._armed.clear()

    def close(self) -> None:
        self._stop.set()
        self._armed.set()  # wake the thread so it sees the stop
        self._thread.join(timeout=5)
        self._client.close()

    def _run(self) -> None:
        while not self._stop.wait(POLL_S):
            self._armed.wait()
            if self._stop.is_set():
                return
            try:
                answer = self._client.get(self._path, self._params)
            except Exception as exc:  # the operation loop meets lasting errors itself
                log.debug("preemption poll failed: %s", exc)
                continue
            if self._stops and isinstance(answer, Mapping) and answer.get("preempt"):
                log.info("the master asked this trial to stop; stopping after this workload")
                self.preempted = True
                self._runner.context.set_stop_requested(True)
                return
