"""``MasterReporter``, ``MasterClient`` and ``LogShipper`` against a live master.

A real ``TrialRunner`` of the fake framework reports through ``MasterReporter``: its metrics,
its checkpoint (uploaded to shared_fs storage, recorded, local copy removed) and what a
restore from that checkpoint gives. ``MasterClient`` rides out a master that is down and
comes back on the same port. ``LogShipper`` ships logging records and tee'd stdout/stderr.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from detlite.api.enums import ExperimentState
from detlite.config import load_config
from detlite.errors import Conflict, MasterNotFound
from detlite.exec._master import MasterClient
from detlite.exec.logship import MAX_BATCH_BYTES, MAX_LINE_CHARS, LogShipper
from detlite.exec.reporter import MasterReporter, json_safe, searcher_metric_value
from detlite.experimental import Checkpoint
from detlite.harness import build_trial
from detlite.launch import free_port
from detlite.master._limits import REPORT_BODY_LIMIT
from detlite.master.orm import Trial, TrialLog
from detlite.testing import LinearTrial, linear_hparams, make_fake_plugins
from detlite.workloads import TrialRunner
from tests.master.conftest import LiveMaster, live_master, make_settings
from tests.master.factories import experiment_config, make_experiment, make_trial


class _Scalar:
    """Stands in for a framework scalar (numpy, a 0-d tensor): it has ``item()``."""

    def __init__(self, value: float) -> None:
        self.value = value

    def item(self) -> float:
        return self.value


class _Array:
    """Stands in for an array: ``item()`` fails for more than one element, ``tolist()`` works."""

    def item(self) -> float:
        raise ValueError("only one element tensors can be converted to Python scalars")

    def tolist(self) -> list[Any]:
        return [1, 2.5, float("nan")]


def test_json_safe_and_searcher_metric() -> None:
    assert json_safe(
        {"a": float("nan"), "b": float("inf"), "c": -math.inf, 3: (1, _Scalar(0.5)), "d": _Array()}
    ) == {"a": "NaN", "b": "Infinity", "c": "-Infinity", "3": [1, 0.5], "d": [1, 2.5, "NaN"]}
    assert json_safe({"p": Path("/x")}) == {"p": "/x"}  # anything else: its str
    config = load_config(experiment_config())
    assert searcher_metric_value(config, {"validation_loss": _Scalar(0.25)}) == 0.25
    assert searcher_metric_value(config, {"validation_loss": 2}) == 2.0
    for bad in (float("nan"), float("inf"), "x", True):
        assert searcher_metric_value(config, {"validation_loss": bad}) is None
    assert searcher_metric_value(config, {"other": 1.0}) is None


def _rows(master: LiveMaster, tmp_path: Path, **overrides: Any) -> tuple[int, int, dict[str, Any]]:
    (tmp_path / "storage").mkdir(exist_ok=True)
    config = experiment_config(tmp_path / "storage", **overrides)
    with master.db() as db:
        exp = make_experiment(db, config=config)
        trial = make_trial(db, exp)
        return exp.id, trial.id, config


def test_reporter_metrics_checkpoints_restore(master: LiveMaster, tmp_path: Path) -> None:
    exp_id, trial_id, raw = _rows(master, tmp_path, scheduling_unit=2)
    config = load_config(raw)
    client = MasterClient(master.url, master.login("determined"), retry_for=5)
    reporter = MasterReporter(client, trial_id=trial_id, trial_run_id=1, config=config)
    fake = make_fake_plugins()
    built = build_trial(
        LinearTrial, config, linear_hparams(), plugins=fake, experiment_id=exp_id, trial_id=trial_id
    )
    local = tmp_path / "local"
    with TrialRunner(built, local, reporter=reporter) as runner:
        result = runner.train_to(4)

    api = master.client(master.login("admin"))
    training = api.get(f"/api/v1/trials/{trial_id}/metrics", params={"kind": "training"}).json()
    assert [(m["stepsCompleted"], m["trialRunId"]) for m in training["metrics"]] == [(2, 1), (4, 1)]
    assert all(isinstance(m["metrics"]["loss"], float) for m in training["metrics"])
    validation = api.get(f"/api/v1/trials/{trial_id}/metrics", params={"kind": "validation"})
    [row] = validation.json()["metrics"]
    assert row["stepsCompleted"] == 4 and row["numInputs"] == 12
    assert row["metrics"] == pytest.approx(dict(result.metrics))

    # The checkpoint: stored, recorded with its files, linked to the validation, local copy gone.
    [uuid] = reporter.checkpoints
    assert not (local / uuid).exists()
    assert (tmp_path / "storage" / uuid / "metadata.json").is_file()
    ckpts = api.get(f"/api/v1/trials/{trial_id}/checkpoints").json()["checkpoints"]
    assert [c["uuid"] for c in ckpts] == [uuid]
    ckpt = ckpts[0]
    assert ckpt["state"] == "STATE_COMPLETED" and ckpt["batchNumber"] == 4
    assert {"fake_state.json", "metadata.json"} <= set(ckpt["files"])
    assert ckpt["format"] == "fake-json" and ckpt["framework"].startswith("fake")
    assert ckpt["metadata"]["batches_trained"] == 4 and ckpt["metadata"]["uuid"] == uuid
    assert not {"experiment_config", "workload_state"} & set(ckpt["metadata"])
    assert ckpt["searcherMetric"] == pytest.approx(result.metrics["validation_loss"])

    # What a worker restoring from it gets: the same weights and the runner's state.
    path = Checkpoint.from_json(ckpt, session=client.session).download(tmp_path / "restore")
    again = build_trial(LinearTrial, config, linear_hparams(), plugins=fake, trial_id=trial_id)
    with TrialRunner(again, tmp_path / "local2", latest_checkpoint=path) as restored:
        assert restored.batches_trained == 4
        assert again.context.require_model() == built.context.require_model()

    # Values JSON cannot carry, and framework scalars, arrive in the master's forms.
    weird = {"loss": float("nan"), "big": float("inf"), "lr": _Scalar(0.5), "v": _Array()}
    reporter.report_training(6, weird, 8)
    reporter.flush()
    training = api.get(f"/api/v1/trials/{trial_id}/metrics", params={"kind": "training"}).json()
    assert training["metrics"][-1]["metrics"] == {
        "loss": "NaN",
        "big": "Infinity",
        "lr": 0.5,
        "v": [1, 2.5, "NaN"],
    }

    # An error answer that retrying cannot fix is raised at once: the trial has ended.
    with master.db() as db:
        db.get(Trial, trial_id).state = ExperimentState.COMPLETED  # type: ignore[union-attr]
        db.commit()
    with pytest.raises(Conflict):
        reporter.report_validation(8, {"validation_loss": 0.1}, 12)
    client.close()


def test_a_held_validation_waits_for_the_completion_and_goes_before_anything_else(
    master: LiveMaster, tmp_path: Path
) -> None:
    """The chief's reporter holds its latest validation for the operation's completion; an
    earlier one, a checkpoint or the end of the run send what it holds first."""
    _, trial_id, raw = _rows(master, tmp_path)
    config = load_config(raw)
    client = MasterClient(master.url, master.login("determined"), retry_for=5)
    reporter = MasterReporter(client, trial_id=trial_id, trial_run_id=0, config=config)
    reporter.hold_validations = True
    api = master.client(master.login("admin"))

    def stored() -> list[int]:
        answer = api.get(f"/api/v1/trials/{trial_id}/metrics", params={"kind": "validation"})
        return [row["stepsCompleted"] for row in answer.json()["metrics"]]

    reporter.report_validation(2, {"validation_loss": 0.5}, 4)
    assert stored() == []
    reporter.report_validation(4, {"validation_loss": 0.4}, 4)  # the earlier one goes now
    assert stored() == [2]
    held = reporter.take_held_validation()
    assert held is not None and held["stepsCompleted"] == 4
    assert held["metrics"] == {"validation_loss": 0.4} and reporter.take_held_validation() is None

    # A checkpoint sends the held validation first (it proves the run current too).
    reporter.report_validation(6, {"validation_loss": 0.3}, 4)
    checkpoint = tmp_path / "ckpt-6" / "0e4c4a46-6b1c-4d7c-9a35-000000000006"
    checkpoint.mkdir(parents=True)
    (checkpoint / "weights").write_text("6")
    asked: list[str] = []
    reporter._before_upload = lambda: asked.append("asked")
    reporter.report_checkpoint(str(checkpoint), {"batches_trained": 6})
    assert stored() == [2, 6] and asked == []
    # With nothing sent first, the run is asked about before the upload.
    other = tmp_path / "ckpt-7" / "0e4c4a46-6b1c-4d7c-9a35-000000000007"
    other.mkdir(parents=True)
    (other / "weights").write_text("7")
    reporter.report_checkpoint(str(other), {"batches_trained": 7})
    assert asked == ["asked"]

    # The end of the run sends what is held.
    reporter.report_validation(8, {"validation_loss": 0.2}, 4)
    reporter.close()
    assert stored() == [2, 6, 8]
    client.close()


def test_client_rides_out_a_master_restart(sqlite_url: str, tmp_path: Path) -> None:
    port = free_port()
    settings = make_settings(sqlite_url, tmp_path)
    with live_master(settings, port) as first:
        token = first.login("determined")
        url = first.url
    # Nothing listens now: a short retry budget gives up with MasterNotFound.
    with pytest.raises(MasterNotFound):
        MasterClient(url, token, retry_for=0.3).get("/api/v1/users/determined")

    client = MasterClient(url, token, retry_for=60)
    answers: list[Any] = []
    errors: list[BaseException] = []

    def ask() -> None:
        try:
            answers.append(client.get("/api/v1/users/determined"))
        except BaseException as exc:
            errors.append(exc)

    asking = threading.Thread(target=ask)
    asking.start()
    time.sleep(1.0)  # the request is failing and being retried meanwhile
    assert not answers and not errors
    with live_master(settings, port):
        asking.join(timeout=60)
    assert not errors, errors
    assert answers[0]["user"]["username"] == "determined"


def test_log_shipper(sqlite_master: LiveMaster, tmp_path: Path) -> None:
    _, trial_id, _ = _rows(sqlite_master, tmp_path)
    client = MasterClient(sqlite_master.url, sqlite_master.login("determined"), retry_for=5)
    path = f"/api/v1/trials/{trial_id}/logs"
    stdout, stderr = sys.stdout, sys.stderr
    logger = logging.getLogger("detlite.test_logship")
    logger.setLevel(logging.DEBUG)
    shipper = LogShipper(lambda body: client.post(path, body), rank=3, interval=0.05).install()
    try:
        print("hello from stdout")
        logger.info("a record")
        logger.debug("below INFO: not shipped")
        sys.stderr.write("an error line\nunfinished")
        print("two\nlines")
    finally:
        shipper.close()
    assert sys.stdout is stdout and sys.stderr is stderr
    api = sqlite_master.client(sqlite_master.login("admin"))
    logs = api.get(path).json()["logs"]
    assert {log["rank"] for log in logs} == {3}
    shipped = sorted((log["message"], log["level"]) for log in logs)
    assert shipped == sorted(
        [
            ("hello from stdout", "INFO"),
            ("detlite.test_logship: a record", "INFO"),
            ("an error line", "ERROR"),
            ("unfinished", "ERROR"),  # shipped at close, though its line never ended
            ("two", "INFO"),
            ("lines", "INFO"),
        ]
    )

    # A full queue drops the newest lines and says so once it can.
    small = LogShipper(lambda body: client.post(path, body), rank=0, max_queued=2)
    for i in range(5):
        small.ship(f"line {i}")
    assert small.dropped == 3
    small.close()
    tail = [log["message"] for log in api.get(path).json()["logs"][-3:]]
    assert tail[0].startswith("[detlite] 3 log lines were dropped")
    assert tail[1:] == ["line 0", "line 1"]
    assert small.dropped == 0
    client.close()


def test_log_shipper_keeps_every_post_under_the_masters_cap(
    master: LiveMaster, tmp_path: Path
) -> None:
    """Long lines: batches split by their JSON's size, and a line too big alone is cut."""
    _, trial_id, _ = _rows(master, tmp_path)
    client = MasterClient(master.url, master.login("determined"), retry_for=5)
    path = f"/api/v1/trials/{trial_id}/logs"
    posted: list[int] = []

    def post(body: dict[str, Any]) -> Any:
        posted.append(len(json.dumps(body)))  # what MasterClient sends
        return client.post(path, body)

    shipper = LogShipper(post, rank=0)
    wide = [f"{i:02d}" + "w" * (MAX_LINE_CHARS - 2) for i in range(20)]  # 20 MB together
    for line in wide:
        shipper.ship(line)
    shipper.ship("\U0001f600" * MAX_LINE_CHARS)  # 12 MB of JSON: over a batch alone
    shipper.ship("x" * (MAX_LINE_CHARS + 10))  # over the master's line limit
    shipper.close()
    client.close()
    assert shipper.dropped == 0
    assert len(posted) > 1
    assert max(posted) <= MAX_BATCH_BYTES < REPORT_BODY_LIMIT
    with master.db() as db:
        stored = list(
            db.scalars(
                sa.select(TrialLog.message)
                .where(TrialLog.trial_id == trial_id)
                .order_by(TrialLog.id)
            )
        )
    assert stored[:20] == wide
    faces, xs = stored[20:]
    assert faces.startswith("\U0001f600" * 1000) and len(faces) <= MAX_LINE_CHARS
    assert faces.endswith(f"of {MAX_LINE_CHARS} characters shipped]")
    assert len(xs) <= MAX_LINE_CHARS and xs.startswith("x" * 1000)
    assert xs.endswith(f"of {MAX_LINE_CHARS + 10} characters shipped]")


