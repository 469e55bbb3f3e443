"""Determined's per-trial workload sequencing: when a trial trains, validates and checkpoints.

The searcher asks for "train to N batches, then validate" (``TrialRunner.train_to``). The
runner turns that into workloads for the framework's ``TrialController`` and, before each
one, picks the next by the priority of Determined's master (determined-api.md 4.1):

1. an initial validation, if ``perform_initial_validation`` and none happened yet;
2. a checkpoint after a graceful stop, or after a validation when ``checkpoint_policy``
   calls for one (``all``: always; ``best``: when the validation is this trial's best so
   far by the searcher metric, ties included; ``none``: never);
3. a validation when ``min_validation_period`` is due;
4. a checkpoint when ``min_checkpoint_period`` is due;
5. the searcher's operation: train ``max(1, min(left, until_validation, until_checkpoint,
   scheduling_unit))`` batches; once the total is reached, a checkpoint if any batches
   are un-checkpointed (a searcher validation is always preceded by one), then validate.

A checkpoint is only ever taken of un-checkpointed batches. Periods in records or epochs
convert with the trial's effective global batch size; a non-zero period shorter than one
batch means every batch.

Deliberate choices, each tested:

- When the searcher's validation falls where a validation just ran (a period that divides
  the length, or an initial validation before ``train_to(0)``), that result is returned:
  Determined's master validated the same weights a second time.
- A stop request (``context.set_stop_requested(True)``) is checked after every workload:
  the runner checkpoints any un-checkpointed batches and raises ``TrialStopped``. A stop
  seen only after the searcher's final validation lets ``train_to`` return that completed
  result (nothing is un-checkpointed then); the next ``train_to`` raises at once.
- Every checkpoint's ``metadata.json`` holds the sequencing state (``workload_state``), so
  a runner restored from it continues the sequence the first one would have run.
  ``snapshot`` is Determined's rollback snapshot: that state, updated by a validation run
  right after the checkpoint. A caller that keeps it (the master) passes it back as
  ``state``. A restore from the checkpoint alone does not know of that validation:
  ``min_validation_period`` then counts from the one before it.

Checkpoints are written only by the chief (rank 0) and metrics are reported only there;
every rank runs the same workloads. Each rank reads its own context's stop request, so a
framework whose ranks train together must make them agree on it.

``Reporter`` (``report_training``, ``report_validation``, ``report_checkpoint``, ``log``)
receives what the trial produces; ``NullReporter`` drops it, ``RecordingReporter`` keeps it.
"""

from __future__ import annotations

from detlite.workloads._reporting import NullReporter, RecordingReporter, Report, Reporter
from detlite.workloads._runner import (
    RunnerState,
    TrialRunner,
    TrialStopped,
    Workload,
    WorkloadKind,
)

__all__ = [
    "NullReporter",
    "RecordingReporter",
    "Report",
    "Reporter",
    "RunnerState",
    "TrialRunner",
    "TrialStopped",
    "Workload",
    "WorkloadKind",
]
