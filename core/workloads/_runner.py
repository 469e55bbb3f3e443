"""``TrialRunner``: the workload sequencing that ``detlite.workloads`` describes, and the
records it keeps (``Workload``, ``RunnerState``) and raises (``TrialStopped``)."""

from __future__ import annotations

import dataclasses
import math
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from detlite.checkpoint import read_metadata, save_checkpoint
from detlite.errors import InvalidExperiment
from detlite.interfaces import TrainResult, ValidationResult
from detlite.workloads._reporting import NullReporter, Reporter

if TYPE_CHECKING:
    from detlite.config import ExperimentConfig, Length
    from detlite.harness import BuiltTrial

__all__ = ["RunnerState", "TrialRunner", "TrialStopped", "Workload", "WorkloadKind"]

WorkloadKind = Literal["train", "validate", "checkpoint"]


@dataclass(frozen=True)
class Workload:
    """One unit of work the runner gave the controller."""

    kind: WorkloadKind
    num_batches: int  # batches trained by this workload; 0 unless kind is "train"
    batches_trained: int  # the trial's total once it ended

    def __str__(self) -> str:
        what = f"train {self.num_batches}" if self.kind == "train" else self.kind
        return f"{what} @{self.batches_trained}"


@dataclass
class RunnerState:
    """What the sequencing remembers between workloads, and across a restore."""

    batches_since_validation: int = 0
    batches_since_checkpoint: int = 0
    need_initial_validation: bool = False
    need_post_validation_checkpoint: bool = False
    best_metric: float | None = None
    #: {"batches_trained", "metrics", "num_inputs"} of the latest validation.
    last_validation: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunnerState:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


class TrialStopped(Exception):
    """The trial asked to stop; its un-checkpointed batches were checkpointed first.

    Not a DetliteError: code that handles errors must not swallow a graceful stop.
    ``checkpoint`` is the latest checkpoint's path (None on other ranks than the chief,
    or when the trial never checkpointed).
    """

    def __init__(self, batches_trained: int, checkpoint: str | None) -> None:
        self.batches_trained = batches_trained
        self.checkpoint = checkpoint
        super().__init__(f"the trial requested a stop after {batches_trained} batches")


def _plain(value: Any) -> Any:
    # Metrics may be framework scalars (numpy, 0-d tensors); the state must be JSON.
    item = getattr(value, "item", None)
    return item() if callable(item) else value


