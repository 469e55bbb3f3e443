"""Where a ``TrialRunner`` sends what a trial produces: the ``Reporter`` protocol.

``NullReporter`` drops everything; ``RecordingReporter`` keeps every call in order (the
trial worker builds its result from one, and tests assert on them). The master's reporter,
which stores metrics and checkpoints, comes with the master.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

__all__ = ["NullReporter", "RecordingReporter", "Report", "Reporter"]


class Reporter(Protocol):
    """Where a runner sends what the trial produced. Called on the chief only."""

    def report_training(
        self, batches_trained: int, metrics: Mapping[str, Any], num_inputs: int
    ) -> None:
        """A train workload ended at ``batches_trained``; ``metrics`` average its batches."""

    def report_validation(
        self, batches_trained: int, metrics: Mapping[str, Any], num_inputs: int
    ) -> None:
        """A validation ran on the weights after ``batches_trained`` batches."""

    def report_checkpoint(self, path: str, metadata: Mapping[str, Any]) -> None:
        """A complete checkpoint directory now exists at ``path``."""

    def log(self, message: str) -> None:
        """One line of progress for people."""


class NullReporter:
    """A reporter that drops everything."""

    def report_training(
        self, batches_trained: int, metrics: Mapping[str, Any], num_inputs: int
    ) -> None:
        pass

    def report_validation(
        self, batches_trained: int, metrics: Mapping[str, Any], num_inputs: int
    ) -> None:
        pass

    def report_checkpoint(self, path: str, metadata: Mapping[str, Any]) -> None:
        pass

    def log(self, message: str) -> None:
        pass


@dataclass(frozen=True)
class Report:
    """One call a ``RecordingReporter`` received."""

    kind: Literal["training", "validation", "checkpoint", "log"]
    batches_trained: int | None = None
    metrics: Mapping[str, Any] = field(default_factory=dict)
    num_inputs: int = 0
    path: str | None = None  # a checkpoint's directory
    metadata: Mapping[str, Any] = field(default_factory=dict)  # a checkpoint's metadata.json
    message: str = ""  # a log line


class RecordingReporter:
    """A reporter that keeps every call, in order, in ``reports``."""

    def __init__(self) -> None:
        self.reports: list[Report] = []

    def report_training(
        self, batches_trained: int, metrics: Mapping[str, Any], num_inputs: int
    ) -> None:
        self.reports.append(Report("training", batches_trained, dict(metrics), num_inputs))

    def report_validation(
        self, batches_trained: int, metrics: Mapping[str, Any], num_inputs: int
    ) -> None:
        self.reports.append(Report("validation", batches_trained, dict(metrics), num_inputs))

    def report_checkpoint(self, path: str, metadata: Mapping[str, Any]) -> None:
        batches = int(metadata["batches_trained"])
        self.reports.append(Report("checkpoint", batches, path=path, metadata=dict(metadata)))

    def log(self, message: str) -> None:
        self.reports.append(Report("log", message=message))

    def of_kind(self, kind: str) -> list[Report]:
        return [r for r in self.reports if r.kind == kind]
