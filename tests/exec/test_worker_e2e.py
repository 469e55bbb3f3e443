"""The trial worker as real processes, launched by a live master's scheduler on the local
resource manager, with the fake framework (``DETLITE_EXTRA_PLUGINS``).

The trial class comes from the experiment's context archive (``model_def:CtxTrial``, a
LinearTrial that can sleep per batch, refuse its hyperparameters or ask to stop), so each
run also proves the worker unpacks and imports the context. What is checked is what the
master recorded: metrics (with their run ids), checkpoints, logs, and trial states.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from detlite.master import create_app
from detlite.master.context_archive import pack_directory
from detlite.resources.local import LocalResourceManager
from detlite.testing.fake import linear_config
from tests.master.conftest import LiveMaster, make_settings, serve_in_thread

MODEL_DEF = """
import time

import detlite as det
from detlite.testing import LinearTrial


class CtxTrial(LinearTrial):
    def __init__(self, context):
        hparams = context.get_hparams()
        self.mode = hparams.get("mode", "ok")
        if self.mode == "invalid":
            raise det.InvalidHP("mode=invalid cannot train")
        super().__init__(context)
        self.sleep = float(hparams.get("sleep", 0))
        print(f"context trial built on rank {context.distributed.get_rank()}")

    def train_batch(self, batch, epoch_idx, batch_idx):
        if self.sleep:
            time.sleep(self.sleep)
        if self.mode == "stop" and batch_idx >= 2:
            self.context.set_stop_requested(True)
        return super().train_batch(batch, epoch_idx, batch_idx)