# -- training metrics in batches ------------------------------------------------------------


class _Sends:
    """Records the batches each side sent; ``fail`` makes the thread's next send raise."""

    def __init__(self) -> None:
        self.thread: list[list[int]] = []
        self.here: list[list[int]] = []
        self.fail: Exception | None = None
        self.gate = threading.Event()
        self.gate.set()

    def from_thread(self, batch: list[dict[str, Any]]) -> None:
        self.gate.wait(10)
        if self.fail is not None:
            raise self.fail
        self.thread.append([b["stepsCompleted"] for b in batch])

    def from_here(self, batch: list[dict[str, Any]]) -> None:
        self.here.append([b["stepsCompleted"] for b in batch])


def _wait(check: Any, what: str) -> None:
    deadline = time.monotonic() + 10
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_training_reports_go_in_batches_and_flush_waits_for_them() -> None:
    from detlite.exec.reporter import BATCH_MAX, _TrainingBatches

    sends = _Sends()
    batches = _TrainingBatches(sends.from_thread, sends.from_here)
    try:
        # A burst becomes few requests, in order, nothing lost; a long burst is cut at
        # BATCH_MAX reports.
        for step in range(1, BATCH_MAX + 51):
            batches.add({"stepsCompleted": step})
        _wait(lambda: sum(map(len, sends.thread)) == BATCH_MAX + 50, "the burst to be sent")
        assert [s for batch in sends.thread for s in batch] == list(range(1, BATCH_MAX + 51))
        assert 2 <= len(sends.thread) < 10 and max(map(len, sends.thread)) == BATCH_MAX

        # A report alone goes out by itself, after the delay, without a flush.
        batches.add({"stepsCompleted": 1000})
        _wait(lambda: sends.thread[-1] == [1000], "the lone report")

        # flush waits for a send in flight, and returns once everything queued is sent
        # (the rest by the caller, or by the thread if it took it first).
        sends.gate.clear()
        batches.add({"stepsCompleted": 1001})
        time.sleep(0.3)  # the thread has taken 1001 and waits at the gate
        batches.add({"stepsCompleted": 1002})
        threading.Timer(0.2, sends.gate.set).start()
        batches.flush()
        assert sends.thread[-1] in ([1001], [1002])
        sent = [s for batch in sends.thread + sends.here for s in batch]
        assert sorted(sent)[-2:] == [1001, 1002] and sent.index(1001) < sent.index(1002)
        # With nothing in flight, flush sends on the caller's side (unless the thread's
        # delay ran out first on a busy machine).
        batches.add({"stepsCompleted": 1003})
        batches.flush()
        assert [1003] in (sends.here[-1], sends.thread[-1])

        # A send that fails for good is raised by the next report (or flush), once.
        sends.fail = MasterNotFound("the master is gone")
        batches.add({"stepsCompleted": 1004})
        time.sleep(0.5)
        with pytest.raises(MasterNotFound):
            batches.add({"stepsCompleted": 1005})
        batches.add({"stepsCompleted": 1005})
        batches.flush()
        assert sends.here[-1] == [1005]
    finally:
        sends.gate.set()
        batches.close()