class TrialRunner:
    """Drives one trial's controller through searcher operations (see the module doc).

    ``checkpoint_root`` receives one new uuid-named directory per checkpoint.
    ``latest_checkpoint`` restores the trial from a checkpoint first; ``state`` overrides
    the sequencing state recorded in it (a ``snapshot`` kept by the caller).
    """

    def __init__(
        self,
        built: BuiltTrial,
        checkpoint_root: str | os.PathLike[str],
        *,
        reporter: Reporter | None = None,
        config: ExperimentConfig | None = None,
        latest_checkpoint: str | os.PathLike[str] | None = None,
        state: RunnerState | Mapping[str, Any] | None = None,
    ) -> None:
        self.built = built
        self.controller = built.controller
        self.context = built.context
        self.config = config if config is not None else built.context.env.config
        self.checkpoint_root = Path(checkpoint_root)
        self.reporter: Reporter = reporter if reporter is not None else NullReporter()
        self.is_chief = built.context.distributed.is_chief
        self.history: list[Workload] = []
        self.checkpoints: list[str] = []
        self.last_training: TrainResult | None = None
        self.latest_checkpoint: str | None = None
        self._closed = False
        self._validation_period = self._period(self.config.min_validation_period)
        self._checkpoint_period = self._period(self.config.min_checkpoint_period)
        restored: Mapping[str, Any] | None = None
        if latest_checkpoint is not None:
            restored = self._restore(Path(latest_checkpoint))
        if isinstance(state, RunnerState):
            self.state = dataclasses.replace(state)
        elif state is not None:
            self.state = RunnerState.from_dict(state)
        elif restored is not None:
            self.state = RunnerState.from_dict(restored)
        else:
            self.state = RunnerState(need_initial_validation=self.config.perform_initial_validation)
        self.snapshot = dataclasses.replace(self.state)

    # -- public ---------------------------------------------------------------------------

    @property
    def batches_trained(self) -> int:
        return self.controller.batches_trained

    def batches(self, length: Length) -> int:
        """A searcher length in batches, with this trial's global batch size."""
        return self.config.length_to_batches(length, self.context.get_global_batch_size())

    def train_to(self, total_batches: int) -> ValidationResult:
        """Train until ``total_batches`` in all, then validate (the searcher's ValidateAfter).

        Raises ``TrialStopped`` when the trial requests a stop before the end.
        """
        if self._closed:
            raise RuntimeError("this TrialRunner is closed")
        if total_batches < self.batches_trained:
            raise ValueError(
                f"cannot train to {total_batches} batches: the trial has already trained "
                f"{self.batches_trained}"
            )
        self._check_stop()
        state = self.state
        while True:
            if state.need_initial_validation:
                self._validate()
            elif state.need_post_validation_checkpoint and state.batches_since_checkpoint:
                self._checkpoint()
            elif self._due(self._validation_period, state.batches_since_validation):
                self._validate()
            elif self._due(self._checkpoint_period, state.batches_since_checkpoint):
                self._checkpoint()
            elif total_batches > self.batches_trained:
                self._train(self._next_train_size(total_batches))
            elif state.batches_since_checkpoint:
                self._checkpoint()
            else:
                return self._searcher_validation()
            self._check_stop()

    def close(self) -> str | None:
        """Checkpoint any un-checkpointed batches, as before Determined's Close, and release
        the controller. Returns the latest checkpoint's path (None off the chief)."""
        if not self._closed:
            try:
                if self.state.batches_since_checkpoint:
                    self._checkpoint()
            finally:
                self._closed = True
                self.controller.close()
        return self.latest_checkpoint

    def __enter__(self) -> TrialRunner:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None or isinstance(exc, TrialStopped):
            self.close()
        elif not self._closed:
            # After a failure the trial's state is suspect: release it, save nothing.
            self._closed = True
            self.controller.close()

    # -- the workloads ----------------------------------------------------------------------

    def _train(self, num_batches: int) -> None:
        before = self.controller.batches_trained
        result = self.controller.train(num_batches)
        advanced = self.controller.batches_trained - before
        if advanced != num_batches:
            raise RuntimeError(
                f"{type(self.controller).__name__}.train({num_batches}) advanced "
                f"batches_trained by {advanced}; a controller must train exactly what it is asked"
            )
        self.state.batches_since_validation += num_batches
        self.state.batches_since_checkpoint += num_batches
        self.last_training = result
        self._record("train", num_batches)
        if self.is_chief:
            self.reporter.report_training(self.batches_trained, result.metrics, result.num_inputs)
            self.reporter.log(f"trained {num_batches} batches ({self.batches_trained} in all)")

    def _validate(self) -> ValidationResult:
        result = self.controller.validate()
        state = self.state
        best = self._is_best(result.metrics)
        state.batches_since_validation = 0
        state.need_initial_validation = False
        state.last_validation = {
            "batches_trained": self.batches_trained,
            "metrics": {k: _plain(v) for k, v in result.metrics.items()},
            "num_inputs": result.num_inputs,
        }
        policy = self.config.checkpoint_policy
        if state.batches_since_checkpoint and (policy == "all" or (policy == "best" and best)):
            state.need_post_validation_checkpoint = True
        if not state.batches_since_checkpoint:
            # Determined's rollback snapshot follows a validation of checkpointed weights.
            self.snapshot = dataclasses.replace(state)
        self._record("validate", 0)
        if self.is_chief:
            self.reporter.report_validation(self.batches_trained, result.metrics, result.num_inputs)
        return result

    def _checkpoint(self) -> None:
        state = self.state
        state.batches_since_checkpoint = 0
        state.need_post_validation_checkpoint = False
        if self.is_chief:
            dest = self.checkpoint_root / str(uuid.uuid4())
            metadata = save_checkpoint(
                self.controller,
                self.built.adapter,
                dest,
                extra_metadata={"uuid": dest.name, "workload_state": state.to_dict()},
            )
            self.latest_checkpoint = str(dest)
            self.checkpoints.append(str(dest))
            self.reporter.report_checkpoint(str(dest), metadata)
        self.snapshot = dataclasses.replace(state)
        self._record("checkpoint", 0)

    def _searcher_validation(self) -> ValidationResult:
        last = self.state.last_validation
        if last is not None and last["batches_trained"] == self.batches_trained:
            return ValidationResult(dict(last["metrics"]), int(last["num_inputs"]))
        return self._validate()

    # -- helpers ----------------------------------------------------------------------------

    def _period(self, length: Length) -> int:
        if length.value == 0:
            return 0
        return max(1, self.batches(length))

    @staticmethod
    def _due(period: int, since: int) -> bool:
        return period > 0 and since >= period

    def _next_train_size(self, total_batches: int) -> int:
        state = self.state
        sizes = [total_batches - self.batches_trained, self.config.scheduling_unit]
        if self._validation_period:
            sizes.append(self._validation_period - state.batches_since_validation)
        if self._checkpoint_period:
            sizes.append(self._checkpoint_period - state.batches_since_checkpoint)
        return max(1, min(sizes))

    def _is_best(self, metrics: Mapping[str, Any]) -> bool:
        """Whether this validation is the trial's best so far; updates ``best_metric``."""
        name = self.config.searcher_metric
        if name is None:
            return False  # nothing to compare by: no validation can be "best"
        if name not in metrics:
            raise InvalidExperiment(
                f"the validation metrics lack searcher.metric {name!r} (got "
                f"{', '.join(sorted(metrics)) or 'none'}); return it from the trial's "
                "validation or change searcher.metric"
            )
        try:
            value = float(metrics[name])
        except (TypeError, ValueError):
            raise InvalidExperiment(
                f"searcher.metric {name!r} must be a number, got {metrics[name]!r}"
            ) from None
        if math.isnan(value):
            return False
        best = self.state.best_metric
        smaller = self.config.smaller_is_better
        if best is None or (value <= best if smaller else value >= best):
            self.state.best_metric = value
            return True
        return False

    def _check_stop(self) -> None:
        if not self.context.get_stop_requested():
            return
        if self.state.batches_since_checkpoint:
            self._checkpoint()
        if self.is_chief:
            self.reporter.log(f"stopping after {self.batches_trained} batches, as requested")
        raise TrialStopped(self.batches_trained, self.latest_checkpoint)

    def _record(self, kind: WorkloadKind, num_batches: int) -> None:
        self.history.append(Workload(kind, num_batches, self.batches_trained))

    def _restore(self, path: Path) -> Mapping[str, Any] | None:
        metadata = read_metadata(path)
        self.controller.load(path)
        expected = int(metadata["batches_trained"])
        if self.controller.batches_trained != expected:
            raise RuntimeError(
                f"{type(self.controller).__name__}.load() restored batches_trained "
                f"{self.controller.batches_trained}, but {path} was saved at {expected}"
            )
        self.latest_checkpoint = str(path)
        state = metadata.get("workload_state")
        return state if isinstance(state, Mapping) else None
