"""``det.experimental``: creating experiments, and the client API of the master.

``create`` runs a trial class as an experiment (so far: local test mode) and
``create_trial_instance`` builds a trial for the user to drive, loading and saving the
checkpoint in its ``checkpoint_dir`` (``save_trial_instance``).

``Determined`` logs in to a master and hands out ``ExperimentReference``,
``TrialReference``, ``Checkpoint`` and ``Model`` objects (determined-api.md 1.5 to 1.10).
The errors their queries raise besides ``detlite.errors``' API errors are exported here too:
``NoCheckpointFound`` (a ``CheckpointNotFound`` and an ``AssertionError``), ``MetricNotFound``
(a ``KeyError``), ``InvalidCheckpointSelection`` (a ``ValueError``), ``ExperimentPaused`` (a
``ValueError``) and ``WaitTimeout`` (a ``TimeoutError``); every one is a ``DetliteError``.

Importing this package imports no framework and none of the master's server stack; the HTTP
client (requests) loads with it.
"""

from __future__ import annotations

from detlite.errors import (
    ExperimentFailed,
    ExperimentPaused,
    InvalidCheckpointSelection,
    MetricNotFound,
    NoCheckpointFound,
    WaitTimeout,
)
from detlite.experimental._checkpoint import Checkpoint
from detlite.experimental._create import create
from detlite.experimental._determined import Determined
from detlite.experimental._experiment import ExperimentReference
from detlite.experimental._instance import create_trial_instance, save_trial_instance
from detlite.experimental._model import Model, ModelOrderBy, ModelSortBy, ModelVersion
from detlite.experimental._test_mode import TestModeResult
from detlite.experimental._trial import TrialReference

__all__ = [
    "Checkpoint",
    "Determined",
    "ExperimentFailed",
    "ExperimentPaused",
    "ExperimentReference",
    "InvalidCheckpointSelection",
    "MetricNotFound",
    "Model",
    "ModelOrderBy",
    "ModelSortBy",
    "ModelVersion",
    "NoCheckpointFound",
    "TestModeResult",
    "TrialReference",
    "WaitTimeout",
    "create",
    "create_trial_instance",
    "save_trial_instance",
]
