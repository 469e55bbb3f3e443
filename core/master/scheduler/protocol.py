"""The answers of the worker protocol, computed from a trial's row (no I/O of their own).

``operation_answer(trial, allocation_id, after, stopping)`` is what
``GET /api/v1/trials/{id}/searcher/operation`` answers:

- ``preempt`` is true when the worker group must checkpoint and stop: its trial or
  experiment is no longer ACTIVE (pause, cancel, kill, the search's end), the master is
  shutting down, or the trial has nothing to do (its queue is empty and it is not closed:
  the searcher waits for other trials, so the slot goes to one that has work; the trial is
  launched again, from its checkpoint, when work comes). The operation is then WAIT.
- Otherwise the first queued VALIDATE_AFTER whose length (batches) is above ``after``. A
  caller that has reached the head operation gets WAIT while the chief has not completed it
  -- unless this group was never given that operation: then the caller restored a
  checkpoint taken at or past it (a crash between the checkpoint and the completion), and it
  gets the operation again, which it completes by validating without training.
- An empty queue on a closed trial (or after an early exit) is CLOSE.

The first answer that is not a bare WAIT is fixed for (allocation, after) in
``allocation_answers``, and every later request with that ``after`` gets it again, so every
rank of a group sees the same sequence. An answer that stops the group (CLOSE or preempt)
sets ``allocation_stop``: its exit with code 0 is then expected, not a failure.
"""

from __future__ import annotations

from typing import Any

from detlite.api.enums import ExperimentState
from detlite.errors import StaleRun
from detlite.master.orm import Trial

__all__ = [
    "CLOSE",
    "VALIDATE_AFTER",
    "WAIT",
    "check_allocation",
    "operation_answer",
    "preemption_answer",
    "should_preempt",
]

VALIDATE_AFTER = "VALIDATE_AFTER"
CLOSE = "CLOSE"
WAIT = "WAIT"


def check_allocation(trial: Trial, allocation_id: str) -> None:
    """``StaleRun`` (410) unless ``allocation_id`` is the trial's current worker group."""
    if trial.allocation_id is None or trial.allocation_id != allocation_id:
        raise StaleRun(
            f"allocation {allocation_id!r} is not the current worker group of trial "
            f"{trial.id} (a stale or stopped worker): stop this worker"
        )


def should_preempt(trial: Trial, stopping: bool) -> bool:
    """The group must stop now: see the module docstring (pause, cancel, kill, shutdown)."""
    return (
        stopping
        or trial.state != ExperimentState.ACTIVE
        or trial.experiment.state != ExperimentState.ACTIVE
    )


def _answer(kind: str, length: int | None = None, preempt: bool = False) -> dict[str, Any]:
    operation: dict[str, Any] = {"kind": kind}
    if length is not None:
        operation["length"] = length
    return {"operation": operation, "preempt": preempt}


def _compute(trial: Trial, after: int, stopping: bool, answers: dict[str, Any]) -> dict[str, Any]:
    if should_preempt(trial, stopping):
        return _answer(WAIT, preempt=True)
    pending = trial.pending_ops or []
    if pending:
        head = int(pending[0]["batches"])
        if head > after:
            return _answer(VALIDATE_AFTER, head)
        given = any(answer["operation"].get("length") == head for answer in answers.values())
        return _answer(WAIT) if given else _answer(VALIDATE_AFTER, head)
    if trial.close_requested or trial.early_exit_reason is not None:
        return _answer(CLOSE)
    return _answer(WAIT, preempt=True)  # idle: give the slot back


def operation_answer(
    trial: Trial, allocation_id: str, after: int, stopping: bool
) -> dict[str, Any]:
    """The answer to an operation request (see the module docstring); fixes it on the row."""
    check_allocation(trial, allocation_id)
    answers = dict(trial.allocation_answers or {})
    key = str(after)
    if key in answers:
        return dict(answers[key])
    answer = _compute(trial, after, stopping, answers)
    if answer["operation"]["kind"] != WAIT or answer["preempt"]:
        answers[key] = answer
        trial.allocation_answers = answers  # a new dict, so the JSON column sees the change
        if answer["preempt"] or answer["operation"]["kind"] == CLOSE:
            trial.allocation_stop = True
    return answer


def preemption_answer(trial: Trial, allocation_id: str, stopping: bool) -> bool:
    """Whether a single-slot group should stop mid-operation (pause, cancel, kill,
    shutdown); a true answer marks its coming exit as expected."""
    check_allocation(trial, allocation_id)
    preempt = should_preempt(trial, stopping)
    if preempt:
        trial.allocation_stop = True
    return preempt
