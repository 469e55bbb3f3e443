"""SIGKILL at random moments: workers and the master die, experiments still complete, and
nothing a worker was told was stored is lost.

The master is a real ``detlite master`` process (SQLite file or a PostgreSQL database of its
own), its workers real processes of the local resource manager, training the fake
framework's LinearTrial from the experiment's context. That context also wraps the worker's
``MasterReporter`` so that, after each report the master acknowledged (answered 200), the
worker appends a line to an acknowledgement log: training and validation metrics by
(trial, batches), checkpoints by uuid. A SIGKILL can fall between the answer and the line,
so the log may miss an acknowledged report, never hold one that was not.

Each run is one experiment (two trials) and a plan drawn from a seeded RNG: one to three
faults, each the SIGKILL of a running worker process or of the master (started again at
once on the same port and database), at a random moment. Afterwards the experiment must be
COMPLETED and the database must hold every logged metric and every logged checkpoint
(COMPLETED). The short default makes ``SHORT_RUNS`` runs per database; the ``slow`` variant
makes ``LONG_RUNS`` per database (20 runs in all on SQLite plus PostgreSQL).
"""

from __future__ import annotations

import base64
import json
import os
import random
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

from detlite.launch import free_port
from detlite.master import db as master_db
from detlite.master.context_archive import pack_files
from detlite.master.orm import Checkpoint, TrainingMetrics, Trial, ValidationMetrics
from detlite.testing.fake import linear_config

SHORT_RUNS = 1
LONG_RUNS = 10
ENDED = ("STATE_COMPLETED", "STATE_CANCELED", "STATE_ERROR")

MODEL_DEF = """
import json
import time
from pathlib import Path

from detlite.exec import reporter as _reporter
from detlite.testing import LinearTrial

ACK_LOG = {ack_log!r}


def _ack(*fields):
    with open(ACK_LOG, "a") as fh:
        fh.write(json.dumps(fields) + "\\n")


_training = _reporter.MasterReporter.report_training
_validation = _reporter.MasterReporter.report_validation
_checkpoint = _reporter.MasterReporter.report_checkpoint


def report_training(self, batches_trained, metrics, num_inputs):
    _training(self, batches_trained, metrics, num_inputs)
    _ack("training", self.trial_id, batches_trained)


def report_validation(self, batches_trained, metrics, num_inputs):
    _validation(self, batches_trained, metrics, num_inputs)
    _ack("validation", self.trial_id, batches_trained)


def report_checkpoint(self, path, metadata):
    _checkpoint(self, path, metadata)
    _ack("checkpoint", self.trial_id, Path(path).name)


_reporter.MasterReporter.report_training = report_training
_reporter.MasterReporter.report_validation = report_validation
_reporter.MasterReporter.report_checkpoint = report_checkpoint


class SlowTrial(LinearTrial):
    def train_batch(self, batch, epoch_idx, batch_idx):
        time.sleep(float(self.context.get_hparams()["sleep"]))
        return super().train_batch(batch, epoch_idx, batch_idx)
"""


@pytest.fixture(autouse=True)
def _workers_load_the_fake_framework(monkeypatch: pytest.MonkeyPatch) -> None:
    # The master hands its environment to the workers it starts.
    monkeypatch.setenv("DETLITE_EXTRA_PLUGINS", "detlite.testing:FakeFrameworkPlugin")
    monkeypatch.setenv("DETLITE_MASTER_RETRY_S", "60")


def wait_for(what: str, check: Callable[[], Any], timeout: float = 180.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)
    return value


