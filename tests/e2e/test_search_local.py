"""Whole experiments on the local resource manager: real workers, real searches, real faults.

The trial is the fake framework's LinearTrial, shipped in the experiment's context as
``model_def:SlowTrial`` (it can sleep per batch, so that a test can act while it trains);
workers load the fake framework through ``DETLITE_EXTRA_PLUGINS``. Every test reads what
the master recorded: trial states, metrics and checkpoints.

- adaptive ASHA and random search run to COMPLETED side by side;
- PBT's clone of the best member starts from that member's checkpoint (a warm start);
- a rank that starts late restores the checkpoint its group was launched with, not one its
  chief saved meanwhile;
- a SIGKILLed worker is relaunched from its latest checkpoint and ends with exactly the
  metrics of an uninterrupted twin (same experiment seed); pause, activate and kill work on
  running workers;
- a SIGKILLed master (``detlite master`` in a subprocess, SQLite file) is started again on
  the same database: the experiment finishes, and no metric or checkpoint reported before
  the crash is lost.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from detlite.launch import free_port, process_running
from detlite.master import Settings, create_app
from detlite.master import db as master_db
from detlite.master.context_archive import pack_files
from detlite.master.orm import Checkpoint, TrainingMetrics, Trial, ValidationMetrics
from detlite.resources.local import LocalResourceManager
from detlite.testing.fake import linear_config
from tests.master.conftest import LiveMaster, serve_in_thread

MODEL_DEF = b"""
import logging
import os
import time

import httpx

from detlite.testing import LinearTrial


def wait_for_a_checkpoint():
    # As the worker does: the master's URL, a token and the trial from the environment.
    url = f"{os.environ['DETLITE_MASTER']}/api/v1/trials/{os.environ['DETLITE_TRIAL_ID']}"
    headers = {"Authorization": f"Bearer {os.environ['DETLITE_TOKEN']}"}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = httpx.get(f"{url}/checkpoints", headers=headers).json()["checkpoints"]
        if any(c["state"] == "STATE_COMPLETED" for c in found):
            return
        time.sleep(0.1)


class SlowTrial(LinearTrial):
    def __init__(self, context):
        if context.get_hparams().get("late_rank") and context.distributed.get_rank() > 0:
            wait_for_a_checkpoint()
            logging.getLogger("model_def").info("a late rank is built")
        super().__init__(context)

    def train_batch(self, batch, epoch_idx, batch_idx):
        time.sleep(float(self.context.get_hparams().get("sleep", 0)))
        return super().train_batch(batch, epoch_idx, batch_idx)
