"""Trial bodies (Determined's trialv1.Trial and the v1 trial listing)."""

from __future__ import annotations

import datetime as dt

from detlite.api.enums import CheckpointState, ExperimentState
from detlite.master.schemas._values import StoredJSON, StoredText
from detlite.master.schemas.base import WireModel
from detlite.master.schemas.common import Pagination
from detlite.master.schemas.metrics import MetricsRow

__all__ = ["CheckpointSummary", "GetTrialsResponse", "Trial", "TrialResponse"]


class CheckpointSummary(WireModel):
    """The trial's best checkpoint, in brief (the checkpoints API has the whole of it)."""

    uuid: StoredText
    total_batches: int
    state: CheckpointState
    end_time: dt.datetime | None
    searcher_metric: float | None


class Trial(WireModel):
    """trialv1.Trial. ``totalBatchesProcessed`` is the most batches any training report
    reached; the validations are the effective rows (latest run per batch count), judged by
    the experiment's ``searcher.metric`` and ``smaller_is_better``."""

    id: int
    experiment_id: int
    request_id: StoredText
    hparams: StoredJSON
    seed: int
    state: ExperimentState
    restarts: int
    total_batches_processed: int
    start_time: dt.datetime
    end_time: dt.datetime | None
    warm_start_checkpoint_uuid: StoredText | None
    best_validation: MetricsRow | None
    latest_validation: MetricsRow | None
    best_checkpoint: CheckpointSummary | None
    # Where the latest workers ran (a detlite addition): the nodes, each rank's device
    # ("gpu:<id>" or "cpu"), per rank in full, and the resource manager that placed them.
    node: StoredText | None = None
    devices: list[StoredText] | None = None
    placement: list[StoredJSON] | None = None
    resource_manager: StoredText | None = None
    # When its workers were first launched (``startTime`` is its creation), and when the
    # current run's were (None between runs); detlite additions.
    launch_time: dt.datetime | None = None
    run_start_time: dt.datetime | None = None
    # Why a trial in ERROR failed, in one line (its last ERROR log line); a detlite addition.
    last_error: StoredText | None = None


class TrialResponse(WireModel):
    trial: Trial


class GetTrialsResponse(WireModel):
    trials: list[Trial]
    pagination: Pagination