class MasterProcess:
    """``detlite master`` on a fixed port and database, which a test can SIGKILL and restart."""

    def __init__(self, db_url: str, work: Path, extra: tuple[str, ...] = ()) -> None:
        self.db_url = db_url
        self.work = work
        self.extra = list(extra)  # more ``detlite master`` options
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = open(self.work / f"master-{self.starts}.log", "wb")  # noqa: SIM115
        command = [sys.executable, "-m", "detlite", "master", "--port", str(self.port)]
        command += ["--db", self.db_url, "--storage", str(self.work / "checkpoints")]
        command += ["--allow-shared-fs", str(self.work / "storage")]  # the experiment's storage
        command += ["--slots", "2", *self.extra]
        env = {**os.environ, "XDG_DATA_HOME": str(self.work / "xdg")}
        self.proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        wait_for("the master to answer", self._ready, timeout=90)

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            log = (self.work / f"master-{self.starts}.log").read_text(errors="replace")
            raise AssertionError(f"the master exited with {self.proc.returncode}:\n{log[-3000:]}")
        try:
            return httpx.get(f"{self.url}/api/v1/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def sigkill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def client(self) -> httpx.Client:
        login = httpx.post(
            f"{self.url}/api/v1/auth/login",
            json={"username": "determined", "password": ""},
            timeout=30,
        )
        token = login.json()["token"]
        headers = {"Authorization": f"Bearer {token}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


@contextmanager
def running_master(db_url: str, work: Path) -> Iterator[MasterProcess]:
    master = MasterProcess(db_url, work)
    master.start()
    try:
        yield master
    finally:
        master.stop()


def _experiment(work: Path, run: int) -> dict[str, Any]:
    ack_log = work / f"acks-{run}.jsonl"
    archive = pack_files(
        [("model_def.py", "file", MODEL_DEF.format(ack_log=str(ack_log)).encode(), None)]
    )
    config = linear_config()
    config["entrypoint"] = "model_def:SlowTrial"
    config["hyperparameters"]["sleep"] = 0.08
    config["searcher"] = {
        "name": "random",
        "metric": "validation_loss",
        "max_trials": 2,
        "max_length": {"batches": 48},
    }
    config["min_validation_period"] = {"batches": 6}
    config["min_checkpoint_period"] = {"batches": 4}
    config["max_restarts"] = 10
    storage = work / "storage"
    storage.mkdir(exist_ok=True)
    keep = {"save_experiment_best": 100, "save_trial_best": 100, "save_trial_latest": 100}
    config["checkpoint_storage"] = {"type": "shared_fs", "host_path": str(storage), **keep}
    return {"config": config, "contextArchive": base64.b64encode(archive).decode()}


def _worker_pids(db_url: str, experiment_id: int) -> list[int]:
    engine = master_db.create_engine(db_url)
    try:
        with engine.connect() as conn:
            query = sa.select(Trial.allocation_pids).where(Trial.experiment_id == experiment_id)
            return [int(pid) for (pids,) in conn.execute(query) for pid in (pids or [])]
    finally:
        engine.dispose()


def _acknowledged(path: Path) -> tuple[set[tuple[str, int, int]], set[str]]:
    metrics: set[tuple[str, int, int]] = set()
    checkpoints: set[str] = set()
    if not path.exists():
        return metrics, checkpoints
    for line in path.read_text().splitlines():
        try:
            kind, trial_id, value = json.loads(line)
        except ValueError:
            continue  # a line cut short by a SIGKILL
        if kind == "checkpoint":
            checkpoints.add(str(value))
        else:
            metrics.add((str(kind), int(trial_id), int(value)))
    return metrics, checkpoints


def _stored(db_url: str, experiment_id: int) -> tuple[set[tuple[str, int, int]], set[str]]:
    engine = master_db.create_engine(db_url)
    try:
        with engine.connect() as conn:
            trials = sa.select(Trial.id).where(Trial.experiment_id == experiment_id)
            metrics: set[tuple[str, int, int]] = set()
            for kind, model in (("training", TrainingMetrics), ("validation", ValidationMetrics)):
                query = sa.select(model.trial_id, model.batches_trained).where(
                    model.trial_id.in_(trials)
                )
                metrics |= {(kind, int(t), int(b)) for t, b in conn.execute(query)}
            query = sa.select(Checkpoint.uuid).where(
                Checkpoint.experiment_id == experiment_id,
                Checkpoint.state == "STATE_COMPLETED",
            )
            return metrics, {str(u) for (u,) in conn.execute(query)}
    finally:
        engine.dispose()


def _pids_or_end(master: MasterProcess, experiment_id: int) -> list[int] | str:
    """The experiment's worker pids; "ended" once it has ended; [] (wait) between launches."""
    pids = _worker_pids(master.db_url, experiment_id)
    if not pids and _state(master, experiment_id) in ENDED:
        return "ended"
    return pids


def _state(master: MasterProcess, experiment_id: int) -> str:
    try:
        with master.client() as api:
            body = api.get(f"/api/v1/experiments/{experiment_id}").json()
    except httpx.HTTPError:
        return "UNREACHABLE"
    return str(body["experiment"]["state"])


def one_run(master: MasterProcess, work: Path, run: int, rng: random.Random) -> list[str]:
    """One experiment under a random plan of SIGKILLs; returns what was done."""
    with master.client() as api:
        answer = api.post("/api/v1/experiments", json=_experiment(work, run))
        assert answer.status_code == 200, answer.text
        experiment_id = int(answer.json()["experiment"]["id"])
    done: list[str] = []
    wait_for("a worker to start", lambda: _worker_pids(master.db_url, experiment_id))
    # The first run kills both kinds, soon enough that the experiment is still running
    # (each trial trains for about 4 s); later ones draw one to three faults.
    kinds = ["worker", "master"] if run == 0 else []
    kinds = kinds or [rng.choice(["worker", "master"]) for _ in range(rng.randint(1, 3))]
    longest_pause = 1.2 if run == 0 else 3.0
    for kind in kinds:
        time.sleep(rng.uniform(0.2, longest_pause))
        if _state(master, experiment_id) in ENDED:
            break
        if kind == "worker":
            pids = wait_for("a worker, or the end", lambda: _pids_or_end(master, experiment_id))
            if pids == "ended":
                break
            pid = rng.choice(pids)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
            done.append(f"worker {pid}")
        else:
            master.sigkill()
            master.start()
            done.append("master")
    state = wait_for(
        f"experiment {experiment_id} to end (faults: {done})",
        lambda: (s := _state(master, experiment_id)) in ENDED and s,
        timeout=300,
    )
    assert state == "STATE_COMPLETED", (state, done)
    acked_metrics, acked_checkpoints = _acknowledged(work / f"acks-{run}.jsonl")
    stored_metrics, stored_checkpoints = _stored(master.db_url, experiment_id)
    assert acked_metrics, "the workers acknowledged no metric: the ack log did not work"
    assert acked_checkpoints
    assert acked_metrics <= stored_metrics, (sorted(acked_metrics - stored_metrics), done)
    assert acked_checkpoints <= stored_checkpoints, (acked_checkpoints - stored_checkpoints, done)
    return done


@pytest.mark.parametrize(
    "runs",
    [
        pytest.param(SHORT_RUNS, id="short"),
        pytest.param(LONG_RUNS, id="long", marks=pytest.mark.slow),
    ],
)
def test_sigkills_lose_no_acknowledged_report(database_url: str, tmp_path: Path, runs: int) -> None:
    plans: list[list[str]] = []
    with running_master(database_url, tmp_path) as master:
        for run in range(runs):
            # One seed per run (and database): a failing plan can be replayed.
            rng = random.Random(f"{run}-{database_url.split(':')[0]}")
            plans.append(one_run(master, tmp_path, run, rng))
    assert any("master" in plan for plan in plans), plans
    assert any(fault.startswith("worker") for plan in plans for fault in plan), plans
