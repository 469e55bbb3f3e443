"""A real trial worker leaves TensorBoard event files in the experiment's checkpoint storage.

The experiment runs on a scheduling master with the local resource manager (the set-up of
tests/exec/test_worker_e2e.py, reused): the fake framework's trial trains to 4 and 8
batches, validating and checkpointing at each. Its event file in
``<storage>/tensorboard/experiment_<id>/trial_<id>/`` must hold the training and
validation metrics the master recorded, at the same steps. The reporter's own test checks
NaN, and that an upload that fails is a warning, not the end of the trial.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from detlite.config import load_config
from detlite.exec._master import MasterClient
from detlite.exec.reporter import MasterReporter
from detlite.tensorboard import FILE_VERSION, read_events
from tests.exec.test_worker_e2e import (  # noqa: F401 - _fake_framework_in_workers: autouse
    PBT_TWO_ROUNDS,
    _config,
    _create,
    _fake_framework_in_workers,
    _metrics,
    _trials,
    _wait_for,
    scheduling_master,
)
from tests.master import conftest as _master_fixtures
from tests.master.conftest import LiveMaster
from tests.master.factories import experiment_config, make_experiment, make_trial

if TYPE_CHECKING:
    from detlite.config import ExperimentConfig

sqlite_url = _master_fixtures.sqlite_url
sqlite_master = _master_fixtures.sqlite_master


def test_worker_writes_event_files_into_checkpoint_storage(sqlite_url: str, tmp_path: Path) -> None:
    with scheduling_master(sqlite_url, tmp_path, slots=1) as master:
        api, exp_id = _create(master, tmp_path, _config(tmp_path, searcher=PBT_TWO_ROUNDS))
        assert _wait_for(api, exp_id, {"STATE_COMPLETED", "STATE_ERROR"}) == "STATE_COMPLETED"
        [trial] = _trials(api, exp_id)
        training = _metrics(api, trial["id"], "training")
        validation = _metrics(api, trial["id"], "validation")

    folder = tmp_path / "storage" / "tensorboard" / f"experiment_{exp_id}"
    [trial_dir] = folder.iterdir()
    assert trial_dir.name == f"trial_{trial['id']}"
    [event_file] = trial_dir.iterdir()
    assert event_file.name.startswith("events.out.tfevents.")
    events = read_events(event_file)
    assert events[0].file_version == FILE_VERSION

    def series(prefix: str) -> list[tuple[int, dict[str, float]]]:
        return [
            (e.step, {k.split("/", 1)[1]: v for k, v in e.scalars.items()})
            for e in events
            if e.scalars and all(k.startswith(prefix + "/") for k in e.scalars)
        ]

    def expected(rows: list[dict[str, object]]) -> list[tuple[int, dict[str, object]]]:
        return [(int(str(r["stepsCompleted"])), dict(r["metrics"])) for r in rows]  # type: ignore[call-overload]

    assert [s for s, _ in series("train")] == [4, 8]
    assert [s for s, _ in series("val")] == [4, 8]
    for (step, values), (want_step, want) in zip(
        series("train") + series("val"), expected(training) + expected(validation), strict=True
    ):
        assert step == want_step
        numbers = {k: v for k, v in want.items() if isinstance(v, float | int)}
        assert values == pytest.approx(numbers, rel=1e-6)


def test_reporter_records_reports_and_survives_a_failed_upload(
    sqlite_master: LiveMaster, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    storage = tmp_path / "storage"
    storage.mkdir()
    (storage / "blocker").write_text("a file where the tensorboard folder would go")
    with sqlite_master.db() as db:
        good = make_experiment(db, storage_path=storage)
        bad = make_experiment(
            db,
            config=experiment_config(
                checkpoint_storage={
                    "type": "shared_fs",
                    "host_path": str(storage),
                    "storage_path": "blocker",
                }
            ),
        )
        runs = [(e.id, make_trial(db, e).id, load_config(e.config)) for e in (good, bad)]
    client = MasterClient(sqlite_master.url, sqlite_master.login("determined"), retry_for=5)

    def reporter(exp_id: int, trial_id: int, config: ExperimentConfig) -> MasterReporter:
        return MasterReporter(
            client,
            trial_id=trial_id,
            trial_run_id=0,
            config=config,
            experiment_id=exp_id,
            tensorboard_dir=tmp_path / f"tb{trial_id}",
        )

    (exp_id, trial_id, config), (bad_exp, bad_trial, bad_config) = runs
    first = reporter(exp_id, trial_id, config)
    first.report_training(5, {"loss": float("nan"), "lr": 0.5}, 8)  # sent to the master as "NaN"
    first.report_validation(5, {"validation_loss": 0.25}, 8)
    first.close()
    [event_file] = (
        storage / "tensorboard" / f"experiment_{exp_id}" / f"trial_{trial_id}"
    ).iterdir()
    _, train, val = read_events(event_file)
    assert train.step == 5 and math.isnan(train.scalars["train/loss"])
    assert train.scalars["train/lr"] == 0.5 and val.scalars == {"val/validation_loss": 0.25}

    second = reporter(bad_exp, bad_trial, bad_config)
    second.report_validation(5, {"validation_loss": 0.5}, 8)
    with caplog.at_level(logging.WARNING, logger="detlite.exec"):
        second.close()  # the upload fails: a warning, not the trial's end
    assert any(
        "could not upload the TensorBoard event files" in r.getMessage() for r in caplog.records
    )
    assert len(list((tmp_path / f"tb{bad_trial}").iterdir())) == 1  # kept locally
    client.close()
