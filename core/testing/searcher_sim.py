"""A simulated master that drives a search method, for testing search methods.

``simulate(method, ctx, objective)`` carries out operations as the master would, with no
training: ``Create`` makes a trial (a clone starts at its parent's length) and calls
``trial_created``; ``ValidateAfter(L)`` "trains" the trial from its length to ``L``, adding
the difference to the units-trained budget, then reports ``objective(hparams, L)`` to
``validation_completed`` (a method with ``more_objectives`` first gets their values through
``objectives_reported``: ``objectives(hparams, L)`` when given, else ``objective`` called
once per objective); ``Close`` calls ``trial_closed``; ``Shutdown`` ends the run.

Each trial carries out its own operations in order. Which trial goes next is decided by
``order``: ``"fifo"`` takes the trial whose work has waited longest, ``"random"`` picks one
with an RNG seeded from ``seed``. ``max_concurrent`` limits how many trials hold a slot;
the rest wait their turn. ``fail(trial, op)`` may return an ``ExitedReason`` to make a
trial exit instead of carrying out a ``ValidateAfter``.

The simulator checks the protocol as it goes and raises ``SimulationError`` for an
operation on a trial that does not exist or has finished, an operation after ``Shutdown``,
progress outside [0, 1], or more than ``max_operations`` operations (a search that never
ends). For a restart test, run part of a search with ``Simulator.run(max_steps=...)``,
``copy.deepcopy`` the simulator, and swap in a restored ``method`` and ``ctx``.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from detlite.searcher.base import (
    Close,
    Create,
    ExitedReason,
    Operation,
    SearcherContext,
    SearchMethod,
    Shutdown,
    ValidateAfter,
)

__all__ = [
    "FailureRule",
    "Objective",
    "Objectives",
    "Order",
    "SimEvent",
    "SimTrial",
    "SimulationError",
    "SimulationResult",
    "Simulator",
    "simulate",
]

Objective = Callable[[Mapping[str, Any], int], float]
Objectives = Callable[[Mapping[str, Any], int], Mapping[str, float]]
Order = Literal["fifo", "random"]


class SimulationError(AssertionError):
    """The search method broke the protocol, or the run did not end."""


@dataclass
class SimTrial:
    """One simulated trial. ``state`` is ``open``, ``closed`` or ``exited``."""

    request_id: int
    hparams: dict[str, Any]
    checkpoint_from: int | None = None
    length: int = 0
    units_trained: int = 0
    validations: list[tuple[int, float]] = field(default_factory=list)
    state: str = "open"
    exit_reason: ExitedReason | None = None
    queue: deque[ValidateAfter | Close] = field(default_factory=deque, repr=False)


FailureRule = Callable[[SimTrial, ValidateAfter], ExitedReason | None]


@dataclass(frozen=True)
class SimEvent:
    """One callback into the method and the operations it returned.

    ``kind`` is ``initial``, ``created``, ``validated``, ``closed`` or ``exited``.
    """

    kind: str
    request_id: int | None
    operations: tuple[Operation, ...]
    length: int | None = None
    metric: float | None = None
    reason: ExitedReason | None = None


@dataclass
class SimulationResult:
    """What a run did.

    ``operations`` lists every operation in the order the method returned them; ``events``
    every callback with what it returned. ``units_trained`` sums the training of all trials.
    ``best_metric`` is the best validation seen at any length, and ``best_trial`` its trial.
    ``peak_busy`` is the most trials that had a ValidateAfter outstanding at once.
    """

    trials: dict[int, SimTrial]
    operations: list[Operation]
    events: list[SimEvent]
    units_trained: int
    best_metric: float | None
    best_trial: int | None
    shutdown: bool
    shutdown_failure: bool
    peak_busy: int
    progress: float

    @property
    def creates(self) -> list[Create]:
        return [op for op in self.operations if isinstance(op, Create)]

    def exited(self, reason: ExitedReason | None = None) -> list[SimTrial]:
        return [
            t
            for t in self.trials.values()
            if t.state == "exited" and (reason is None or t.exit_reason is reason)
        ]


class Simulator:
    """Step-by-step form of ``simulate``; see the module docstring."""

    def __init__(
        self,
        method: SearchMethod,
        ctx: SearcherContext,
        objective: Objective,
        *,
        max_concurrent: int | None = None,
        order: Order = "fifo",
        seed: int = 0,
        fail: FailureRule | None = None,
        smaller_is_better: bool = True,
        max_operations: int = 100_000,
        objectives: Objectives | None = None,
    ) -> None:
        if order not in ("fifo", "random"):
            raise ValueError(f"order must be 'fifo' or 'random', got {order!r}")
        if max_concurrent is not None and max_concurrent < 1:
            raise ValueError(f"max_concurrent must be >= 1 or None, got {max_concurrent}")
        self.method = method
        self.ctx = ctx
        self.objective = objective
        self.objectives = objectives
        self.max_concurrent = max_concurrent
        self.order = order
        self.fail = fail
        self.smaller_is_better = smaller_is_better
        self.max_operations = max_operations
        self.rng = random.Random(seed)
        self.trials: dict[int, SimTrial] = {}
        self.operations: list[Operation] = []
        self.events: list[SimEvent] = []
        self.units_trained = 0
        self.best: tuple[float, int] | None = None
        self.shutdown: Shutdown | None = None
        self.peak_busy = 0
        self._pending: deque[Operation] = deque()
        self._waiting_since: dict[int, int] = {}  # trials with work -> when it was queued
        self._slots: list[int] = []  # trials holding a slot, in the order they got it
        self._clock = 0
        self._started = False

    def start(self) -> None:
        if self._started:
            return
        self._started = True
        self._record("initial", None, self.method.initial_operations(self.ctx))

    def run(self, max_steps: int | None = None) -> SimulationResult:
        """Carry out trial work until the search ends (or ``max_steps`` steps)."""
        self.start()
        steps = 0
        while (max_steps is None or steps < max_steps) and self.step():
            steps += 1
        return self.result()

    def step(self) -> bool:
        """Carry out one operation of one trial. False once there is nothing left to do."""
        self.start()
        if self.shutdown is not None:
            return False
        request_id = self._pick()
        if request_id is None:
            return False
        trial = self.trials[request_id]
        op = trial.queue.popleft()
        self._waiting_since.pop(request_id)
        if trial.queue:
            self._clock += 1
            self._waiting_since[request_id] = self._clock
        elif request_id in self._slots:
            self._slots.remove(request_id)
        if isinstance(op, Close):
            self._finish(trial, "closed")
            self._record("closed", request_id, self.method.trial_closed(self.ctx, request_id))
            return True
        reason = self.fail(trial, op) if self.fail is not None else None
        if reason is not None:
            self._finish(trial, "exited", reason)
            ops = self.method.trial_exited_early(self.ctx, request_id, reason)
            self._record("exited", request_id, ops, reason=reason)
            return True
        if op.length > trial.length:
            trained = op.length - trial.length
            trial.units_trained += trained
            self.units_trained += trained
            trial.length = op.length
        if self.method.more_objectives:
            if self.objectives is not None:
                values = dict(self.objectives(trial.hparams, trial.length))
            else:
                values = {
                    name: float(self.objective(trial.hparams, trial.length))
                    for name, _ in self.method.more_objectives
                }
            self.method.objectives_reported(request_id, values)
        metric = float(self.objective(trial.hparams, trial.length))
        trial.validations.append((trial.length, metric))
        key = metric if self.smaller_is_better else -metric
        if self.best is None or key < self.best[0]:
            self.best = (key, request_id)
        ops = self.method.validation_completed(self.ctx, request_id, metric, op)
        self._record("validated", request_id, ops, length=trial.length, metric=metric)
        return True

    def result(self) -> SimulationResult:
        best_metric = best_trial = None
        if self.best is not None:
            key, best_trial = self.best
            best_metric = key if self.smaller_is_better else -key
        return SimulationResult(
            trials=dict(self.trials),
            operations=list(self.operations),
            events=list(self.events),
            units_trained=self.units_trained,
            best_metric=best_metric,
            best_trial=best_trial,
            shutdown=self.shutdown is not None,
            shutdown_failure=self.shutdown is not None and self.shutdown.failure,
            peak_busy=self.peak_busy,
            progress=self.method.progress(),
        )

    def _pick(self) -> int | None:
        if self.max_concurrent is None:
            candidates = sorted(self._waiting_since, key=self._waiting_since.__getitem__)
        else:
            for rid in sorted(self._waiting_since, key=self._waiting_since.__getitem__):
                if len(self._slots) >= self.max_concurrent:
                    break
                if rid not in self._slots:
                    self._slots.append(rid)
            candidates = sorted(self._slots, key=self._waiting_since.__getitem__)
        if not candidates:
            return None
        if self.order == "fifo":
            return candidates[0]
        return self.rng.choice(sorted(candidates))

    def _finish(self, trial: SimTrial, state: str, reason: ExitedReason | None = None) -> None:
        if trial.queue and state == "closed":
            raise SimulationError(
                f"request {trial.request_id}: operations queued after Close: {list(trial.queue)}"
            )
        trial.state = state
        trial.exit_reason = reason
        # Work queued before the exit is dropped, as the master drops it.
        trial.queue.clear()
        self._waiting_since.pop(trial.request_id, None)
        if trial.request_id in self._slots:
            self._slots.remove(trial.request_id)

    def _record(
        self,
        kind: str,
        request_id: int | None,
        ops: list[Operation],
        *,
        length: int | None = None,
        metric: float | None = None,
        reason: ExitedReason | None = None,
    ) -> None:
        self.events.append(SimEvent(kind, request_id, tuple(ops), length, metric, reason))
        progress = self.method.progress()
        if not 0.0 <= progress <= 1.0:
            raise SimulationError(f"progress() returned {progress}, outside [0, 1]")
        self._pending.extend(ops)
        while self._pending:
            self._apply(self._pending.popleft())
        busy = sum(
            1 for t in self.trials.values() if any(isinstance(op, ValidateAfter) for op in t.queue)
        )
        self.peak_busy = max(self.peak_busy, busy)

    def _apply(self, op: Operation) -> None:
        if self.shutdown is not None:
            raise SimulationError(f"operation after Shutdown: {op}")
        self.operations.append(op)
        if len(self.operations) > self.max_operations:
            raise SimulationError(
                f"more than {self.max_operations} operations: the search does not end"
            )
        if isinstance(op, Shutdown):
            self.shutdown = op
            return
        if isinstance(op, Create):
            self._create(op)
            return
        trial = self.trials.get(op.request_id)
        if trial is None:
            raise SimulationError(f"{op} names a trial that was never created")
        if trial.state != "open" or any(isinstance(q, Close) for q in trial.queue):
            raise SimulationError(f"{op} for request {op.request_id}, which is {trial.state}")
        if not trial.queue:
            self._clock += 1
            self._waiting_since[op.request_id] = self._clock
        trial.queue.append(op)

    def _create(self, op: Create) -> None:
        if op.request_id in self.trials:
            raise SimulationError(f"request id {op.request_id} created twice")
        length = 0
        if op.checkpoint_from is not None:
            parent = self.trials.get(op.checkpoint_from)
            if parent is None:
                raise SimulationError(f"{op} clones a trial that was never created")
            length = parent.length
        self.trials[op.request_id] = SimTrial(
            op.request_id, dict(op.hparams), op.checkpoint_from, length
        )
        ops = self.method.trial_created(self.ctx, op.request_id)
        self.events.append(SimEvent("created", op.request_id, tuple(ops)))
        self._pending.extend(ops)


def simulate(
    method: SearchMethod,
    ctx: SearcherContext,
    objective: Objective,
    *,
    max_concurrent: int | None = None,
    order: Order = "fifo",
    seed: int = 0,
    fail: FailureRule | None = None,
    smaller_is_better: bool = True,
    max_operations: int = 100_000,
    objectives: Objectives | None = None,
) -> SimulationResult:
    """Run ``method`` to the end against ``objective``; see the module docstring."""
    return Simulator(
        method,
        ctx,
        objective,
        max_concurrent=max_concurrent,
        order=order,
        seed=seed,
        fail=fail,
        smaller_is_better=smaller_is_better,
        max_operations=max_operations,
        objectives=objectives,
    ).run()
