"""The typed objects plugins register; the objects do the work.

Hooks (``detlite.hookspecs``) only say *what* a plugin provides. Anything with several
methods is a base class here, so mypy checks implementations (pluggy does not):

- ``FrameworkAdapter``: owns some Trial classes; gives their ``TrialController`` (the
  training loop) and places devices.
- ``TrialController``: trains, validates, saves and loads one trial instance.
- ``CheckpointFormat``: loads a checkpoint directory of one ``format`` into memory.
- ``StorageBackend``: where checkpoint directories live (shared_fs, s3).
- ``ResourceManager``: where trial workers run (local processes, ray).
- ``SearchMethod``: hyperparameter search (defined in ``detlite.searcher.base``).
"""

from __future__ import annotations

import importlib.metadata
import shutil
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from detlite.searcher.base import SearchMethod

if TYPE_CHECKING:
    from detlite.trial import DistributedContext, Trial, TrialContext

__all__ = [
    "CheckpointFormat",
    "DevicePlacement",
    "FileRecord",
    "FrameworkAdapter",
    "ResourceManager",
    "ResourceManagerStatus",
    "SearchMethod",
    "StorageBackend",
    "TrainResult",
    "TrialController",
    "ValidationResult",
    "WorkerSpec",
]


@dataclass(frozen=True)
class DevicePlacement:
    """Where one rank of a trial computes."""

    device: str = "cpu"  # "cpu", "cuda:0", ...
    rank: int = 0
    local_rank: int = 0
    size: int = 1
    backend: str | None = None  # the collective backend for size > 1: "gloo", "nccl"

    def describe(self) -> str:
        where = f"rank {self.rank}/{self.size} on {self.device}"
        return f"{where} ({self.backend})" if self.backend else where


@dataclass
class TrainResult:
    """What one train workload produced. ``metrics`` averages ``batch_metrics``."""

    metrics: dict[str, Any]
    batch_metrics: list[dict[str, Any]] = field(default_factory=list)
    num_inputs: int = 0


@dataclass
class ValidationResult:
    metrics: dict[str, Any]
    num_inputs: int = 0


class TrialController(ABC):
    """Drives one Trial instance for the harness: the framework's training loop.

    The harness decides *when* to train, validate and checkpoint (Determined's workload
    sequencing); the controller knows *how* for its framework. Users override the Trial's
    methods, never the controller.
    """

    #: The ``format`` string the controller's ``save`` writes (a registered CheckpointFormat).
    checkpoint_format: ClassVar[str]

    def __init__(self, trial: Trial, context: TrialContext, placement: DevicePlacement) -> None:
        self.trial = trial
        self.context = context
        self.placement = placement
        self.batches_trained = 0

    @abstractmethod
    def train(self, num_batches: int) -> TrainResult:
        """Train ``num_batches`` more batches, continuing from ``batches_trained``."""

    @abstractmethod
    def validate(self, max_batches: int | None = None) -> ValidationResult:
        """Compute validation metrics, over at most ``max_batches`` batches if given."""

    @abstractmethod
    def save(self, path: Path) -> None:
        """Write the framework's files into the existing, empty directory ``path``.

        Everything needed to resume exactly: models, optimizers, RNG states, counters.
        ``metadata.json`` is written by the harness afterwards, never by the controller.
        """

    @abstractmethod
    def load(self, path: Path, **kwargs: Any) -> None:
        """Restore what ``save`` wrote, ``batches_trained`` included.

        ``kwargs`` come from the user loading a checkpoint (``Checkpoint.load(**kwargs)``)
        and go to the framework's reader (``torch.load``'s ``map_location``...).
        """

    def checkpoint_saved(self, path: Path) -> None:  # noqa: B027 - optional hook
        """A checkpoint that ``save`` wrote is complete at its final ``path``.

        Called by the harness after ``metadata.json`` is written and the directory is
        renamed into place; callbacks that ship checkpoints elsewhere belong here.
        """

    def close(self) -> None:  # noqa: B027 - optional hook, empty by default
        """Release resources (process groups, data loader workers)."""


class FrameworkAdapter(ABC):
    """A framework's entry into the harness: which trials it owns and how to run them.

    ``plugin.py`` registers the adapter by import path, so that this module, and the
    framework with it, is imported only when a trial actually needs it.
    """

    #: Short name shown by ``detlite plugins`` and written into metadata (``torch``).
    name: ClassVar[str]
    #: The distribution whose version is the framework's version (``torch``).
    distribution: ClassVar[str]

    def version(self) -> str | None:
        try:
            return importlib.metadata.version(self.distribution)
        except importlib.metadata.PackageNotFoundError:
            return None

    def framework_string(self) -> str:
        """``<name>-<version>``, as recorded in checkpoint metadata (``torch-2.13.0``)."""
        return f"{self.name}-{self.version() or 'unknown'}"

    @abstractmethod
    def owns(self, trial_class: type) -> bool:
        """Whether this framework runs ``trial_class`` (usually an issubclass check)."""

    @abstractmethod
    def controller_for(self, trial_class: type[Trial]) -> type[TrialController]:
        """The controller class that trains ``trial_class``."""

    def seed(self, seed: int) -> None:  # noqa: B027 - frameworks without global RNGs need nothing
        """Seed the framework's global random generators before the trial is built."""

    def place_devices(self, distributed: DistributedContext) -> DevicePlacement:
        """Choose this rank's device. The default is the CPU."""
        return DevicePlacement(
            device="cpu",
            rank=distributed.get_rank(),
            local_rank=distributed.get_local_rank(),
            size=distributed.get_size(),
        )


