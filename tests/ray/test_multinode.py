"""Trials on a Ray cluster of three nodes, simulated on this host (``ray_cluster``).

The master is ``detlite master --resource-manager ray`` in a subprocess (the pytest process
is already the driver of the session's other Ray head), one for the module. Each node has
one CPU, so one trial slot: Ray has to use every node.

- trials that run at the same time run on different nodes;
- a 2-slot PyTorch trial has one rank on each of two nodes and trains over gloo; ``detlite
  trial describe`` tells its two nodes apart by node id, their host name being the same;
- a node removed mid-training: its trial resumes on another node from its latest
  checkpoint and ends with the metrics of an untouched twin (same config and seed);
- a node cut off from Ray (its raylet stopped, SIGSTOP) while its processes still reach
  the master: Ray declares it dead and the trial is launched again elsewhere while its old
  worker still trains there. That worker is fenced: it exits after the relaunch, and
  nothing it reports from then on is stored (no metric, log or checkpoint row, no
  checkpoint file), so the trial still ends with its twin's metrics;
- a node added while a trial waits for room is used.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from detlite.launch import free_port, process_running
from detlite.master import db as master_db
from detlite.master.context_archive import pack_files
from detlite.master.orm import Checkpoint, TrainingMetrics, Trial, ValidationMetrics
from detlite.testing.fake import linear_config
from tests.e2e.test_search_local import (
    ENDED,
    completed_checkpoints,
    config,
    create,
    exp_state,
    metrics,
    trials_of,
)
from tests.e2e.test_search_local import wait_for as _wait_for
from tests.master.test_cli_models import CLI
from tests.ray.conftest import RAY_ENV, WORKER_NODES, SimulatedCluster

ROOT = Path(__file__).resolve().parents[2]

# Twins train 60 batches of 0.3 s each, checkpointing every 10, reporting every batch: a
# node lost after the first checkpoint is declared dead (about 7 s, see conftest.py) well
# before the stale worker on it would have finished, so that it is seen reporting on.
TWIN_HPARAMS = {**linear_config()["hyperparameters"], "sleep": 0.3}
TWIN_SETTINGS = {
    "min_validation_period": {"batches": 10},
    "min_checkpoint_period": {"batches": 10},
    "scheduling_unit": 1,
    "reproducibility": {"experiment_seed": 2718},
}


def wait_for(what: str, check: Callable[[], Any], timeout: float = 120.0) -> Any:
    """The e2e suite's wait, with a longer default: a cluster on one host is slow."""
    return _wait_for(what, check, timeout)


@dataclass
class ClusterMaster:
    """The module's master: its URL, an API client logged in as ``determined``, its database
    (read directly, for what the API does not show: every run's rows) and its log."""

    url: str
    api: httpx.Client
    engine: sa.Engine
    checkpoints: Path
    log: Path
    root: Path

    def row(self, trial_id: int) -> Trial:
        with master_db.make_sessionmaker(self.engine)() as session:
            row = session.get(Trial, trial_id)
            assert row is not None
            session.expunge(row)
            return row

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def _ended(self, exp_id: int) -> bool:
        return exp_state(self.api, exp_id) in ENDED

    def wait_ended(self, *exp_ids: int, timeout: float = 180.0) -> None:
        for exp_id in exp_ids:
            try:
                wait_for("the experiment to end", lambda e=exp_id: self._ended(e), timeout)
            except AssertionError:
                found = [(t["id"], t["state"], t["restarts"]) for t in trials_of(self.api, exp_id)]
                raise AssertionError(
                    f"experiment {exp_id} did not end: {found}\nthe master's log:\n"
                    f"{self.log_tail()}"
                ) from None
            assert exp_state(self.api, exp_id) == "STATE_COMPLETED", self.log_tail()


