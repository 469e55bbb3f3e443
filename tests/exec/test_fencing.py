"""Fencing: a trial run the master no longer counts stores nothing and its worker stops.

A launched worker group's token belongs to its run (``Token.allocation_id``). Once the
trial has another allocation (the master relaunched it after losing its node) or none (it
ended), every request made with that token is a 410 (``StaleRun``), whatever the route,
and the worker that meets it exits at once with status 3, uploading nothing. (That the 410
comes before a request's body is read is in tests/robustness/test_http_limits.py.)

The worker test stands a run's relaunch in by hand: it gives the trial a new allocation id
in the database while the old worker trains, as the scheduler does when it relaunches.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from detlite.master.orm import Checkpoint, TrainingMetrics, Trial, TrialLog, ValidationMetrics
from detlite.master.queries import users as user_queries
from tests.exec.test_worker_e2e import (
    _allocation,
    _config,
    _create,
    _trials,
    _wait_until,
    scheduling_master,
)
from tests.master.conftest import LiveMaster
from tests.master.factories import make_experiment, make_trial, user_id

# -- the master's side --------------------------------------------------------------------


def _run_token(master: LiveMaster, allocation_id: str) -> str:
    from detlite.master.orm import User

    with master.db() as db:
        owner = db.get_one(User, user_id(db, "determined"))
        token = user_queries.issue_token(
            db, owner, dt.timedelta(hours=1), allocation_id=allocation_id
        )
        db.commit()
    return token


def _worker_requests(trial_id: int, experiment_id: int, allocation: str) -> list[Any]:
    """One of each request a worker makes: (method, path, params, json body)."""
    params = {"allocationId": allocation}
    metrics = {"trialRunId": 0, "stepsCompleted": 5, "metrics": {"loss": 0.5}, "numInputs": 5}
    checkpoint = {
        "uuid": str(uuid.uuid4()),
        "trialId": trial_id,
        "batchNumber": 5,
        "state": "STATE_COMPLETED",
        "files": {"state.json": {"size": 2, "sha256": "0" * 64}},
        "metadata": {},
    }
    return [
        ("POST", f"/api/v1/trials/{trial_id}/training_metrics", None, {"trainingMetrics": metrics}),
        (
            "POST",
            f"/api/v1/trials/{trial_id}/validation_metrics",
            None,
            {"validationMetrics": metrics},
        ),
        ("POST", f"/api/v1/trials/{trial_id}/logs", None, {"logs": [{"message": "hi", "rank": 0}]}),
        ("POST", "/api/v1/checkpoints", None, checkpoint),
        ("GET", f"/api/v1/trials/{trial_id}/preemption", params, None),
        ("GET", f"/api/v1/trials/{trial_id}/searcher/operation", {**params, "after": 0}, None),
        ("GET", f"/api/v1/experiments/{experiment_id}/model_def", None, None),
        ("GET", f"/api/v1/trials/{trial_id}", None, None),
    ]


def _stored(master: LiveMaster, trial_id: int) -> dict[str, int]:
    with master.db() as db:
        return {
            model.__tablename__: int(
                db.scalar(
                    sa.select(sa.func.count()).select_from(model).where(model.trial_id == trial_id)  # type: ignore[attr-defined]
                )
                or 0
            )
            for model in (TrainingMetrics, ValidationMetrics, TrialLog, Checkpoint)
        }


def test_every_request_of_a_stale_run_is_410_and_stores_nothing(master: LiveMaster) -> None:
    with master.db() as db:
        experiment = make_experiment(db)
        trial = make_trial(db, experiment)
        trial.allocation_id = "run-b"
        trial.restarts = 1
        db.commit()
        trial_id, experiment_id = trial.id, experiment.id
    stale = _run_token(master, "run-a")
    with master.client(stale) as client:
        for method, path, params, body in _worker_requests(trial_id, experiment_id, "run-a"):
            answer = client.request(method, path, params=params, json=body)
            assert answer.status_code == 410, (path, answer.text)
            message = answer.json()["error"]["message"]
            assert "run-a" in message and "no longer" in message, message
    assert _stored(master, trial_id) == dict.fromkeys(_stored(master, trial_id), 0)

    # The current run's token works, and its log lines carry its run.
    current = _run_token(master, "run-b")
    with master.client(current) as client:
        for method, path, params, body in _worker_requests(trial_id, experiment_id, "run-b"):
            if path.endswith(("/searcher/operation", "/preemption")):
                continue  # the scheduler answers these (not running here)
            answer = client.request(method, path, params=params, json=body)
            assert answer.status_code in (200, 204), (path, answer.text)
        logs = client.get(f"/api/v1/trials/{trial_id}/logs").json()["logs"]
    assert [(entry["message"], entry["trialRunId"]) for entry in logs] == [("hi", 1)]

    # A trial that ended has no current run: its last run's token is refused too, while a
    # login's token (no run) still reads everything.
    with master.db() as db:
        db.get_one(Trial, trial_id).allocation_id = None
        db.commit()
    with master.client(current) as client:
        assert client.get(f"/api/v1/trials/{trial_id}").status_code == 410
    with master.client(master.login("determined")) as client:
        assert client.get(f"/api/v1/trials/{trial_id}").status_code == 200


# -- the worker's side ----------------------------------------------------------------------


def _max_ids(master: LiveMaster, trial_id: int) -> dict[str, Any]:
    """The newest row of each kind the old run could have written, and its stored files."""
    with master.db() as db:

        def newest(model: Any, *where: Any) -> int:
            query = sa.select(sa.func.max(model.id)).where(model.trial_id == trial_id, *where)
            return int(db.scalar(query) or 0)

        checkpoints = sorted(
            db.scalars(sa.select(Checkpoint.uuid).where(Checkpoint.trial_id == trial_id))
        )
        return {
            "training": newest(TrainingMetrics),
            "validation": newest(ValidationMetrics),
            "worker logs": newest(TrialLog, TrialLog.rank.is_not(None)),
            "checkpoints": checkpoints,
        }


def _files(root: Path) -> dict[str, int]:
    return {
        str(path.relative_to(root)): path.stat().st_size
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_relaunched_trials_old_worker_stops_at_once_and_stores_nothing(
    sqlite_url: str, tmp_path: Path
) -> None:
    config = _config(
        tmp_path,
        searcher={"name": "single", "metric": "validation_loss", "max_length": {"batches": 400}},
        scheduling_unit=1,
        min_checkpoint_period={"batches": 2},
        max_restarts=0,
    )
    config["hyperparameters"]["sleep"] = 0.05
    storage = tmp_path / "storage"
    with scheduling_master(sqlite_url, tmp_path, slots=1) as master:
        api, exp_id = _create(master, tmp_path, config)
        trial_id = _wait_until("the trial", lambda: _trials(api, exp_id))[0]["id"]
        _wait_until("the worker's pid", lambda: all(_allocation(master, trial_id)))
        _, pids = _allocation(master, trial_id)
        _wait_until("a checkpoint", lambda: _max_ids(master, trial_id)["checkpoints"])

        # The master "relaunches" the trial elsewhere: the old run is no longer current.
        with master.db() as db:
            db.get_one(Trial, trial_id).allocation_id = str(uuid.uuid4())
            db.commit()
        # Requests already past their check when that committed may still land; give them
        # a moment, then nothing more of the old run may be stored anywhere.
        time.sleep(1.0)
        before, files = _max_ids(master, trial_id), _files(storage)
        try:
            _wait_until("the stale worker to exit", lambda: not _alive(pids[0]), timeout=30)
        finally:
            if _alive(pids[0]):
                os.kill(pids[0], signal.SIGKILL)
        time.sleep(0.5)  # what a worker that went on would have sent meanwhile
        assert _max_ids(master, trial_id) == before
        assert _files(storage) == files
        err = "\n".join(p.read_text() for p in (tmp_path / "groups").rglob("rank0.err"))
        assert "fenced, stopping at once" in err, err[-2000:]
        assert "Traceback" not in err


@pytest.fixture(autouse=True)
def _fake_framework_in_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DETLITE_EXTRA_PLUGINS", "detlite.testing:FakeFrameworkPlugin")
    monkeypatch.setenv("DETLITE_MASTER_RETRY_S", "20")
