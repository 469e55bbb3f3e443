"""The SearchMethod interface: pure logic that turns trial events into operations.

A search method never trains anything. The master (or a simulated runner in tests)
asks it for its initial operations, carries them out, and feeds back what happened:
a trial was created, a validation finished with a metric, a trial closed or exited
early. Each callback returns the next operations.

Lengths are whole numbers in the unit of the searcher's ``max_length`` (or
``length_per_round``); the caller converts them to batches. ``ValidateAfter.length``
is the total the trial must have trained, not an increment.

State must survive a master restart: ``state_dict()`` returns JSON-serialisable data and
``load_state_dict()`` restores it, the RNG included.
"""

from __future__ import annotations

import enum
import random
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from detlite.config.hyperparameters import ConstHP, Hyperparameter

__all__ = [
    "Close",
    "Create",
    "ExitedReason",
    "Operation",
    "SearchMethod",
    "SearcherContext",
    "Shutdown",
    "ValidateAfter",
]

RequestID = int


@dataclass(frozen=True)
class Create:
    """Start a new trial with these hyperparameters.

    ``checkpoint_from`` names another trial whose latest checkpoint the new trial starts
    from (PBT's clone); ``None`` means a fresh start.
    """

    request_id: RequestID
    hparams: dict[str, Any]
    checkpoint_from: RequestID | None = None


@dataclass(frozen=True)
class ValidateAfter:
    """Train the trial until it has ``length`` units in total, then validate."""

    request_id: RequestID
    length: int


@dataclass(frozen=True)
class Close:
    """The trial is done: checkpoint if needed and stop it."""

    request_id: RequestID


@dataclass(frozen=True)
class Shutdown:
    """The search is over. ``failure`` marks a search that could not go on."""

    failure: bool = False


Operation = Create | ValidateAfter | Close | Shutdown


class ExitedReason(enum.Enum):
    """Why a trial stopped before the searcher closed it."""

    ERRORED = "errored"  # the trial failed past its restarts
    USER_CANCELED = "user_canceled"  # a person killed the trial
    INVALID_HP = "invalid_hp"  # the trial raised InvalidHP


@dataclass
class SearcherContext:
    """What a search method may use besides its own state: hyperparameters and an RNG.

    The RNG is seeded from ``reproducibility.experiment_seed``, so the same seed gives the
    same trials. Request ids count up from 1.
    """

    hyperparameters: Mapping[str, Hyperparameter]
    seed: int = 0
    rng: random.Random = field(init=False)
    next_request_id: int = 1

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def new_request_id(self) -> RequestID:
        rid = self.next_request_id
        self.next_request_id += 1
        return rid

    def sample_hparams(self) -> dict[str, Any]:
        """One random draw of every hyperparameter, in the config's order."""
        return {name: hp.sample(self.rng) for name, hp in self.hyperparameters.items()}

    def constant_hparams(self) -> dict[str, Any]:
        return {
            name: hp.val for name, hp in self.hyperparameters.items() if isinstance(hp, ConstHP)
        }

    def state_dict(self) -> dict[str, Any]:
        version, internal, gauss = self.rng.getstate()
        return {
            "rng": [version, list(internal), gauss],
            "next_request_id": self.next_request_id,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        version, internal, gauss = state["rng"]
        self.rng.setstate((version, tuple(internal), gauss))
        self.next_request_id = int(state["next_request_id"])


class SearchMethod(ABC):
    """A hyperparameter search, driven by trial events. See the module docstring."""

    name: ClassVar[str]

    #: Objectives besides ``searcher.metric``, as ``(metric name, smaller_is_better)``: a
    #: multi-objective search. The master hands their values in each validation to
    #: ``objectives_reported`` right before its ``validation_completed``, and the UI's
    #: experiment page shows the trials' Pareto front over all the objectives.
    more_objectives: tuple[tuple[str, bool], ...] = ()

    @abstractmethod
    def initial_operations(self, ctx: SearcherContext) -> list[Operation]:
        """The operations to start the search with."""

    def trial_created(self, ctx: SearcherContext, request_id: RequestID) -> list[Operation]:
        """The trial of a Create operation exists now."""
        return []

    @abstractmethod
    def validation_completed(
        self, ctx: SearcherContext, request_id: RequestID, metric: float, op: ValidateAfter
    ) -> list[Operation]:
        """The trial finished ``op`` with this value of the searcher metric.

        ``metric`` is as reported; methods that compare apply ``smaller_is_better``.
        """

    def objectives_reported(self, request_id: RequestID, values: Mapping[str, float]) -> None:
        """The ``more_objectives`` of the validation about to complete, by name (NaN for one
        the validation lacked or that was not finite). Only called when there are some."""
        raise NotImplementedError(f"{type(self).__name__} names more_objectives but takes none")

    def trial_closed(self, ctx: SearcherContext, request_id: RequestID) -> list[Operation]:
        """The trial stopped after a Close."""
        return []

    @abstractmethod
    def trial_exited_early(
        self, ctx: SearcherContext, request_id: RequestID, reason: ExitedReason
    ) -> list[Operation]:
        """The trial stopped without being closed."""

    @abstractmethod
    def progress(self) -> float:
        """How far the search is, between 0.0 and 1.0."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state, enough to continue after a restart."""

    @abstractmethod
    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""

    def state_saved(self) -> None:  # noqa: B027 - a hook: most methods keep nothing
        """The master stored what ``state_dict`` last returned and is done with this
        instance (it builds a new one, from the stored state, for the next event): what
        the instance built may be kept for that one."""