"""
ENDED = ("STATE_COMPLETED", "STATE_CANCELED", "STATE_ERROR")


@pytest.fixture(autouse=True)
def _workers_load_the_fake_framework(monkeypatch: pytest.MonkeyPatch) -> None:
    # The local resource manager hands this process's environment to the workers.
    monkeypatch.setenv("DETLITE_EXTRA_PLUGINS", "detlite.testing:FakeFrameworkPlugin")
    monkeypatch.setenv("DETLITE_MASTER_RETRY_S", "30")


def config(tmp_path: Path, searcher: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    data = linear_config()
    data["entrypoint"] = "model_def:SlowTrial"
    data["searcher"] = {"metric": "validation_loss", **searcher}
    keep = {"save_experiment_best": 100, "save_trial_best": 100, "save_trial_latest": 100}
    data["checkpoint_storage"] = {"type": "shared_fs", "host_path": str(tmp_path / "ckpt"), **keep}
    data.update(overrides)
    (tmp_path / "ckpt").mkdir(exist_ok=True)  # shared_fs storage must exist (be mounted)
    return data


def context_archive() -> str:
    archive = pack_files([("model_def.py", "file", MODEL_DEF, None)])
    return base64.b64encode(archive).decode()


def create(api: httpx.Client, body: dict[str, Any]) -> int:
    response = api.post(
        "/api/v1/experiments", json={"config": body, "contextArchive": context_archive()}
    )
    assert response.status_code == 200, response.text
    return int(response.json()["experiment"]["id"])


def wait_for(what: str, check: Callable[[], Any], timeout: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def exp_state(api: httpx.Client, exp_id: int) -> str:
    return str(api.get(f"/api/v1/experiments/{exp_id}").json()["experiment"]["state"])


def trials_of(api: httpx.Client, exp_id: int) -> list[dict[str, Any]]:
    return list(api.get(f"/api/v1/experiments/{exp_id}/trials").json()["trials"])


def metrics(api: httpx.Client, trial_id: int, kind: str) -> list[tuple[int, dict[str, Any]]]:
    rows = api.get(f"/api/v1/trials/{trial_id}/metrics", params={"kind": kind}).json()["metrics"]
    return [(row["stepsCompleted"], row["metrics"]) for row in rows]


def completed_checkpoints(api: httpx.Client, trial_id: int) -> list[dict[str, Any]]:
    body = api.get(f"/api/v1/trials/{trial_id}/checkpoints").json()
    return [c for c in body["checkpoints"] if c["state"] == "STATE_COMPLETED"]


@contextmanager
def local_master(tmp_path: Path, slots: int = 2) -> Iterator[tuple[LiveMaster, httpx.Client]]:
    settings = Settings(
        db_url=f"sqlite:///{tmp_path / 'master.db'}",
        storage_path=tmp_path / "checkpoints",
        storage_roots=(tmp_path,),  # the experiments keep checkpoints in tmp_path / "ckpt"
        port=0,
        scheduler_tick=0.1,
        stop_grace=5,
    )
    with LocalResourceManager(slots=slots, work_dir=tmp_path / "groups") as rm:
        app = create_app(settings, resource_manager=rm)
        with serve_in_thread(app) as url:
            live = LiveMaster(app=app, settings=settings, url=url)
            with live.client(live.login("determined")) as api:
                yield live, api


def test_adaptive_asha_and_random_search_complete(tmp_path: Path) -> None:
    asha = {
        "name": "adaptive_asha",
        "max_length": {"batches": 8},
        "max_trials": 4,
        "max_rungs": 2,
        "divisor": 2,
        "mode": "aggressive",
    }
    hparams = linear_config()["hyperparameters"]
    hparams["lr"] = {"type": "double", "minval": 0.01, "maxval": 0.2}
    random = {"name": "random", "max_length": {"batches": 4}, "max_trials": 2}
    with local_master(tmp_path) as (_, api):
        asha_id = create(api, config(tmp_path, asha, hyperparameters=hparams))
        random_id = create(api, config(tmp_path, random, hyperparameters=hparams))
        for exp_id in (asha_id, random_id):
            wait_for("the search to end", lambda e=exp_id: exp_state(api, e) in ENDED)
            assert exp_state(api, exp_id) == "STATE_COMPLETED"
        lengths = {}
        for exp_id, count in ((asha_id, 4), (random_id, 2)):
            found = trials_of(api, exp_id)
            assert len(found) == count
            for trial in found:
                assert trial["state"] == "STATE_COMPLETED"
                validations = metrics(api, trial["id"], "validation")
                assert validations and "validation_loss" in validations[-1][1]
                assert metrics(api, trial["id"], "training")
                assert completed_checkpoints(api, trial["id"])
                lengths[trial["id"]] = validations[-1][0]
        # ASHA promoted someone to the full length; everyone reached its first rung.
        asha_lengths = [lengths[t["id"]] for t in trials_of(api, asha_id)]
        assert max(asha_lengths) == 8 and min(asha_lengths) >= 4
        assert all(lengths[t["id"]] == 4 for t in trials_of(api, random_id))


def test_pbt_clones_start_from_their_parents_checkpoints(tmp_path: Path) -> None:
    pbt = {
        "name": "pbt",
        "population_size": 4,
        "num_rounds": 2,
        "length_per_round": {"batches": 3},
        "replace_function": {"truncate_fraction": 0.25},
        "explore_function": {"resample_probability": 0.5, "perturb_factor": 0.2},
    }
    hparams = linear_config()["hyperparameters"]
    hparams["lr"] = {"type": "double", "minval": 0.01, "maxval": 0.2}
    with local_master(tmp_path) as (live, api):
        exp_id = create(api, config(tmp_path, pbt, hyperparameters=hparams))
        wait_for("the search to end", lambda: exp_state(api, exp_id) in ENDED, timeout=150)
        assert exp_state(api, exp_id) == "STATE_COMPLETED"
        found = trials_of(api, exp_id)
        # 4 members, then 1 clone replacing the truncated member after round 1.
        assert len(found) == 5
        clones = [t for t in found if t["warmStartCheckpointUuid"]]
        assert len(clones) == 1
        clone = clones[0]
        with live.db() as session:
            parent = session.get(Checkpoint, clone["warmStartCheckpointUuid"])
            assert parent is not None and parent.batches_trained == 3
            parent_trial = parent.trial_id
        assert parent_trial != clone["id"]
        # The clone went on from the parent's 3 batches for one more round of 3.
        assert [steps for steps, _ in metrics(api, clone["id"], "validation")] == [6]
        assert all(t["state"] == "STATE_COMPLETED" for t in found)


def test_a_late_rank_starts_where_its_group_started(tmp_path: Path) -> None:
    # Rank 1 is built once rank 0 has saved a checkpoint (every 2 batches).
    # Restoring it, rank 1 would train from there while rank 0 trained from 0: in a
    # framework whose ranks all-reduce, a hang; with two trials of ASHA, a rank left
    # waiting for an operation its chief never completes.
    single = {"name": "single", "max_length": {"batches": 8}}
    hparams = {**linear_config()["hyperparameters"], "sleep": 0.05, "late_rank": True}
    body = config(
        tmp_path,
        single,
        hyperparameters=hparams,
        resources={"slots_per_trial": 2},
        min_checkpoint_period={"batches": 2},
    )
    with local_master(tmp_path) as (_, api):
        exp_id = create(api, body)
        wait_for("the run to end", lambda: exp_state(api, exp_id) in ENDED)
        (trial,) = trials_of(api, exp_id)
        entries = api.get(f"/api/v1/trials/{trial['id']}/logs").json()["logs"]
        assert exp_state(api, exp_id) == "STATE_COMPLETED", entries
        checkpoints = completed_checkpoints(api, trial["id"])
        late = [e for e in entries if "a late rank is built" in e["message"]]
        # The race was on: a checkpoint was complete before rank 1 was built.
        first_saved = min(_when(c["endTime"]) for c in checkpoints)
        assert late and first_saved < _when(late[0]["timestamp"])
        assert not [e for e in entries if "restoring" in e["message"]], entries


def _when(stamp: str) -> dt.datetime:
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def _pids(live: LiveMaster, trial_id: int) -> list[int]:
    with live.db() as session:
        trial = session.get(Trial, trial_id)
        assert trial is not None
        return list(trial.allocation_pids or [])


def test_worker_sigkill_pause_activate_and_kill(tmp_path: Path) -> None:
    single = {"name": "single", "max_length": {"batches": 30}}
    periods = {
        "min_validation_period": {"batches": 10},
        "min_checkpoint_period": {"batches": 10},
        "reproducibility": {"experiment_seed": 4242},
    }
    hparams = {**linear_config()["hyperparameters"], "sleep": 0.05}
    with local_master(tmp_path) as (live, api):
        twin = create(api, config(tmp_path, single, hyperparameters=hparams, **periods))
        victim = create(api, config(tmp_path, single, hyperparameters=hparams, **periods))
        (trial,) = wait_for("the victim's trial", lambda: trials_of(api, victim))
        wait_for("a checkpoint", lambda: completed_checkpoints(api, trial["id"]))
        pids = wait_for("the worker's pids", lambda: _pids(live, trial["id"]))
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        for exp_id in (twin, victim):
            wait_for("the run to end", lambda e=exp_id: exp_state(api, e) in ENDED)
            assert exp_state(api, exp_id) == "STATE_COMPLETED"
        (twin_trial,) = trials_of(api, twin)
        (victim_trial,) = trials_of(api, victim)
        assert victim_trial["restarts"] == 1 and twin_trial["restarts"] == 0
        assert victim_trial["seed"] == twin_trial["seed"]
        for kind in ("validation", "training"):
            expected = metrics(api, twin_trial["id"], kind)
            assert [b for b, _ in expected][-1] == 30
            assert metrics(api, victim_trial["id"], kind) == expected

        # Pause and activate a running trial, then kill it while it trains.
        long = {"name": "single", "max_length": {"batches": 400}}
        exp_id = create(api, config(tmp_path, long, hyperparameters=hparams, **periods))
        (trial,) = wait_for("a trial", lambda: trials_of(api, exp_id))
        wait_for("training", lambda: metrics(api, trial["id"], "training"))
        assert api.post(f"/api/v1/experiments/{exp_id}/pause").status_code == 200
        wait_for("the worker to stop", lambda: not _pids(live, trial["id"]))
        paused = trials_of(api, exp_id)[0]
        assert paused["state"] == "STATE_PAUSED" and paused["restarts"] == 0
        assert completed_checkpoints(api, trial["id"])  # it checkpointed before stopping
        assert api.post(f"/api/v1/experiments/{exp_id}/activate").status_code == 200
        pids = wait_for("a relaunch", lambda: _pids(live, trial["id"]))
        assert api.post(f"/api/v1/experiments/{exp_id}/kill").status_code == 200
        wait_for("CANCELED", lambda: exp_state(api, exp_id) == "STATE_CANCELED", timeout=30)
        assert trials_of(api, exp_id)[0]["state"] == "STATE_CANCELED"
        assert trials_of(api, exp_id)[0]["restarts"] == 0
        wait_for("the workers to be gone", lambda: not any(map(process_running, pids)), timeout=10)


# -- a master killed mid-experiment ----------------------------------------------------------


def _start_master(tmp_path: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "xdg")}
    log = open(tmp_path / f"master-{time.monotonic_ns()}.log", "wb")  # noqa: SIM115
    command = [sys.executable, "-m", "detlite", "master", "--port", str(port)]
    command += ["--db", f"sqlite:///{tmp_path / 'master.db'}", "--storage", str(tmp_path / "ck")]
    command += ["--allow-shared-fs", str(tmp_path / "ckpt")]  # the experiment's storage
    proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"the master exited with {proc.returncode}")
        try:
            return httpx.get(f"{url}/api/v1/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for("the master to start", ready, timeout=60)
    return proc


def _recorded(db_url: str) -> tuple[set[tuple[str, int, int, int]], set[str]]:
    """Every metrics row key and every COMPLETED checkpoint uuid in the database."""
    engine = master_db.create_engine(db_url)
    try:
        with master_db.make_sessionmaker(engine)() as session:
            keys = set()
            for kind, model in (("t", TrainingMetrics), ("v", ValidationMetrics)):
                query = sa.select(model.trial_id, model.trial_run_id, model.batches_trained)
                keys |= {(kind, *row) for row in session.execute(query)}
            uuids = set(
                session.scalars(
                    sa.select(Checkpoint.uuid).where(Checkpoint.state == "STATE_COMPLETED")
                )
            )
            return keys, uuids
    finally:
        engine.dispose()


def test_master_sigkill_recovers_without_losing_reports(tmp_path: Path) -> None:
    port = free_port()
    db_url = f"sqlite:///{tmp_path / 'master.db'}"
    searcher = {"name": "random", "max_length": {"batches": 60}, "max_trials": 2}
    periods = {"min_validation_period": {"batches": 10}, "min_checkpoint_period": {"batches": 10}}
    hparams = {**linear_config()["hyperparameters"], "sleep": 0.05}
    first = _start_master(tmp_path, port)
    second = None
    try:
        login = httpx.post(
            f"http://127.0.0.1:{port}/api/v1/auth/login",
            json={"username": "determined", "password": ""},
        )
        token = login.json()["token"]
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as api:
            exp_id = create(api, config(tmp_path, searcher, hyperparameters=hparams, **periods))
            wait_for(
                "checkpoints of both trials",
                lambda: (
                    len(trials_of(api, exp_id)) == 2
                    and all(completed_checkpoints(api, t["id"]) for t in trials_of(api, exp_id))
                ),
            )
        first.send_signal(signal.SIGKILL)
        first.wait()
        before_keys, before_uuids = _recorded(db_url)
        assert before_uuids
        second = _start_master(tmp_path, port)
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as api:
            wait_for("the experiment to end", lambda: exp_state(api, exp_id) in ENDED)
            assert exp_state(api, exp_id) == "STATE_COMPLETED"
            for trial in trials_of(api, exp_id):
                assert trial["state"] == "STATE_COMPLETED"
                assert trial["restarts"] == 0  # the master's crash is not the trial's failure
                assert metrics(api, trial["id"], "validation")[-1][0] == 60
        after_keys, after_uuids = _recorded(db_url)
        assert before_keys <= after_keys
        assert before_uuids <= after_uuids
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