"""

PBT_TWO_ROUNDS = {
    "name": "pbt",
    "metric": "validation_loss",
    "smaller_is_better": True,
    "population_size": 1,
    "num_rounds": 2,
    "length_per_round": {"batches": 4},
    "replace_function": {"truncate_fraction": 0.0},
    "explore_function": {"resample_probability": 0.0, "perturb_factor": 0.1},
}


@contextmanager
def scheduling_master(db_url: str, tmp_path: Path, slots: int) -> Iterator[LiveMaster]:
    settings = make_settings(db_url, tmp_path, scheduler=True, scheduler_tick=0.1)
    with LocalResourceManager(slots=slots, work_dir=tmp_path / "groups") as rm:
        app = create_app(settings, resource_manager=rm)
        with serve_in_thread(app) as url:
            yield LiveMaster(app=app, settings=settings, url=url)


@pytest.fixture(autouse=True)
def _fake_framework_in_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    # The local resource manager passes this process's environment on to the workers.
    monkeypatch.setenv("DETLITE_EXTRA_PLUGINS", "detlite.testing:FakeFrameworkPlugin")
    monkeypatch.setenv("DETLITE_MASTER_RETRY_S", "20")


def _config(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    storage = tmp_path / "storage"
    storage.mkdir(exist_ok=True)
    config = linear_config()
    config["entrypoint"] = "model_def:CtxTrial"
    config["hyperparameters"].update({"mode": "ok", "sleep": 0})
    # Keep every checkpoint: the tests look at them after the experiment ends (and GC ran).
    keep = {"save_experiment_best": 100, "save_trial_best": 100, "save_trial_latest": 100}
    config["checkpoint_storage"] = {"type": "shared_fs", "host_path": str(storage), **keep}
    config["max_restarts"] = 2
    config.update(overrides)
    return config


def _create(master: LiveMaster, tmp_path: Path, config: dict[str, Any]) -> tuple[httpx.Client, int]:
    context = tmp_path / "context"
    context.mkdir(exist_ok=True)
    (context / "model_def.py").write_text(textwrap.dedent(MODEL_DEF))
    api = master.client(master.login("determined"))
    body = {"config": config, "contextArchive": base64.b64encode(pack_directory(context)).decode()}
    response = api.post("/api/v1/experiments", json=body)
    assert response.status_code == 200, response.text
    return api, int(response.json()["experiment"]["id"])


def _wait_for(api: httpx.Client, exp_id: int, states: set[str], timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while True:
        state = str(api.get(f"/api/v1/experiments/{exp_id}").json()["experiment"]["state"])
        if state in states:
            return state
        assert time.monotonic() < deadline, f"experiment {exp_id} is still {state}"
        time.sleep(0.1)


def _trials(api: httpx.Client, exp_id: int) -> list[dict[str, Any]]:
    trials: list[dict[str, Any]] = api.get(f"/api/v1/experiments/{exp_id}/trials").json()["trials"]
    return trials


def _metrics(api: httpx.Client, trial_id: int, kind: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = api.get(
        f"/api/v1/trials/{trial_id}/metrics", params={"kind": kind}
    ).json()["metrics"]
    return rows


def _logs(api: httpx.Client, trial_id: int) -> list[dict[str, Any]]:
    logs: list[dict[str, Any]] = api.get(f"/api/v1/trials/{trial_id}/logs").json()["logs"]
    return logs


def _checkpoints(api: httpx.Client, trial_id: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = api.get(f"/api/v1/trials/{trial_id}/checkpoints").json()[
        "checkpoints"
    ]
    return found


def test_worker_runs_operations_then_close(migrated_database_url: str, tmp_path: Path) -> None:
    with scheduling_master(migrated_database_url, tmp_path, slots=1) as master:
        api, exp_id = _create(master, tmp_path, _config(tmp_path, searcher=PBT_TWO_ROUNDS))
        assert _wait_for(api, exp_id, {"STATE_COMPLETED", "STATE_ERROR"}) == "STATE_COMPLETED"
        [trial] = _trials(api, exp_id)
        assert trial["state"] == "STATE_COMPLETED" and trial["restarts"] == 0
        validations = _metrics(api, trial["id"], "validation")
        assert [v["stepsCompleted"] for v in validations] == [4, 8]
        assert all(v["trialRunId"] == 0 for v in validations)
        assert [t["stepsCompleted"] for t in _metrics(api, trial["id"], "training")] == [4, 8]
        checkpoints = _checkpoints(api, trial["id"])
        assert [c["batchNumber"] for c in checkpoints] == [4, 8]
        assert {c["state"] for c in checkpoints} == {"STATE_COMPLETED"}
        for ckpt in checkpoints:  # stored, and linked to the validation at its batch
            assert (tmp_path / "storage" / ckpt["uuid"] / "metadata.json").is_file()
            assert ckpt["searcherMetric"] is not None
        messages = [log["message"] for log in _logs(api, trial["id"])]
        assert "context trial built on rank 0" in messages
        assert any("worker done: closed" in m for m in messages), messages
        # No local checkpoint copies are left behind in the work directory.
        assert not list(master.settings.worker_dir.glob("*/checkpoints-rank*/*"))


def _allocation(master: LiveMaster, trial_id: int) -> tuple[str | None, list[int]]:
    from detlite.master.orm import Trial

    with master.db() as db:
        row = db.get(Trial, trial_id)
        assert row is not None
        return row.allocation_id, list(row.allocation_pids or [])


def _wait_until(what: str, check: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return value


def test_worker_resumes_after_sigkill_and_stops_when_paused(
    sqlite_url: str, tmp_path: Path
) -> None:
    """A SIGKILLed worker is relaunched and continues from its latest checkpoint (a new run
    id); a pause stops a single-slot worker in the middle of its operation (the preemption
    poll), after a checkpoint, and activating the experiment continues from there."""
    config = _config(
        tmp_path,
        searcher={"name": "single", "metric": "validation_loss", "max_length": {"batches": 40}},
        scheduling_unit=1,
        min_checkpoint_period={"batches": 3},
    )
    config["hyperparameters"]["sleep"] = 0.06
    with scheduling_master(sqlite_url, tmp_path, slots=1) as master:
        api, exp_id = _create(master, tmp_path, config)
        trial_id = _trial_id(api, exp_id)
        _wait_until(
            "a checkpoint at batch 6",
            lambda: [c for c in _checkpoints(api, trial_id) if c["batchNumber"] >= 6],
        )
        _, pids = _allocation(master, trial_id)
        assert pids
        for pid in pids:
            os.kill(pid, signal.SIGKILL)

        # The relaunched run (trialRunId 1) trains; pause it in the middle of its operation.
        _wait_until(
            "the second run's metrics",
            lambda: [t for t in _metrics(api, trial_id, "training") if t["trialRunId"] == 1],
        )
        assert api.post(f"/api/v1/experiments/{exp_id}/pause").status_code == 200
        _wait_until("the worker to stop", lambda: _allocation(master, trial_id)[0] is None)
        trained = max(t["stepsCompleted"] for t in _metrics(api, trial_id, "training"))
        assert trained < 40, "the pause should stop the worker before its operation ends"
        assert max(c["batchNumber"] for c in _checkpoints(api, trial_id)) == trained
        assert not _metrics(api, trial_id, "validation")

        assert api.post(f"/api/v1/experiments/{exp_id}/activate").status_code == 200
        assert _wait_for(api, exp_id, {"STATE_COMPLETED", "STATE_ERROR"}) == "STATE_COMPLETED"
        [trial] = _trials(api, exp_id)
        # The kill was a failure; the pause was not.
        assert trial["state"] == "STATE_COMPLETED" and trial["restarts"] == 1
        training = _metrics(api, trial_id, "training")
        first = sorted(t["stepsCompleted"] for t in training if t["trialRunId"] == 0)
        second = sorted(t["stepsCompleted"] for t in training if t["trialRunId"] == 1)
        # The second run started where a checkpoint of the first left off, and went on to 40
        # across the pause, without a gap or a repeat.
        resumed_from = second[0] - 1
        assert resumed_from >= 6 and resumed_from <= max(first) < 40
        assert resumed_from in {c["batchNumber"] for c in _checkpoints(api, trial_id)}
        assert second == list(range(resumed_from + 1, 41))
        [validation] = _metrics(api, trial_id, "validation")
        assert (validation["stepsCompleted"], validation["trialRunId"]) == (40, 1)
        messages = [log["message"] for log in _logs(api, trial_id)]
        assert sum("restoring from the trial's latest checkpoint" in m for m in messages) == 2
        assert any("worker done: preempted" in m for m in messages)


def _trial_id(api: httpx.Client, exp_id: int) -> int:
    deadline = time.monotonic() + 60
    while not (trials := _trials(api, exp_id)):
        assert time.monotonic() < deadline, "the searcher created no trial"
        time.sleep(0.05)
    return int(trials[0]["id"])


def test_two_process_group_and_early_exits(sqlite_url: str, tmp_path: Path) -> None:
    with scheduling_master(sqlite_url, tmp_path, slots=2) as master:
        group = _config(tmp_path, searcher=PBT_TWO_ROUNDS, resources={"slots_per_trial": 2})
        api, exp_id = _create(master, tmp_path, group)
        assert _wait_for(api, exp_id, {"STATE_COMPLETED", "STATE_ERROR"}) == "STATE_COMPLETED"
        [trial] = _trials(api, exp_id)
        assert trial["state"] == "STATE_COMPLETED" and trial["restarts"] == 0
        assert [v["stepsCompleted"] for v in _metrics(api, trial["id"], "validation")] == [4, 8]
        assert [c["batchNumber"] for c in _checkpoints(api, trial["id"])] == [4, 8]
        logs = _logs(api, trial["id"])
        assert {log["rank"] for log in logs} == {0, 1}
        for rank in (0, 1):
            mine = [log["message"] for log in logs if log["rank"] == rank]
            assert f"context trial built on rank {rank}" in mine
            assert any("worker done: closed" in m for m in mine)

        # A grid over the trial's behaviour: refused hyperparameters, and a stop it asks for.
        config = _config(
            tmp_path,
            searcher={"name": "grid", "metric": "validation_loss", "max_length": {"batches": 8}},
            scheduling_unit=1,
        )
        config["hyperparameters"]["mode"] = {"type": "categorical", "vals": ["invalid", "stop"]}
        api, exp_id = _create(master, tmp_path, config)
        assert _wait_for(api, exp_id, {"STATE_COMPLETED", "STATE_ERROR"}) == "STATE_COMPLETED"
        by_mode = {t["hparams"]["mode"]: t for t in _trials(api, exp_id)}
        invalid, stop = by_mode["invalid"], by_mode["stop"]
        assert invalid["restarts"] == 0 and stop["restarts"] == 0
        assert not _metrics(api, invalid["id"], "training")
        assert any(
            "hyperparameters are invalid" in log["message"] for log in _logs(api, invalid["id"])
        )
        # Stopped after batch 3 (the stop is seen after the workload that requested it),
        # with a checkpoint of what it trained, and no searcher validation.
        assert [c["batchNumber"] for c in _checkpoints(api, stop["id"])] == [3]
        assert not _metrics(api, stop["id"], "validation")
        assert any("requested a stop" in log["message"] for log in _logs(api, stop["id"]))

        # A worker of a group that is not the trial's current one is refused and stops.
        clean = {k: v for k, v in os.environ.items() if not k.startswith("DETLITE_")}
        stale = subprocess.run(
            [sys.executable, "-m", "detlite.exec.trial"],
            env={
                **clean,
                "DETLITE_MASTER": master.url,
                "DETLITE_TOKEN": master.login("determined"),
                "DETLITE_TRIAL_ID": str(stop["id"]),
                "DETLITE_EXPERIMENT_ID": str(exp_id),
                "DETLITE_ALLOCATION_ID": "not-the-current-one",
                "DETLITE_WORK_DIR": str(tmp_path / "stale"),
                "DETLITE_EXTRA_PLUGINS": "detlite.testing:FakeFrameworkPlugin",
            },
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert stale.returncode == 3, stale.stderr
        assert "fenced, stopping at once" in stale.stderr
        assert "Traceback" not in stale.stderr


def test_storage_this_node_cannot_see_fails_the_worker_in_one_line(
    sqlite_url: str, tmp_path: Path
) -> None:
    """A shared_fs path not mounted where the worker runs: one line saying so, no traceback."""
    config = _config(tmp_path, max_restarts=0)
    with scheduling_master(sqlite_url, tmp_path, slots=1) as master:
        context = tmp_path / "context"
        context.mkdir()
        (context / "model_def.py").write_text(textwrap.dedent(MODEL_DEF))
        api = master.client(master.login("determined"))
        body = {
            "config": config,
            "contextArchive": base64.b64encode(pack_directory(context)).decode(),
            "activate": False,
        }
        created = api.post("/api/v1/experiments", json=body)
        assert created.status_code == 200, created.text
        exp_id = int(created.json()["experiment"]["id"])
        (tmp_path / "storage").rmdir()  # as on a node where it is not mounted
        assert api.post(f"/api/v1/experiments/{exp_id}/activate").status_code == 200
        assert _wait_for(api, exp_id, {"STATE_ERROR", "STATE_COMPLETED"}) == "STATE_ERROR"
        [trial] = _trials(api, exp_id)
        messages = [log["message"] for log in _logs(api, trial["id"])]
        failed = [m for m in messages if m.startswith("detlite.exec: the trial failed")]
        assert len(failed) == 1 and "Traceback" not in failed[0], messages
        assert "must be shared by every node" in failed[0]
        assert str(tmp_path / "storage") in failed[0]
