"""Every exception detlite raises on purpose.

The tree::

    DetliteError
    ├── InvalidExperimentConfig      (ValueError) a config failed validation; lists every problem
    ├── InvalidExperiment            (ValueError) the experiment cannot run as written
    │   └── StorageNotAllowed        its checkpoint storage is outside what the operator allows
    ├── InvalidHP                    raised by a trial whose hyperparameters cannot work
    ├── UnknownHyperparameter        (ValueError) get_hparam() of a name the trial lacks
    ├── PluginError                  a plugin could not be loaded or registered something invalid
    │   └── FrameworkUnavailable     (ImportError) a framework is missing; says how to install it
    ├── SearcherError                a search method was driven in a way it does not allow
    ├── CheckpointError
    │   ├── CheckpointNotFound       (FileNotFoundError)
    │   │   └── NoCheckpointFound    (AssertionError) nothing COMPLETED to select from
    │   ├── UnknownCheckpointFormat  metadata.json names a format no plugin registers
    │   ├── CorruptCheckpoint        a file is missing, truncated or fails its sha256
    │   └── StorageError             checkpoint storage failed (detlite.storage.errors:
    │                                StorageNotFound, StorageAccessDenied, StorageUnavailable)
    ├── MetricNotFound               (KeyError) sort_by names a metric no validation reported
    ├── InvalidCheckpointSelection   (ValueError) select_checkpoint() arguments conflict
    ├── ExperimentPaused             (ValueError) wait() on a PAUSED experiment
    ├── WaitTimeout                  (TimeoutError) wait(timeout=...) ran out
    ├── CorruptTokenCache            the client's token cache was unreadable (and was removed)
    ├── MasterBusy                   another process's master serves this SQLite database
    ├── ExperimentFailed             an experiment create() waited for did not complete
    └── APIError                     the master answered with an error
        ├── MasterNotFound           no master answered at the address
        ├── Unauthenticated          401: no valid token
        ├── Forbidden                403: the user may not do this
        ├── NotFound                 404
        ├── Conflict                 409
        └── StaleRun                 410: a worker's run is no longer its trial's current one

Messages say what was wrong and what to do next. The CLI's ``main()`` is the one place
that turns these into exit codes and one-line messages.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from detlite.api.enums import ExperimentState

__all__ = [
    "APIError",
    "CheckpointError",
    "CheckpointNotFound",
    "ConfigProblem",
    "Conflict",
    "CorruptCheckpoint",
    "CorruptTokenCache",
    "DetliteError",
    "ExperimentFailed",
    "ExperimentPaused",
    "Forbidden",
    "FrameworkUnavailable",
    "InvalidCheckpointSelection",
    "InvalidExperiment",
    "InvalidExperimentConfig",
    "InvalidHP",
    "MasterBusy",
    "MasterNotFound",
    "MetricNotFound",
    "NoCheckpointFound",
    "NotFound",
    "PluginError",
    "SearcherError",
    "StaleRun",
    "StopLoadingImplementation",
    "StorageNotAllowed",
    "Unauthenticated",
    "UnknownCheckpointFormat",
    "UnknownHyperparameter",
    "WaitTimeout",
]


class DetliteError(Exception):
    """The root of every error detlite raises on purpose."""

    exit_code = 1


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong with an experiment config: where, and what was expected."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class InvalidExperimentConfig(DetliteError, ValueError):
    """An experiment config failed validation. ``problems`` lists every one found."""

    exit_code = 2

    def __init__(self, problems: Iterable[ConfigProblem | str], source: str | None = None) -> None:
        self.problems: list[ConfigProblem] = [
            p if isinstance(p, ConfigProblem) else ConfigProblem("", p) for p in problems
        ]
        self.source = source
        where = f" ({source})" if source else ""
        count = len(self.problems)
        head = f"invalid experiment config{where}: {count} problem{'s' if count != 1 else ''}"
        super().__init__("\n".join([head, *(f"  - {p}" for p in self.problems)]))

    @property
    def paths(self) -> list[str]:
        return [p.path for p in self.problems]


class InvalidExperiment(DetliteError, ValueError):
    """The experiment cannot run as written (Determined's InvalidExperimentException)."""

    exit_code = 2


class StorageNotAllowed(InvalidExperiment):
    """The experiment's ``checkpoint_storage`` is not inside a location the master's
    operator allows (``detlite.storage.locations``); the message lists those locations."""


class InvalidHP(DetliteError):
    """Raise from a trial when its hyperparameters cannot work.

    The searcher drops the trial's results and, where the method allows, creates a
    replacement trial instead of failing the experiment.
    """


class UnknownHyperparameter(DetliteError, ValueError):
    """``context.get_hparam(name)`` for a name the trial was not given."""

    def __init__(self, name: str, known: Sequence[str]) -> None:
        self.name = name
        self.known = sorted(known)
        listed = ", ".join(self.known) if self.known else "none"
        super().__init__(
            f"unknown hyperparameter {name!r}; this trial has: {listed}. "
            "Add it under 'hyperparameters' in the experiment config."
        )


class PluginError(DetliteError):
    """A plugin failed to load or registered something invalid."""


class FrameworkUnavailable(PluginError, ImportError):
    """A framework plugin was asked for work but its framework is not installed."""

    def __init__(self, framework: str, missing: Sequence[str], install: str) -> None:
        self.framework = framework
        self.missing = list(missing)
        self.install = install
        names = ", ".join(self.missing)
        super().__init__(f"{framework} is not available ({names} not installed): {install}")


class SearcherError(DetliteError):
    """A search method was driven in a way it does not allow (a bug in the caller)."""


class CheckpointError(DetliteError):
    """Base class for problems with a checkpoint on disk or in storage."""


class CheckpointNotFound(CheckpointError, FileNotFoundError):
    """No checkpoint at the given path or uuid."""


class UnknownCheckpointFormat(CheckpointError):
    """metadata.json names a format that no installed plugin registers."""


class CorruptCheckpoint(CheckpointError):
    """A checkpoint file is missing, truncated or does not match its recorded sha256."""


class CorruptTokenCache(DetliteError):
    """The token cache (``auth.json``) could not be read; it has been removed."""


class APIError(DetliteError):
    """The master answered a request with an error status."""

    status: int | None = None

    def __init__(self, message: str, status: int | None = None) -> None:
        if status is not None:
            self.status = status
        super().__init__(message)


class MasterNotFound(APIError):
    """Nothing answered at the master's address."""


class Unauthenticated(APIError):
    status = 401


class Forbidden(APIError):
    status = 403


class NotFound(APIError):
    status = 404


class Conflict(APIError):
    status = 409


class StaleRun(APIError):
    """410: the request came from a trial run (an allocation) that is no longer current.

    The master launched another run of the trial (after a lost node, say) or the trial has
    ended; nothing from the old run is stored, and its worker must stop at once.
    """

    status = 410


class StopLoadingImplementation(Exception):
    """Internal control flow: ``create()`` inside a trial worker stops the user's script.

    Deliberately not a DetliteError: nothing should catch it but the worker.
    """


class NoCheckpointFound(CheckpointNotFound, AssertionError):
    """An experiment or trial has no COMPLETED checkpoint to choose from.

    Also an ``AssertionError``: the reference raised a bare one here.
    """


class MetricNotFound(DetliteError, KeyError):
    """``sort_by`` names a metric that no candidate checkpoint's validation reported.

    Also a ``KeyError`` (what the reference raised), printed as a sentence, not a repr.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class InvalidCheckpointSelection(DetliteError, ValueError):
    """``select_checkpoint`` or ``top_n_checkpoints`` was called with arguments that conflict.

    A ``ValueError``: the reference's ``AssertionError`` said "bug" where the call was bad.
    """


class ExperimentPaused(DetliteError, ValueError):
    """``wait()`` on a PAUSED experiment: it would never finish (a ValueError, as the reference)."""


class WaitTimeout(DetliteError, TimeoutError):
    """``wait(timeout=...)`` ran out of time before the experiment finished."""


class MasterBusy(DetliteError):
    """Another process already runs a master on this SQLite database."""


class ExperimentFailed(DetliteError):
    """The experiment ``create()`` waited for ended CANCELED, ERROR or DELETED."""

    def __init__(self, message: str, experiment_id: int, state: ExperimentState) -> None:
        super().__init__(message)
        self.experiment_id = experiment_id
        self.state = state
