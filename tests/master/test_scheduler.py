"""The scheduler and the worker protocol, with the test playing the trial workers over HTTP.

``ScriptedRM`` is a real ResourceManager whose worker groups are played by the test: a
launch is recorded with its WorkerSpec, and the test follows the protocol with the
allocation id and token the master put in the spec's environment, then says how the group
exited. This exercises every answer and exit path of the master without a worker process;
``tests/e2e`` runs the same master with real workers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from detlite.interfaces import ResourceManager, WorkerSpec
from detlite.master import Settings, create_app, db
from detlite.master.orm import Experiment, TrainingMetrics, Trial, TrialLog, ValidationMetrics
from detlite.master.scheduler.recovery import WORKER_MODULE
from detlite.testing.fake import linear_config
from tests.master.conftest import LiveMaster, assert_error, serve_in_thread
from tests.master.factories import make_checkpoint

S = "STATE_"


@dataclass
class Group:
    handle: str
    spec: WorkerSpec
    code: int | None = None
    terminated: list[bool] = field(default_factory=list)

    @property
    def trial_id(self) -> int:
        return self.spec.trial_id

    @property
    def allocation(self) -> str:
        return self.spec.env["DETLITE_ALLOCATION_ID"]


class ScriptedRM(ResourceManager):
    """Worker groups played by the test (see the module docstring)."""

    type = "scripted"

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.groups: dict[str, Group] = {}
        self.lock = threading.Lock()

    def total_slots(self) -> int:
        return self.slots

    def launch(self, spec: WorkerSpec) -> str:
        with self.lock:
            busy = sum(g.spec.slots for g in self.groups.values() if g.code is None)
            if busy + spec.slots > self.slots:
                raise RuntimeError("no free slots")
            handle = f"h{len(self.groups) + 1}"
            self.groups[handle] = Group(handle, spec)
            return handle

    def poll(self, handle: str) -> int | None:
        return self.groups[handle].code

    def terminate(self, handle: str, *, force: bool = False) -> None:
        group = self.groups[handle]
        group.terminated.append(force)
        if force and group.code is None:
            group.code = -signal.SIGKILL

    def running(self) -> list[Group]:
        with self.lock:
            return sorted(
                (g for g in self.groups.values() if g.code is None), key=lambda g: g.trial_id
            )

    def launches(self, trial_id: int) -> list[Group]:
        return [g for g in self.groups.values() if g.trial_id == trial_id]


@dataclass
class Master:
    live: LiveMaster
    rm: ScriptedRM
    token: str

    def api(self) -> httpx.Client:
        return self.live.client(self.token)


@contextmanager
def scheduled_master(db_url: str, tmp_path: Path, slots: int = 1, **over: Any) -> Iterator[Master]:
    settings = Settings(
        db_url=db_url,
        storage_path=tmp_path / "checkpoints",
        port=0,
        scheduler_tick=0.05,
        stop_grace=0,
        **over,
    )
    rm = ScriptedRM(slots)
    app = create_app(settings, resource_manager=rm)
    with serve_in_thread(app) as url:
        live = LiveMaster(app=app, settings=settings, url=url)
        yield Master(live, rm, live.login("determined"))


def wait_for(what: str, check: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def worker(master: Master, group: Group) -> httpx.Client:
    """An HTTP client with the token the master gave the group."""
    assert group.spec.env["DETLITE_MASTER"] == master.live.url
    return master.live.client(group.spec.env["DETLITE_TOKEN"])


def op(client: httpx.Client, group: Group, after: int, allocation: str | None = None) -> Any:
    response = client.get(
        f"/api/v1/trials/{group.trial_id}/searcher/operation",
        params={"allocationId": allocation or group.allocation, "after": after},
    )
    assert response.status_code == 200, response.text
    return response.json()


def complete(
    client: httpx.Client, group: Group, length: int, metric: float | None, status: int = 200
) -> httpx.Response:
    response = client.post(
        f"/api/v1/trials/{group.trial_id}/searcher/completed_operation",
        params={"allocationId": group.allocation},
        json={"length": length, "searcherMetric": metric},
    )
    assert response.status_code == status, response.text
    return response


def create(master: Master, config: Mapping[str, Any], **body: Any) -> int:
    with master.api() as client:
        response = client.post("/api/v1/experiments", json={"config": dict(config), **body})
        assert response.status_code == 200, response.text
        return int(response.json()["experiment"]["id"])


def experiment(master: Master, experiment_id: int) -> dict[str, Any]:
    with master.api() as client:
        body: dict[str, Any] = client.get(f"/api/v1/experiments/{experiment_id}").json()
        return body


def state(master: Master, experiment_id: int) -> str:
    return str(experiment(master, experiment_id)["experiment"]["state"]).removeprefix(S)


def trials(master: Master, experiment_id: int) -> list[dict[str, Any]]:
    with master.api() as client:
        body = client.get(f"/api/v1/experiments/{experiment_id}/trials").json()
        return list(body["trials"])


def launched(master: Master, count: int) -> list[Group]:
    return wait_for(
        f"{count} running group(s)",
        lambda: (r := master.rm.running()) and len(r) >= count and r,
    )


def act(master: Master, experiment_id: int, action: str) -> None:
    with master.api() as client:
        response = client.post(f"/api/v1/experiments/{experiment_id}/{action}")
        assert response.status_code == 200, response.text


def random_config(**searcher: Any) -> dict[str, Any]:
    config = linear_config()
    config["searcher"] = {
        "name": "random",
        "metric": "validation_loss",
        "max_length": {"batches": 8},
        "max_trials": 2,
        **searcher,
    }
    return config


def run_start(client: httpx.Client, group: Group, **params: str) -> dict[str, Any]:
    response = client.get(
        f"/api/v1/trials/{group.trial_id}/run",
        params={"allocationId": group.allocation, **params},
    )
    assert response.status_code == 200, response.text
    run: dict[str, Any] = response.json()["run"]
    return run


def one_trial(master: Master) -> tuple[int, Group, dict[str, Any]]:
    """A one-trial random search, its group launched: the experiment, the group, the trial."""
    exp_id = create(master, random_config(max_trials=1), activate=True)
    (group,) = launched(master, 1)
    [trial] = trials(master, exp_id)
    return exp_id, group, trial


def test_run_start_and_the_next_operation_in_the_completion_answer(
    migrated_database_url: str, tmp_path: Path
) -> None:
    """One call starts a worker; completing an operation answers with the next one."""
    with scheduled_master(migrated_database_url, tmp_path, slots=1) as master:
        exp_id, group, trial = one_trial(master)
        va8 = {"kind": "VALIDATE_AFTER", "length": 8}
        with worker(master, group) as client:
            run = run_start(client, group, restoreCheckpoint="")
            assert run["config"] == experiment(master, exp_id)["config"]
            assert (run["experimentId"], run["trialId"], run["trialRunId"]) == (
                exp_id,
                trial["id"],
                0,
            )
            assert (run["hparams"], run["seed"]) == (trial["hparams"], trial["seed"])
            assert "restore" not in run and "restoreReason" not in run  # none: left out
            assert (run["after"], run["operation"], run["preempt"]) == (0, va8, False)

            # With a checkpoint, the latest is restored and the first answer is for one
            # batch below it; "" (the launch fixed none) restores nothing.
            with master.live.db() as session:
                row = session.get_one(Trial, trial["id"])
                uuid = make_checkpoint(session, row, 4).uuid
            latest = run_start(client, group)
            assert latest["restore"]["uuid"] == uuid and latest["restoreReason"] == "latest"
            assert (latest["after"], latest["operation"]) == (3, va8)
            assert run_start(client, group, restoreCheckpoint=uuid)["restore"]["uuid"] == uuid
            assert "restore" not in run_start(client, group, restoreCheckpoint="")

            answer = complete(client, group, 8, 0.5).json()
            assert answer == {"operation": {"kind": "CLOSE"}, "preempt": False}
            assert complete(client, group, 8, 0.5).json() == answer  # a retry: the same
            assert op(client, group, 8) == answer  # what the other ranks are told

            stale = client.get(
                f"/api/v1/trials/{group.trial_id}/run", params={"allocationId": "another"}
            )
            assert_error(stale, 410, "not the current worker group")
        group.code = 0


def test_a_completion_carries_its_validation_into_one_transaction(
    migrated_database_url: str, tmp_path: Path
) -> None:
    with scheduled_master(migrated_database_url, tmp_path, slots=1) as master:
        _, group, trial = one_trial(master)
        path = f"/api/v1/trials/{group.trial_id}/searcher/completed_operation"
        params = {"allocationId": group.allocation}
        validation = {"stepsCompleted": 8, "metrics": {"validation_loss": 0.5}}

        def validations() -> list[tuple[int, dict[str, Any]]]:
            with master.live.db() as session:
                rows = session.scalars(
                    sa.select(ValidationMetrics).where(ValidationMetrics.trial_id == trial["id"])
                )
                return [(row.batches_trained, dict(row.metrics)) for row in rows]

        with worker(master, group) as client:
            # A completion the searcher refuses (no operation of that length) stores nothing.
            body = {"length": 5, "searcherMetric": 0.5, "validationMetrics": validation}
            assert_error(client.post(path, params=params, json=body), 409, "no VALIDATE_AFTER")
            # A validation the master refuses leaves the operation outstanding.
            bad = {**validation, "trialId": trial["id"] + 1}
            body = {"length": 8, "searcherMetric": 0.5, "validationMetrics": bad}
            assert client.post(path, params=params, json=body).status_code == 400
            assert validations() == []
            assert op(client, group, 0)["operation"] == {"kind": "VALIDATE_AFTER", "length": 8}

            body = {"length": 8, "searcherMetric": 0.5, "validationMetrics": validation}
            answer = client.post(path, params=params, json=body)
            assert answer.status_code == 200, answer.text
            assert answer.json()["operation"] == {"kind": "CLOSE"}
            assert validations() == [(8, {"validation_loss": 0.5})]
            # A retry (its answer lost) gets the same answer and changes nothing: the stored
            # validation stays the one the searcher was fed.
            assert client.post(path, params=params, json=body).json() == answer.json()
            other = {**validation, "metrics": {"validation_loss": 0.25}}
            body = {"length": 8, "searcherMetric": 0.25, "validationMetrics": other}
            assert client.post(path, params=params, json=body).json() == answer.json()
            assert validations() == [(8, {"validation_loss": 0.5})]
        group.code = 0


def test_protocol_restarts_and_completion(migrated_database_url: str, tmp_path: Path) -> None:
    with scheduled_master(migrated_database_url, tmp_path, slots=1) as master:
        exp_id = create(master, random_config(), activate=True)
        # The master filled in the default checkpoint storage.
        stored = experiment(master, exp_id)["config"]["checkpoint_storage"]
        assert stored["type"] == "shared_fs"
        assert Path(stored["host_path"]) == (tmp_path / "checkpoints").resolve()

        # Two trials, one slot: one group runs.
        (first,) = launched(master, 1)
        assert len(trials(master, exp_id)) == 2
        env = first.spec.env
        assert first.spec.command[1:] == ["-m", WORKER_MODULE] and first.spec.slots == 1
        assert env["DETLITE_EXPERIMENT_ID"] == str(exp_id)
        assert env["DETLITE_TRIAL_ID"] == str(first.trial_id)
        assert env["DETLITE_TRIAL_RUN_ID"] == "0"
        assert Path(env["DETLITE_WORK_DIR"]).is_dir()
        assert Path(env["DETLITE_WORK_DIR"]).name == first.allocation

        with worker(master, first) as client:
            va8 = {"operation": {"kind": "VALIDATE_AFTER", "length": 8}, "preempt": False}
            assert op(client, first, 0) == va8
            assert op(client, first, 0) == va8  # every rank gets the same
            # A rank that reached 8 waits for the chief's completion.
            assert op(client, first, 8) == {"operation": {"kind": "WAIT"}, "preempt": False}
            stale = client.get(
                f"/api/v1/trials/{first.trial_id}/searcher/operation",
                params={"allocationId": "not-this-one", "after": 0},
            )
            assert_error(stale, 410, "not the current worker group")
            assert_error(complete(client, first, 5, 0.5, 409), 409, "no VALIDATE_AFTER")
            complete(client, first, 8, 0.5)
            complete(client, first, 8, 0.5)  # a retry is not fed twice
            close = {"operation": {"kind": "CLOSE"}, "preempt": False}
            assert op(client, first, 8) == close
            preemption = client.get(
                f"/api/v1/trials/{first.trial_id}/preemption",
                params={"allocationId": first.allocation},
            )
            assert preemption.json() == {"preempt": False}
        first.code = 0
        wait_for("the first trial to complete", lambda: master.rm.running())

        # The second trial fails once: it is launched again as run 1; the old group is stale.
        (second,) = master.rm.running()
        assert second.trial_id != first.trial_id
        second.code = 1
        (again,) = wait_for(
            "a relaunch", lambda: [g for g in master.rm.running() if g is not second]
        )
        assert again.trial_id == second.trial_id
        assert again.spec.env["DETLITE_TRIAL_RUN_ID"] == "1"
        with worker(master, again) as client:
            gone = client.get(
                f"/api/v1/trials/{second.trial_id}/searcher/operation",
                params={"allocationId": second.allocation, "after": 0},
            )
            assert_error(gone, 410)
            assert op(client, again, 0)["operation"] == {"kind": "VALIDATE_AFTER", "length": 8}
            complete(client, again, 8, 0.25)
            assert op(client, again, 8)["operation"]["kind"] == "CLOSE"
        again.code = 0
        wait_for("the experiment to complete", lambda: state(master, exp_id) == "COMPLETED")

        rows = {t["id"]: t for t in trials(master, exp_id)}
        assert {t["state"] for t in rows.values()} == {"STATE_COMPLETED"}
        assert rows[second.trial_id]["restarts"] == 1 and rows[first.trial_id]["restarts"] == 0
        assert experiment(master, exp_id)["experiment"]["progress"] == 1.0
        with master.live.db() as session:
            row = session.get(Experiment, exp_id)
            assert row is not None and row.searcher_state is not None
            assert row.searcher_state["shutdown"] == {"failure": False}
            logs = session.scalars(
                sa.select(TrialLog.message).where(TrialLog.trial_id == second.trial_id)
            ).all()
            assert any("exited with code 1" in m for m in logs)
            done = session.get(Trial, second.trial_id)
            assert done is not None and done.allocation_id is None
        assert not Path(env["DETLITE_WORK_DIR"]).exists()  # removed after the group ended


def test_pause_kill_errors_and_early_exit(sqlite_url: str, tmp_path: Path) -> None:
    with scheduled_master(sqlite_url, tmp_path, slots=1) as master:
        # max_restarts: a trial that fails past them is ERROR, and so is a single-trial search.
        failing = linear_config()
        failing["max_restarts"] = 1
        exp_id = create(master, failing)
        for _ in range(2):
            (group,) = launched(master, 1)
            group.code = 3
            wait_for("the exit to be seen", lambda g=group: master.rm.running() != [g])
        wait_for("ERROR", lambda: state(master, exp_id) == "ERROR")
        (trial,) = trials(master, exp_id)
        # Two runs: one restart, as `describe` shows it (RESTARTS never exceeds max_restarts).
        assert trial["state"] == "STATE_ERROR" and trial["restarts"] == 1

        # Pause preempts the running group; it is not launched again until activated.
        exp_id = create(master, linear_config())
        (group,) = launched(master, 1)
        with worker(master, group) as client:
            assert op(client, group, 0)["operation"]["length"] == 10
            act(master, exp_id, "pause")
            preempt = {"operation": {"kind": "WAIT"}, "preempt": True}
            assert op(client, group, 3) == preempt
            url = f"/api/v1/trials/{group.trial_id}/preemption"
            assert client.get(url, params={"allocationId": group.allocation}).json()["preempt"]
        group.code = 0  # checkpointed and stopped
        wait_for("the group to be gone", lambda: not master.rm.running())
        time.sleep(0.3)  # several ticks: nothing is launched while paused
        assert not master.rm.running()
        (trial,) = trials(master, exp_id)
        assert trial["state"] == "STATE_PAUSED" and trial["restarts"] == 0
        act(master, exp_id, "activate")
        (group,) = launched(master, 1)
        assert group.spec.env["DETLITE_TRIAL_RUN_ID"] == "0"  # a preemption is no failure

        # Kill: the running group gets SIGKILL, the trial and experiment end CANCELED.
        act(master, exp_id, "kill")
        wait_for("CANCELED", lambda: state(master, exp_id) == "CANCELED")
        assert group.terminated == [True]
        assert trials(master, exp_id)[0]["state"] == "STATE_CANCELED"

        # Early exit (INVALID_HP): the trial closes, random search replaces it.
        exp_id = create(master, random_config(max_trials=1))
        (group,) = launched(master, 1)
        with worker(master, group) as client:
            url = f"/api/v1/trials/{group.trial_id}/early_exit"
            bad = client.post(url, params={"allocationId": group.allocation}, json={"reason": "X"})
            assert_error(bad, 400)
            for _ in range(2):  # idempotent
                response = client.post(
                    url, params={"allocationId": group.allocation}, json={"reason": "INVALID_HP"}
                )
                assert response.status_code == 200, response.text
            assert op(client, group, 0)["operation"] == {"kind": "CLOSE"}
        group.code = 0
        replacement = wait_for(
            "a replacement", lambda: [g for g in master.rm.running() if g is not group]
        )[0]
        assert replacement.trial_id != group.trial_id
        rows = {t["id"]: t["state"] for t in trials(master, exp_id)}
        assert rows[group.trial_id] == "STATE_COMPLETED"

        # An idle trial (nothing queued, not closed) is preempted to free its slot.
        with master.live.db() as session:
            row = session.get(Trial, replacement.trial_id)
            assert row is not None
            row.pending_ops = []
            session.commit()
        with worker(master, replacement) as client:
            assert op(client, replacement, 0)["preempt"] is True
        replacement.code = 0
        act(master, exp_id, "kill")
        wait_for("CANCELED", lambda: state(master, exp_id) == "CANCELED")


def test_priority_and_slots(sqlite_url: str, tmp_path: Path) -> None:
    with scheduled_master(sqlite_url, tmp_path, slots=2) as master:
        act_config = linear_config()
        master_token = master.token
        assert master_token
        # Paused while created, so that both wait for the same tick.
        low = create(master, {**act_config, "resources": {"priority": 50}}, activate=False)
        high = create(master, {**act_config, "resources": {"priority": 10}}, activate=False)
        wide = create(master, {**act_config, "resources": {"slots_per_trial": 3}}, activate=False)
        act(master, wide, "activate")
        wait_for("ERROR (3 slots of 2)", lambda: state(master, wide) == "ERROR")
        with master.live.db() as session:
            logs = session.scalars(sa.select(TrialLog.message)).all()
            assert any("needs 3 slots" in m for m in logs)
        two = create(master, {**act_config, "resources": {"slots_per_trial": 2}}, activate=False)
        act(master, two, "activate")
        (group,) = launched(master, 1)
        assert group.spec.slots == 2
        act(master, low, "activate")
        act(master, high, "activate")
        time.sleep(0.3)
        assert len(master.rm.running()) == 1  # both slots are held
        # With every slot held no queued trial is read, but one too wide still ends at once.
        wider = create(master, {**act_config, "resources": {"slots_per_trial": 4}}, activate=False)
        act(master, wider, "activate")
        wait_for("ERROR (4 slots of 2, none free)", lambda: state(master, wider) == "ERROR")
        group.code = -9  # a failure frees both slots; priority 10 < 42 (unset) < 50
        groups = launched(master, 2)
        exp_of = {t["id"]: e for e in (low, high, two) for t in trials(master, e)}
        # high first; then the 2-slot trial does not fit, and low fills the slot left.
        assert [exp_of[g.trial_id] for g in sorted(groups, key=lambda g: int(g.handle[1:]))] == [
            high,
            low,
        ]
        act(master, two, "kill")
        wait_for("CANCELED", lambda: state(master, two) == "CANCELED")
        for g in groups:
            g.code = 0


def _sleeper(allocation: str) -> subprocess.Popen[bytes]:
    # A stand-in for a worker a crashed master left: its command line names the worker module.
    code = "import time; time.sleep(120)"
    env = {**os.environ, "DETLITE_ALLOCATION_ID": allocation}
    return subprocess.Popen(
        [sys.executable, "-c", code, WORKER_MODULE], env=env, start_new_session=True
    )


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="recovery finds workers through /proc")
def test_recovery_kills_leftover_workers_and_relaunches(sqlite_url: str, tmp_path: Path) -> None:
    ours = _sleeper("alloc-of-a-dead-master")
    other = _sleeper("someone-elses")
    try:
        engine = db.create_engine(sqlite_url)
        db.upgrade(engine)
        with db.make_sessionmaker(engine)() as session:
            from tests.master.factories import experiment_config, make_experiment, make_trial

            exp = make_experiment(session, config=experiment_config(tmp_path / "ckpt"))
            exp.searcher_state = None
            trial = make_trial(session, exp, request_id="1")
            trial.allocation_id = "alloc-of-a-dead-master"
            trial.allocation_handle = "gone"
            trial.allocation_pids = [ours.pid]
            trial.pending_ops = [{"units": 10, "batches": 10}]
            exp.searcher_state = {"placeholder": True}  # the search is not started again
            session.commit()
            trial_id = trial.id
        engine.dispose()
        with scheduled_master(sqlite_url, tmp_path, slots=1) as master:
            assert ours.wait(timeout=10) == -signal.SIGKILL
            assert other.poll() is None  # not ours: left alone
            (group,) = launched(master, 1)
            assert group.trial_id == trial_id
            assert group.spec.env["DETLITE_TRIAL_RUN_ID"] == "0"  # not counted as a restart
            with master.live.db() as session:
                row = session.get(Trial, trial_id)
                assert row is not None and row.restarts == 0
    finally:
        for proc in (ours, other):
            if proc.poll() is None:
                proc.kill()
            proc.wait()


# -- a whole adaptive ASHA search, played, with and without a master restart ----------------


def asha_config() -> dict[str, Any]:
    config = linear_config()
    config["searcher"] = {
        "name": "adaptive_asha",
        "metric": "validation_loss",
        "max_length": {"batches": 16},
        "max_trials": 6,
        "max_rungs": 3,
        "divisor": 2,
        "mode": "aggressive",
    }
    config["hyperparameters"]["lr"] = {"type": "double", "minval": 0.01, "maxval": 1.0}
    config["reproducibility"] = {"experiment_seed": 77}
    return config


def play(master: Master, exp_id: int, have: dict[int, int], steps: int | None = None) -> int:
    """Play every running group one protocol step at a time, in trial order, as workers
    that checkpoint at every validation (``have``: each trial's batches). Stops after
    ``steps`` completed operations, or when the experiment has ended."""
    done = 0
    hparams: dict[int, dict[str, Any]] = {}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if state(master, exp_id) in ("COMPLETED", "ERROR", "CANCELED"):
            return done
        for group in master.rm.running():
            tid = group.trial_id
            if tid not in hparams:
                hparams[tid] = {t["id"]: t["hparams"] for t in trials(master, exp_id)}[tid]
            with worker(master, group) as client:
                answer = op(client, group, have.get(tid, 0))
                kind = answer["operation"]["kind"]
                if answer["preempt"] or kind == "CLOSE":
                    group.code = 0
                elif kind == "VALIDATE_AFTER":
                    length = answer["operation"]["length"]
                    have[tid] = length
                    complete(client, group, length, hparams[tid]["lr"] + 1.0 / (1 + length))
                    done += 1
                    if steps is not None and done >= steps:
                        return done
        time.sleep(0.02)
    raise AssertionError("the search did not end")


def outcome(master: Master, exp_id: int) -> list[tuple[str, float, str]]:
    with master.live.db() as session:
        rows = session.scalars(
            sa.select(Trial).where(Trial.experiment_id == exp_id).order_by(Trial.id)
        ).all()
        return [(t.request_id, t.hparams["lr"], t.state.value) for t in rows]


def test_adaptive_asha_resumes_exactly_after_a_master_restart(
    sqlite_url: str, tmp_path: Path
) -> None:
    with scheduled_master(sqlite_url, tmp_path / "a", slots=2) as master:
        straight = create(master, asha_config())
        play(master, straight, {})
        assert state(master, straight) == "COMPLETED"
        expected = outcome(master, straight)
        assert len(expected) == 6
        resumed = create(master, asha_config())
        have: dict[int, int] = {}
        assert play(master, resumed, have, steps=4) == 4
    with scheduled_master(sqlite_url, tmp_path / "a", slots=2) as master:
        play(master, resumed, have)
        assert state(master, resumed) == "COMPLETED"
        assert outcome(master, resumed) == expected
        with master.live.db() as session:
            left = session.scalar(
                sa.select(sa.func.count())
                .select_from(Trial)
                .where(Trial.allocation_id.is_not(None))
            )
            assert left == 0


# -- the migration ------------------------------------------------------------------------------


def test_migration_0002_dedups_metrics_and_makes_them_unique(database_url: str) -> None:
    from alembic import command

    engine = db.create_engine(database_url)
    try:
        db.upgrade(engine, "0001")
        with engine.begin() as conn:
            owner = conn.execute(sa.text("SELECT id FROM users WHERE username='admin'")).scalar()
            now = "2024-01-01 00:00:00+00:00"
            conn.execute(
                sa.text(
                    "INSERT INTO experiments (owner_id, config, state, archived, description, "
                    "labels, notes, start_time) VALUES (:o, '{}', 'STATE_ACTIVE', false, '', "
                    "'[]', '', :t)"
                ),
                {"o": owner, "t": now},
            )
            conn.execute(
                sa.text(
                    "INSERT INTO trials (experiment_id, request_id, hparams, state, restarts, "
                    "batches_trained, seed, start_time) VALUES (1, 'r', '{}', 'STATE_ACTIVE', "
                    "0, 0, 0, :t)"
                ),
                {"t": now},
            )
            for value in (1, 2, 3):
                conn.execute(
                    sa.text(
                        "INSERT INTO training_metrics (trial_id, trial_run_id, batches_trained, "
                        "metrics, end_time) VALUES (1, 0, 10, :m, :t)"
                    ),
                    {"m": f'{{"loss": {value}}}', "t": now},
                )
        db.upgrade(engine)
        maker = db.make_sessionmaker(engine)
        with maker() as session:
            rows = session.scalars(sa.select(TrainingMetrics)).all()
            assert [r.metrics for r in rows] == [{"loss": 3}]  # the newest one is kept
            trial = session.get(Trial, 1)
            assert trial is not None and trial.pending_ops is None
            assert trial.allocation_stop is False and trial.completed_batches == 0
            session.add(TrainingMetrics(trial_id=1, trial_run_id=0, batches_trained=10, metrics={}))
            with pytest.raises(sa.exc.IntegrityError):
                session.commit()
            session.rollback()
            session.add(
                ValidationMetrics(trial_id=1, trial_run_id=1, batches_trained=10, metrics={})
            )
            session.commit()
        config = db.alembic_config()
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.downgrade(config, "0001")
        assert "pending_ops" not in {c["name"] for c in sa.inspect(engine).get_columns("trials")}
    finally:
        engine.dispose()


def test_protocol_needs_a_scheduler_allocation(master: LiveMaster) -> None:
    # A master without a scheduler has no allocations: every protocol call is a 410 (StaleRun).
    token = master.login("admin")
    with master.db() as session:
        from tests.master.factories import make_experiment, make_trial

        trial_id = make_trial(session, make_experiment(session)).id
    with master.client(token) as client:
        params = {"allocationId": "x"}
        base = f"/api/v1/trials/{trial_id}"
        assert_error(client.get(f"{base}/searcher/operation", params=params), 410)
        assert_error(client.get(f"{base}/preemption", params=params), 410)
        body = {"length": 1, "searcherMetric": 0.1}
        assert_error(
            client.post(f"{base}/searcher/completed_operation", params=params, json=body), 410
        )
        assert_error(
            client.post(f"{base}/early_exit", params=params, json={"reason": "ERRORED"}), 410
        )
        assert_error(client.get(f"{base}/searcher/operation"), 400)  # allocationId is required
        assert_error(client.get("/api/v1/trials/999999/preemption", params=params), 404)
