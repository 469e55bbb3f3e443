"""TrialRunner: Determined's per-trial workload sequencing, workload by workload.

Every test asserts the exact sequence of workloads (``str(Workload)``: ``"train 3 @3"`` is
3 batches ending at batch 3) for one config, with the fake framework's LinearTrial driven
through ``Recorder``, a FakeController that records each call it receives and can replace
the searcher metric of its validations with scripted values.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from detlite.checkpoint import read_metadata
from detlite.config import Length
from detlite.errors import InvalidExperiment
from detlite.harness import BuiltTrial, build_trial
from detlite.interfaces import TrainResult, ValidationResult
from detlite.plugins import Plugins
from detlite.testing.fake import FakeController, LinearTrial, Record, linear_config, linear_hparams
from detlite.trial import DistributedContext
from detlite.workloads import (
    NullReporter,
    RecordingReporter,
    Reporter,
    RunnerState,
    TrialRunner,
    TrialStopped,
    Workload,
)


class Recorder(FakeController):
    """A FakeController that logs its calls; ``scripted`` replaces validation losses in turn."""

    scripted: list[float]
    fail_validation = False
    short_by = 0

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.calls: list[str] = []
        self.scripted = []

    def train(self, num_batches: int) -> TrainResult:
        self.calls.append(f"train {num_batches}")
        return super().train(num_batches - self.short_by)

    def validate(self, max_batches: int | None = None) -> ValidationResult:
        self.calls.append("validate")
        if self.fail_validation:
            raise RuntimeError("validation blew up")
        result = super().validate(max_batches)
        if self.scripted:
            result.metrics["validation_loss"] = self.scripted.pop(0)
        return result

    def save(self, path: Path) -> None:
        self.calls.append(f"save {self.batches_trained}")
        super().save(path)

    def load(self, path: Path, **kwargs: Any) -> None:
        self.calls.append("load")
        super().load(path, **kwargs)

    def close(self) -> None:
        self.calls.append("close")


class StopDuringBatch4(LinearTrial):
    """Requests a stop while training batch 4 (the fifth)."""

    def train_batch(self, batch: list[Record], epoch_idx: int, batch_idx: int) -> dict[str, Any]:
        if batch_idx == 4:
            self.context.set_stop_requested(True)
        return super().train_batch(batch, epoch_idx, batch_idx)


class StopWhileValidating(LinearTrial):
    def evaluate_batch(self, batch: list[Record]) -> dict[str, Any]:
        self.context.set_stop_requested(True)
        return super().evaluate_batch(batch)


def make(
    plugins: Plugins,
    root: Path,
    *,
    trial_class: type[LinearTrial] = LinearTrial,
    scripted: tuple[float, ...] = (),
    rank: int = 0,
    size: int = 1,
    latest: str | None = None,
    state: RunnerState | None = None,
    **config: Any,
) -> tuple[TrialRunner, RecordingReporter, Recorder]:
    cfg = linear_config()
    cfg.update(config)
    built = build_trial(
        trial_class,
        cfg,
        linear_hparams(),
        plugins=plugins,
        distributed=DistributedContext(rank=rank, local_rank=rank, size=size),
    )
    recorder = Recorder(built.trial, built.context, built.controller.placement)
    recorder.scripted.extend(scripted)
    reporter = RecordingReporter()
    runner = TrialRunner(
        BuiltTrial(built.trial, built.context, recorder, built.adapter),
        root / "checkpoints",
        reporter=reporter,
        latest_checkpoint=latest,
        state=state,
    )
    return runner, reporter, recorder


def seq(runner: TrialRunner, start: int = 0) -> list[str]:
    return [str(w) for w in runner.history[start:]]


# -- training lengths ---------------------------------------------------------------------


def test_scheduling_unit_splits_training(fake_plugins: Plugins, tmp_path: Path) -> None:
    runner, reporter, recorder = make(fake_plugins, tmp_path, scheduling_unit=3)
    result = runner.train_to(10)
    assert seq(runner) == [
        "train 3 @3",
        "train 3 @6",
        "train 3 @9",
        "train 1 @10",
        "checkpoint @10",
        "validate @10",
    ]
    assert recorder.calls == ["train 3", "train 3", "train 3", "train 1", "save 10", "validate"]
    trainings = reporter.of_kind("training")
    assert [(r.batches_trained, r.num_inputs) for r in trainings] == [
        (3, 12),
        (6, 12),
        (9, 12),
        (10, 4),
    ]
    (checkpoint,) = reporter.of_kind("checkpoint")
    assert checkpoint.path == runner.latest_checkpoint == runner.checkpoints[0]
    assert read_metadata(checkpoint.path)["batches_trained"] == 10
    (validation,) = reporter.of_kind("validation")
    assert validation.batches_trained == 10 and validation.metrics == result.metrics
    assert result.num_inputs == 12
    # A checkpoint is reported before the validation that follows it.
    kinds = [r.kind for r in reporter.reports if r.kind != "log"]
    assert kinds[-2:] == ["checkpoint", "validation"]


def test_successive_operations_continue_the_count(fake_plugins: Plugins, tmp_path: Path) -> None:
    runner, _, _ = make(fake_plugins, tmp_path, scheduling_unit=4)
    runner.train_to(5)
    runner.train_to(7)
    runner.train_to(7)  # the same length again: answered by the validation already made
    assert seq(runner) == [
        "train 4 @4",
        "train 1 @5",
        "checkpoint @5",
        "validate @5",
        "train 2 @7",
        "checkpoint @7",
        "validate @7",
    ]
    with pytest.raises(ValueError, match="already trained 7"):
        runner.train_to(6)


def test_a_controller_that_miscounts_is_an_error(fake_plugins: Plugins, tmp_path: Path) -> None:
    runner, _, recorder = make(fake_plugins, tmp_path)
    recorder.short_by = 1
    with pytest.raises(RuntimeError, match=r"train\(10\) advanced batches_trained by 9"):
        runner.train_to(10)


# -- min_validation_period and checkpoint_policy -------------------------------------------


def test_min_validation_period_with_policy_none(fake_plugins: Plugins, tmp_path: Path) -> None:
    runner, reporter, _ = make(
        fake_plugins, tmp_path, min_validation_period={"batches": 4}, checkpoint_policy="none"
    )
    runner.train_to(10)
    assert seq(runner) == [
        "train 4 @4",
        "validate @4",
        "train 4 @8",
        "validate @8",
        "train 2 @10",
        "checkpoint @10",
        "validate @10",
    ]
    assert [r.batches_trained for r in reporter.of_kind("validation")] == [4, 8, 10]


def test_policy_all_checkpoints_after_every_validation(
    fake_plugins: Plugins, tmp_path: Path
) -> None:
    runner, _, _ = make(
        fake_plugins, tmp_path, min_validation_period={"batches": 4}, checkpoint_policy="all"
    )
    runner.train_to(10)
    assert seq(runner) == [
        "train 4 @4",
        "validate @4",
        "checkpoint @4",
        "train 4 @8",
        "validate @8",
        "checkpoint @8",
        "train 2 @10",
        "checkpoint @10",
        "validate @10",
    ]


@pytest.mark.parametrize(
    ("smaller_is_better", "losses", "expected"),
    [
        # 3 is the best so far, 5 is not, 2 is: only the first gets a policy checkpoint,
        # because the last is a searcher validation, checkpointed before it ran.
        (True, (3.0, 5.0, 2.0), ["checkpoint @4"]),
        (False, (3.0, 5.0, 2.0), ["checkpoint @4", "checkpoint @8"]),
        (True, (3.0, 3.0, 1.0), ["checkpoint @4", "checkpoint @8"]),  # a tie is the best
        (True, (math.nan, 3.0, 1.0), ["checkpoint @8"]),  # NaN is never the best
    ],
)
def test_policy_best_checkpoints_after_the_trials_best_validations(
    fake_plugins: Plugins,
    tmp_path: Path,
    smaller_is_better: bool,
    losses: tuple[float, ...],
    expected: list[str],
) -> None:
    config = linear_config()
    config["searcher"]["smaller_is_better"] = smaller_is_better
    runner, _, _ = make(
        fake_plugins,
        tmp_path,
        scripted=losses,
        min_validation_period={"batches": 4},
        searcher=config["searcher"],
    )
    runner.train_to(10)
    policy_checkpoints = [s for s in seq(runner) if s.startswith("checkpoint")][:-1]
    assert policy_checkpoints == expected
    assert seq(runner)[-3:] == ["train 2 @10", "checkpoint @10", "validate @10"]
    best = [x for x in losses if not math.isnan(x)]
    assert runner.state.best_metric == (min(best) if smaller_is_better else max(best))


def test_a_searcher_validation_where_one_just_ran_reuses_it(
    fake_plugins: Plugins, tmp_path: Path
) -> None:
    runner, reporter, recorder = make(
        fake_plugins, tmp_path, min_validation_period={"batches": 5}, checkpoint_policy="none"
    )
    result = runner.train_to(10)
    assert seq(runner) == [
        "train 5 @5",
        "validate @5",
        "train 5 @10",
        "validate @10",
        "checkpoint @10",
    ]
    assert recorder.calls.count("validate") == 2
    assert result.metrics == reporter.of_kind("validation")[-1].metrics


def test_missing_or_bad_searcher_metric_is_explained(fake_plugins: Plugins, tmp_path: Path) -> None:
    config = linear_config()
    config["searcher"]["metric"] = "accuracy"
    runner, _, _ = make(fake_plugins, tmp_path, searcher=config["searcher"])
    with pytest.raises(InvalidExperiment, match=r"lack searcher\.metric 'accuracy'.*abs_error"):
        runner.train_to(2)
    config["searcher"]["metric"] = None
    runner, _, _ = make(fake_plugins, tmp_path, searcher=config["searcher"])
    runner.train_to(2)  # without a metric nothing is "best", and nothing fails
    assert runner.state.best_metric is None


# -- min_checkpoint_period, both periods, initial validation -------------------------------


def test_min_checkpoint_period(fake_plugins: Plugins, tmp_path: Path) -> None:
    runner, _, _ = make(
        fake_plugins, tmp_path, scheduling_unit=3, min_checkpoint_period={"batches": 4}
    )
    runner.train_to(10)
    assert seq(runner) == [
        "train 3 @3",
        "train 1 @4",
        "checkpoint @4",
        "train 3 @7",
        "train 1 @8",
        "checkpoint @8",
        "train 2 @10",
        "checkpoint @10",
        "validate @10",
    ]
    assert len(runner.checkpoints) == 3 and len(set(runner.checkpoints)) == 3


def test_both_periods_validation_first(fake_plugins: Plugins, tmp_path: Path) -> None:
    runner, _, recorder = make(
        fake_plugins,
        tmp_path,
        min_validation_period={"batches": 4},
        min_checkpoint_period={"batches": 6},
        checkpoint_policy="none",
    )
    runner.train_to(12)
    assert seq(runner) == [
        "train 4 @4",
        "validate @4",
        "train 2 @6",
        "checkpoint @6",
        "train 2 @8",
        "validate @8",
        "train 4 @12",
        "validate @12",  # both periods are due: validation has the higher priority
        "checkpoint @12",
    ]
    assert recorder.calls.count("validate") == 3


def test_initial_validation(fake_plugins: Plugins, tmp_path: Path) -> None:
    runner, reporter, _ = make(
        fake_plugins, tmp_path, scheduling_unit=5, perform_initial_validation=True
    )
    runner.train_to(10)
    runner.train_to(12)
    assert seq(runner) == [
        "validate @0",
        "train 5 @5",
        "train 5 @10",
        "checkpoint @10",
        "validate @10",
        "train 2 @12",
        "checkpoint @12",
        "validate @12",
    ]
    assert reporter.of_kind("validation")[0].batches_trained == 0


def test_initial_validation_answers_a_validation_at_zero(
    fake_plugins: Plugins, tmp_path: Path
) -> None:
    runner, _, recorder = make(fake_plugins, tmp_path, perform_initial_validation=True)
    runner.train_to(0)
    assert seq(runner) == ["validate @0"] and recorder.calls == ["validate"]


# -- lengths in records and epochs -----------------------------------------------------------


def test_periods_and_lengths_in_epochs_and_records(fake_plugins: Plugins, tmp_path: Path) -> None:
    # 20 records per epoch at 4 records per batch: an epoch is 5 batches; 12 records are 3.
    runner, _, _ = make(
        fake_plugins,
        tmp_path,
        records_per_epoch=20,
        min_validation_period={"epochs": 1},
        min_checkpoint_period={"records": 12},
        checkpoint_policy="none",
    )
    total = runner.batches(Length(unit="epochs", value=2))
    assert total == 10
    runner.train_to(total)
    assert seq(runner) == [
        "train 3 @3",
        "checkpoint @3",
        "train 2 @5",
        "validate @5",
        "train 1 @6",
        "checkpoint @6",
        "train 3 @9",
        "checkpoint @9",
        "train 1 @10",
        "validate @10",
        "checkpoint @10",
    ]


def test_a_period_shorter_than_a_batch_means_every_batch(
    fake_plugins: Plugins, tmp_path: Path
) -> None:
    runner, _, _ = make(
        fake_plugins, tmp_path, min_validation_period={"records": 2}, checkpoint_policy="none"
    )
    runner.train_to(2)
    assert seq(runner) == [
        "train 1 @1",
        "validate @1",
        "train 1 @2",
        "validate @2",
        "checkpoint @2",
    ]


# -- stopping and resuming ------------------------------------------------------------------

STOP_CONFIG: dict[str, Any] = {
    "scheduling_unit": 3,
    "min_validation_period": {"batches": 4},
    "checkpoint_policy": "none",
}
UNINTERRUPTED = [
    "train 3 @3",
    "train 1 @4",
    "validate @4",
    "train 3 @7",
    "train 1 @8",
    "validate @8",
    "train 2 @10",
    "checkpoint @10",
    "validate @10",
]


def test_a_stop_request_checkpoints_and_raises(fake_plugins: Plugins, tmp_path: Path) -> None:
    runner, reporter, recorder = make(
        fake_plugins, tmp_path, trial_class=StopDuringBatch4, **STOP_CONFIG
    )
    with pytest.raises(TrialStopped) as info:
        runner.train_to(10)
    assert seq(runner) == [*UNINTERRUPTED[:4], "checkpoint @7"]
    assert info.value.batches_trained == 7
    checkpoint = info.value.checkpoint
    assert checkpoint is not None and checkpoint == runner.latest_checkpoint
    assert read_metadata(checkpoint)["batches_trained"] == 7
    assert "stopping after 7 batches" in reporter.of_kind("log")[-1].message
    # The trial still wants to stop: nothing more runs, and closing saves nothing new.
    with pytest.raises(TrialStopped):
        runner.train_to(10)
    assert runner.close() == checkpoint
    assert len(seq(runner)) == 5 and recorder.calls[-1] == "close"


def test_resuming_after_a_stop_continues_the_same_sequence(
    fake_plugins: Plugins, tmp_path: Path
) -> None:
    whole, whole_reports, _ = make(fake_plugins, tmp_path / "whole", **STOP_CONFIG)
    expected = whole.train_to(10)
    assert seq(whole) == UNINTERRUPTED

    stopping, _, _ = make(fake_plugins, tmp_path / "a", trial_class=StopDuringBatch4, **STOP_CONFIG)
    with pytest.raises(TrialStopped) as info:
        stopping.train_to(10)
    resumed, resumed_reports, recorder = make(
        fake_plugins, tmp_path / "b", latest=info.value.checkpoint, **STOP_CONFIG
    )
    assert recorder.calls == ["load"] and resumed.batches_trained == 7
    result = resumed.train_to(10)
    assert seq(resumed) == UNINTERRUPTED[4:]
    # The fake framework resumes exactly: the metrics are those of the uninterrupted run.
    assert result.metrics == expected.metrics
    assert resumed_reports.of_kind("training")[-1] == whole_reports.of_kind("training")[-1]


def test_a_stop_during_the_searcher_validation_completes_it(
    fake_plugins: Plugins, tmp_path: Path
) -> None:
    runner, _, _ = make(fake_plugins, tmp_path, trial_class=StopWhileValidating)
    result = runner.train_to(5)
    assert result.metrics and seq(runner) == ["train 5 @5", "checkpoint @5", "validate @5"]
    with pytest.raises(TrialStopped) as info:
        runner.train_to(10)
    assert info.value.batches_trained == 5 and len(runner.history) == 3


def test_the_snapshot_resumes_past_a_validation_after_the_checkpoint(
    fake_plugins: Plugins, tmp_path: Path
) -> None:
    config: dict[str, Any] = {"min_validation_period": {"batches": 3}, "checkpoint_policy": "none"}
    whole, _, _ = make(fake_plugins, tmp_path / "whole", **config)
    whole.train_to(4)
    checkpoint, snapshot = whole.latest_checkpoint, whole.snapshot
    whole.train_to(8)
    assert seq(whole) == [
        "train 3 @3",
        "validate @3",
        "train 1 @4",
        "checkpoint @4",
        "validate @4",
        "train 3 @7",
        "validate @7",
        "train 1 @8",
        "checkpoint @8",
        "validate @8",
    ]
    assert checkpoint is not None
    # The checkpoint was written before its searcher validation; the snapshot knows of it.
    saved = read_metadata(checkpoint)["workload_state"]
    assert saved["batches_since_validation"] == 1 and snapshot.batches_since_validation == 0
    resumed, _, _ = make(fake_plugins, tmp_path / "b", latest=checkpoint, state=snapshot, **config)
    resumed.train_to(8)
    assert seq(resumed) == seq(whole, 5)


def test_restored_state_keeps_the_best_metric(fake_plugins: Plugins, tmp_path: Path) -> None:
    runner, _, _ = make(fake_plugins, tmp_path, scripted=(2.0, 1.0))
    runner.train_to(3)
    runner.train_to(6)
    assert runner.latest_checkpoint is not None
    state = read_metadata(runner.latest_checkpoint)["workload_state"]
    assert state["best_metric"] == 2.0  # saved before the validation at 6
    resumed, _, _ = make(fake_plugins, tmp_path, latest=runner.latest_checkpoint)
    assert resumed.state.best_metric == 2.0
    assert resumed.state == RunnerState.from_dict(state)


# -- ranks, closing, reporters ---------------------------------------------------------------


def test_other_ranks_run_the_same_workloads_but_save_and_report_nothing(
    fake_plugins: Plugins, tmp_path: Path
) -> None:
    config: dict[str, Any] = {"scheduling_unit": 3, "min_checkpoint_period": {"batches": 4}}
    chief, chief_reports, _ = make(fake_plugins, tmp_path / "0", size=2, **config)
    other, other_reports, recorder = make(fake_plugins, tmp_path / "1", rank=1, size=2, **config)
    chief.train_to(10)
    other.train_to(10)
    assert seq(other) == seq(chief)
    assert other_reports.reports == [] and chief_reports.of_kind("checkpoint")
    assert not (tmp_path / "1").exists() and other.latest_checkpoint is None
    assert not any(call.startswith("save") for call in recorder.calls)


def test_checkpoints_are_uuid_directories_with_the_workload_state(
    fake_plugins: Plugins, tmp_path: Path
) -> None:
    runner, reporter, _ = make(fake_plugins, tmp_path, min_checkpoint_period={"batches": 2})
    runner.train_to(4)
    root = tmp_path / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == sorted(
        Path(c).name for c in runner.checkpoints
    )
    for report in reporter.of_kind("checkpoint"):
        assert report.path is not None
        metadata = json.loads((Path(report.path) / "metadata.json").read_text())
        assert metadata["uuid"] == Path(report.path).name
        assert metadata["workload_state"]["batches_since_checkpoint"] == 0
        assert report.metadata == metadata


def test_close_checkpoints_what_is_left_and_closes_the_controller(
    fake_plugins: Plugins, tmp_path: Path
) -> None:
    runner, _, recorder = make(fake_plugins, tmp_path, min_validation_period={"batches": 4})
    recorder.fail_validation = True
    with pytest.raises(RuntimeError, match="validation blew up"):
        runner.train_to(10)
    path = runner.close()
    assert seq(runner) == ["train 4 @4", "checkpoint @4"]
    assert path is not None and read_metadata(path)["batches_trained"] == 4
    assert recorder.calls[-2:] == ["save 4", "close"]
    assert runner.close() == path and recorder.calls.count("close") == 1
    with pytest.raises(RuntimeError, match="closed"):
        runner.train_to(10)


def test_leaving_the_with_block_on_an_error_saves_nothing(
    fake_plugins: Plugins, tmp_path: Path
) -> None:
    runner, _, recorder = make(fake_plugins, tmp_path, min_validation_period={"batches": 4})
    recorder.fail_validation = True
    with pytest.raises(RuntimeError), runner:
        runner.train_to(10)
    assert recorder.calls == ["train 4", "validate", "close"]
    assert runner.checkpoints == []


def test_reporters() -> None:
    reporters: list[Reporter] = [NullReporter(), RecordingReporter()]
    for reporter in reporters:
        reporter.report_training(1, {"loss": 1.0}, 4)
        reporter.report_validation(1, {"loss": 2.0}, 4)
        reporter.report_checkpoint("/x", {"batches_trained": 1})
        reporter.log("hello")
    recording = reporters[1]
    assert isinstance(recording, RecordingReporter)
    assert [r.kind for r in recording.reports] == ["training", "validation", "checkpoint", "log"]
    assert recording.of_kind("checkpoint")[0].path == "/x"
    assert str(Workload("train", 3, 6)) == "train 3 @6"
    assert str(Workload("validate", 0, 6)) == "validate @6"