@pytest.fixture(scope="module")
def master(
    ray_cluster: SimulatedCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ClusterMaster]:
    root = tmp_path_factory.mktemp("multinode")
    port = free_port()
    db_url = f"sqlite:///{root / 'master.db'}"
    (root / "ckpt").mkdir()
    env = {
        **os.environ,
        **RAY_ENV,
        # The ray manager hands the master's DETLITE_* variables to every worker.
        "DETLITE_EXTRA_PLUGINS": "detlite.testing:FakeFrameworkPlugin",
        "DETLITE_MASTER_RETRY_S": "30",
        "XDG_DATA_HOME": str(root / "xdg"),
        "XDG_CONFIG_HOME": str(root / "xdg-config"),
        "PYTHONUNBUFFERED": "1",
    }
    command = [sys.executable, "-m", "detlite", "master", "--port", str(port), "--db", db_url]
    command += ["--storage", str(root / "storage"), "--allow-shared-fs", str(root / "ckpt")]
    command += ["--resource-manager", "ray", "--ray-address", ray_cluster.address]
    log = root / "master.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, cwd=root, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out
        )
    url = f"http://127.0.0.1:{port}"
    engine = master_db.create_engine(db_url)
    try:

        def ready() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"the master exited: {log.read_text()[-3000:]}")
            try:
                return httpx.get(f"{url}/api/v1/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for("the master", ready, timeout=120)
        login = httpx.post(
            f"{url}/api/v1/auth/login", json={"username": "determined", "password": ""}
        )
        headers = {"Authorization": f"Bearer {login.json()['token']}"}
        with httpx.Client(base_url=url, headers=headers, timeout=30) as api:
            yield ClusterMaster(url, api, engine, root / "ckpt", log, root)
    finally:
        process.send_signal(signal.SIGINT)  # Ctrl-C: the master stops its trials and Ray
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        engine.dispose()


@pytest.fixture(autouse=True)
def _three_nodes(ray_cluster: SimulatedCluster) -> None:
    # A test that removed or broke a node leaves the next one the cluster it started with.
    ray_cluster.restore()


def _nodes_of(trial: dict[str, Any]) -> list[str]:
    return [str(rank["nodeId"]) for rank in trial.get("placement") or []]


def _placed(master: ClusterMaster, exp_id: int) -> dict[str, Any] | None:
    found = trials_of(master.api, exp_id)
    return found[0] if found and found[0].get("placement") else None


def _twins(master: ClusterMaster) -> tuple[int, int]:
    """Two single-trial experiments alike in every way (their seed too)."""
    single = {"name": "single", "max_length": {"batches": 60}}
    body = config(master.root, single, hyperparameters=TWIN_HPARAMS, **TWIN_SETTINGS)
    return create(master.api, body), create(master.api, body)


def _victim_and_twin(
    master: ClusterMaster, cluster: SimulatedCluster, twins: tuple[int, int]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The twins' trials once both are placed: first the one on a node other than the head
    (the head cannot go), which the test breaks, then the other."""
    placed = [
        wait_for("the twins' trials to be placed", lambda e=e: _placed(master, e)) for e in twins
    ]
    on_head = [_nodes_of(trial) == [cluster.head_id] for trial in placed]
    assert on_head.count(True) <= 1, placed  # one CPU a node
    victim = placed[1] if on_head[0] else placed[0]
    twin = placed[0] if victim is placed[1] else placed[1]
    return victim, twin


def _assert_same_metrics(master: ClusterMaster, victim_id: int, twin_id: int) -> None:
    for kind in ("validation", "training"):
        expected = metrics(master.api, twin_id, kind)
        assert expected and expected[-1][0] == 60
        assert metrics(master.api, victim_id, kind) == expected


def test_trials_at_the_same_time_run_on_different_nodes(
    master: ClusterMaster, ray_cluster: SimulatedCluster
) -> None:
    random = {"name": "random", "max_length": {"batches": 8}, "max_trials": 3}
    hparams = {**linear_config()["hyperparameters"], "sleep": 0.25}
    exp_id = create(master.api, config(master.root, random, hyperparameters=hparams))
    master.wait_ended(exp_id)
    found = trials_of(master.api, exp_id)
    assert len(found) == 3
    for trial in found:
        assert trial["state"] == "STATE_COMPLETED" and trial["resourceManager"] == "ray"
        assert [rank["nodeIp"] for rank in trial["placement"]] == ["127.0.0.1"]
    # The master launched all three at once (it counted three slots: this is the module's
    # first test), and each node has one CPU.
    assert sorted(n for t in found for n in _nodes_of(t)) == sorted(ray_cluster.node_ids())


def test_a_two_slot_trial_spans_two_nodes_and_trains_over_gloo(
    master: ClusterMaster,
    ray_cluster: SimulatedCluster,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("torch")
    from tests.pytorch.trials import mlp_config

    source = (ROOT / "tests" / "pytorch" / "trials.py").read_bytes()
    archive = base64.b64encode(pack_files([("model_def.py", "file", source, None)])).decode()
    body = mlp_config(
        entrypoint="model_def:MLPTrial",
        resources={"slots_per_trial": 2},
        searcher={"max_length": {"batches": 4}},
        min_validation_period={"batches": 2},
        checkpoint_storage={"type": "shared_fs", "host_path": str(master.checkpoints)},
    )
    response = master.api.post(
        "/api/v1/experiments", json={"config": body, "contextArchive": archive}
    )
    assert response.status_code == 200, response.text
    exp_id = int(response.json()["experiment"]["id"])
    master.wait_ended(exp_id)
    (trial,) = trials_of(master.api, exp_id)
    nodes = _nodes_of(trial)
    assert len(nodes) == 2 and len(set(nodes)) == 2, trial["placement"]
    assert set(nodes) <= ray_cluster.node_ids()
    assert [b for b, _ in metrics(master.api, trial["id"], "validation")] == [2, 4]
    logs = master.api.get(f"/api/v1/trials/{trial['id']}/logs").json()["logs"]
    messages = " ".join(str(entry["message"]) for entry in logs)
    assert "rank 1/2" in messages and "gloo" in messages, messages[-2000:]

    # One host name for both nodes: `trial describe` adds each node's id.
    hosts = {rank["node"] for rank in trial["placement"]}
    assert len(hosts) == 1
    monkeypatch.setenv("DETLITE_MASTER", master.url)
    described = CLI(capsys, monkeypatch).ok("trial", "describe", str(trial["id"]))
    (host,) = hosts
    expected = "; ".join(f"{host} [node {node[:8]}]: cpu" for node in nodes) + " (ray)"
    assert expected in described, described


def test_a_removed_node_s_trial_resumes_elsewhere_like_its_twin(
    master: ClusterMaster, ray_cluster: SimulatedCluster
) -> None:
    twins = _twins(master)
    victim, twin = _victim_and_twin(master, ray_cluster, twins)
    wait_for("a checkpoint", lambda: completed_checkpoints(master.api, victim["id"]))
    (lost,) = _nodes_of(victim)
    ray_cluster.remove_node(lost)
    master.wait_ended(*twins)
    victim_now = master.api.get(f"/api/v1/trials/{victim['id']}").json()["trial"]
    twin_now = master.api.get(f"/api/v1/trials/{twin['id']}").json()["trial"]
    assert victim_now["restarts"] == 1 and twin_now["restarts"] == 0
    (resumed_on,) = _nodes_of(victim_now)
    assert resumed_on != lost and resumed_on in ray_cluster.node_ids()
    _assert_same_metrics(master, victim["id"], twin["id"])


# -- a stale worker --------------------------------------------------------------------------


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.partition(b"=") for item in raw.split(b"\0") if item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, _, v in pairs}


def worker_pids(allocation_id: str) -> list[int]:
    """The trial worker processes of one launch (``DETLITE_ALLOCATION_ID`` in their
    environment, ``detlite.exec.trial`` on their command line)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if _environ(pid).get("DETLITE_ALLOCATION_ID") != allocation_id:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"detlite.exec.trial" in cmdline and process_running(pid):
            found.append(pid)
    return found


@dataclass(frozen=True)
class RunRows:
    """What the master stored of one run of a trial."""

    metrics: frozenset[tuple[str, int, str]]  # kind, batches, end time: from the database
    logs: frozenset[int]  # log line ids, from the API (its trialRunId)
    checkpoints: frozenset[str]  # every checkpoint uuid of the trial (they name no run)


def run_rows(master: ClusterMaster, trial_id: int, run: int) -> RunRows:
    stored: set[tuple[str, int, str]] = set()
    with master_db.make_sessionmaker(master.engine)() as session:
        for kind, model in (("training", TrainingMetrics), ("validation", ValidationMetrics)):
            query = sa.select(model.batches_trained, model.end_time).where(
                model.trial_id == trial_id, model.trial_run_id == run
            )
            stored |= {(kind, batches, str(end)) for batches, end in session.execute(query)}
    logs = master.api.get(f"/api/v1/trials/{trial_id}/logs", params={"limit": 0}).json()["logs"]
    body = master.api.get(f"/api/v1/trials/{trial_id}/checkpoints").json()
    return RunRows(
        metrics=frozenset(stored),
        logs=frozenset(int(entry["id"]) for entry in logs if entry.get("trialRunId") == run),
        checkpoints=frozenset(c["uuid"] for c in body["checkpoints"]),
    )


def test_a_stale_worker_of_a_lost_node_is_fenced(
    master: ClusterMaster, ray_cluster: SimulatedCluster
) -> None:
    twins = _twins(master)
    victim, twin = _victim_and_twin(master, ray_cluster, twins)
    wait_for("a checkpoint", lambda: completed_checkpoints(master.api, victim["id"]))
    old = master.row(victim["id"])
    assert old.allocation_id and old.restarts == 0
    stale = wait_for("the victim's worker", lambda: worker_pids(str(old.allocation_id)))
    (node,) = _nodes_of(victim)
    ray_cluster.stop_raylet(node)  # Ray loses the node; the worker on it trains on

    def relaunched() -> Trial | None:
        row = master.row(victim["id"])
        return row if row.allocation_id not in (None, old.allocation_id) else None

    new = wait_for("the victim's relaunch", relaunched, timeout=90)
    # From here on, nothing of the old run may be stored.
    at_relaunch = run_rows(master, victim["id"], old.restarts)
    assert new.restarts == old.restarts + 1
    wait_for("the stale worker to exit", lambda: not any(map(process_running, stale)), 60)
    master.wait_ended(*twins)
    after = run_rows(master, victim["id"], old.restarts)
    assert after.metrics == at_relaunch.metrics, (
        f"the stale worker's metrics were stored: {sorted(after.metrics - at_relaunch.metrics)}"
    )
    assert at_relaunch.logs, "no log line carries the old run's trialRunId"
    assert after.logs == at_relaunch.logs, "the stale worker's log lines were stored"

    # Its checkpoints: the new run saves each batch count once; a stale worker's save at a
    # batch count the new run reaches later would show as a second one.
    later = after.checkpoints - at_relaunch.checkpoints
    body = master.api.get(f"/api/v1/trials/{victim['id']}/checkpoints").json()
    batches = [c["batchNumber"] for c in body["checkpoints"] if c["uuid"] in later]
    assert len(batches) == len(set(batches)), f"two checkpoints at one batch count: {batches}"
    # And no checkpoint files that no checkpoint row names.
    with master_db.make_sessionmaker(master.engine)() as session:
        known = set(session.scalars(sa.select(Checkpoint.uuid)))
    stored = {p.name for p in master.checkpoints.iterdir() if _is_uuid(p.name)}
    assert stored <= known, f"checkpoint files no checkpoint row names: {stored - known}"

    victim_now = master.api.get(f"/api/v1/trials/{victim['id']}").json()["trial"]
    assert _nodes_of(victim_now) != [node]
    _assert_same_metrics(master, victim["id"], twin["id"])


def _is_uuid(name: str) -> bool:
    try:
        uuid.UUID(name)
    except ValueError:
        return False
    return True


# -- a node added ----------------------------------------------------------------------------


def test_a_node_added_mid_search_is_used(
    master: ClusterMaster, ray_cluster: SimulatedCluster
) -> None:
    for node in list(ray_cluster.node_ids() - {ray_cluster.head_id})[: WORKER_NODES - 1]:
        ray_cluster.remove_node(node)  # two nodes left: the third trial waits
    random = {"name": "random", "max_length": {"batches": 40}, "max_trials": 3}
    hparams = {**linear_config()["hyperparameters"], "sleep": 0.5}
    exp_id = create(master.api, config(master.root, random, hyperparameters=hparams))

    def waiting() -> dict[str, Any] | None:
        found = trials_of(master.api, exp_id)
        unplaced = [t for t in found if not t.get("placement")]
        return unplaced[0] if len(found) == 3 and len(unplaced) == 1 else None

    third = wait_for("two trials to be placed and the third to wait", waiting)
    added = ray_cluster.add_node()
    master.wait_ended(exp_id)
    # The other two still trained when the node came: only the new node had room.
    ran_on = master.api.get(f"/api/v1/trials/{third['id']}").json()["trial"]
    assert _nodes_of(ran_on) == [added], (added, ran_on["placement"])