class CheckpointFormat(ABC):
    """One on-disk checkpoint format, named by the ``format`` key of ``metadata.json``."""

    name: ClassVar[str]
    #: The framework adapter that writes this format.
    framework: ClassVar[str]

    @abstractmethod
    def save(self, state: Any, path: Path) -> None:
        """Write ``state`` (the controller's) into the directory ``path``."""

    @abstractmethod
    def load(self, path: Path, metadata: Mapping[str, Any], **kwargs: Any) -> Any:
        """Load the checkpoint at ``path`` into memory for a user (a model, a trial...)."""

    def remove(self, path: Path) -> None:
        """Delete a checkpoint directory of this format."""
        shutil.rmtree(path, ignore_errors=True)


@dataclass(frozen=True)
class FileRecord:
    """One file of a stored checkpoint, as the master records it."""

    size: int
    sha256: str


class StorageBackend(ABC):
    """Checkpoint storage: directories keyed by a storage id (the checkpoint uuid).

    Built from its ``checkpoint_storage`` config section.
    """

    type: ClassVar[str]

    @abstractmethod
    def __init__(self, config: Any) -> None: ...

    @abstractmethod
    def upload(self, src: Path, storage_id: str) -> dict[str, FileRecord]:
        """Store the directory ``src`` under ``storage_id``; return every file's record."""

    @abstractmethod
    def download(
        self, storage_id: str, dest: Path, *, files: Mapping[str, FileRecord] | None = None
    ) -> None:
        """Fetch the directory stored under ``storage_id`` into ``dest``.

        With ``files`` (the master's records), every file is checked against its size and
        sha256 before it appears in ``dest``.
        """

    @abstractmethod
    def delete(self, storage_id: str) -> None:
        """Delete everything stored under ``storage_id``. Missing is not an error."""

    @abstractmethod
    def exists(self, storage_id: str) -> bool: ...


@dataclass(frozen=True)
class WorkerSpec:
    """What a resource manager needs to start one trial's worker processes."""

    trial_id: int
    slots: int
    command: list[str]
    env: Mapping[str, str] = field(default_factory=dict)
    priority: int | None = None


@dataclass(frozen=True)
class ResourceManagerStatus:
    """Whether a resource manager can launch now.

    ``ok``: it can. ``disconnected``: what runs the workers cannot be reached (a Ray cluster
    lost); the scheduler launches nothing, and fails no trial for want of slots, until the
    manager is ``ok`` again. ``message`` says why, and what the manager is doing about it.
    """

    state: Literal["ok", "disconnected"] = "ok"
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.state == "ok"


class ResourceManager(ABC):
    """Where trial workers run: slots, and starting and stopping process groups."""

    type: ClassVar[str]

    @abstractmethod
    def total_slots(self) -> int: ...

    @abstractmethod
    def launch(self, spec: WorkerSpec) -> str:
        """Start the worker group; return a handle for ``poll`` and ``terminate``."""

    @abstractmethod
    def poll(self, handle: str) -> int | None:
        """None while the group runs; its exit code once every process has ended."""

    @abstractmethod
    def terminate(self, handle: str, *, force: bool = False) -> None:
        """Ask the group to stop (SIGTERM), or kill it with ``force``."""

    def placement(self, handle: str) -> list[dict[str, Any]] | None:
        """Where the group's ranks run, by rank, once the manager knows (None until then):
        each ``node`` (a host name) and ``devices`` (``gpu:<id>`` or ``cpu``), plus what else
        the manager can tell (Ray's ``nodeIp``, ``nodeId``)."""
        return None

    def status(self) -> ResourceManagerStatus:
        """Whether the manager can launch now; by default it always can."""
        return ResourceManagerStatus()

    def set_listener(self, callback: Callable[[], None] | None) -> None:  # noqa: B027 - optional
        """Have ``callback()`` called, from any thread, whenever a worker process of any
        group exits (it must be quick: wake a loop); None stops the calls. By default it is
        never called: exits are found by ``poll`` alone."""

    def close(self) -> None:  # noqa: B027 - nothing to release by default
        """Release the manager's own resources."""
