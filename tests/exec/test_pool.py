"""The warm worker pool (``detlite.exec.pool``): trials of a live master's scheduler forked
from a warm parent by the local resource manager, with the fake framework.

The experiments' code (``model_def:PoolTrial``) prints what its process sees as one
``POOLTEST {json}`` log line: its pid and parent, its process group, the environment
variable and the module global an earlier trial may have left, and where ``pooltest_dep``
(a module outside the context, on ``PYTHONPATH``: what a pool parent keeps imported, like
torch) was imported. An experiment's first two launches run as plain processes: the first
starts no parent, the second starts one that warms up meanwhile. A ``gate`` trial (or run)
holds the slot until the test has seen the parent ready, so that every later launch is
forked from it.
"""

from __future__ import annotations

import base64
import json
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

from detlite.interfaces import WorkerSpec
from detlite.launch import free_port, process_running
from detlite.master import create_app
from detlite.master.context_archive import pack_directory
from detlite.resources.local import LocalResourceManager
from detlite.testing.fake import linear_config
from tests.exec.test_worker_e2e import (
    _allocation,
    _checkpoints,
    _logs,
    _metrics,
    _trials,
    _wait_for,
    _wait_until,
)
from tests.master.conftest import LiveMaster, make_settings, serve_in_thread

MODEL_DEF = """
import json
import os
import signal
import time
from pathlib import Path

{prelude}
import ctxhelper
import pooltest_dep
from detlite.testing import LinearTrial

VERSION = {version!r}


class PoolTrial(LinearTrial):
    def __init__(self, context):
        hparams = context.get_hparams()
        mode = hparams["mode"]
        run = int(os.environ.get("DETLITE_TRIAL_RUN_ID", "0"))
        seen = {{
            "mode": mode,
            "run": run,
            "rank": context.distributed.get_rank(),
            "pid": os.getpid(),
            "ppid": os.getppid(),
            "pgid": os.getpgid(0),
            "dep_imported_in": pooltest_dep.IMPORTED_IN,
            "dep_leak": pooltest_dep.LEAK,
            "env_leak": os.environ.get("POOLTEST_LEAK"),
            "version": VERSION,
            "helper": ctxhelper.VALUE,
            "archive": os.environ.get("DETLITE_CONTEXT_ARCHIVE"),
            "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
        }}
        print("POOLTEST " + json.dumps(seen), flush=True)
        gate = Path(hparams["gate"])
        if mode == "gate" or (mode == "gate_second" and run == 1):
            deadline = time.monotonic() + 120
            while not gate.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        elif mode == "leak":
            pooltest_dep.LEAK = "set by a trial"
            os.environ["POOLTEST_LEAK"] = "1"
            pooltest_dep.HOARD.append(bytearray(32 << 20))
        elif mode == "segfault" and run == 0:
            os.kill(os.getpid(), signal.SIGSEGV)
        elif mode == "exit":
            os._exit(7)
        super().__init__(context)
        self.sleep = 0.05 if mode == "slow" else float(hparams.get("sleep", 0))

    def train_batch(self, batch, epoch_idx, batch_idx):
        if self.sleep:
            time.sleep(self.sleep)
        return super().train_batch(batch, epoch_idx, batch_idx)
"""

DEP = """
import os

IMPORTED_IN = os.getpid()
LEAK = None
HOARD = []
"""


@contextmanager
def pooled_master(
    db_url: str, tmp_path: Path, slots: int, **options: Any
) -> Iterator[tuple[LiveMaster, LocalResourceManager]]:
    settings = make_settings(db_url, tmp_path, scheduler=True, scheduler_tick=0.1)
    with LocalResourceManager(slots=slots, work_dir=tmp_path / "groups", **options) as rm:
        app = create_app(settings, resource_manager=rm)
        with serve_in_thread(app) as url:
            yield LiveMaster(app=app, settings=settings, url=url), rm


@pytest.fixture(autouse=True)
def _workers_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # The local resource manager passes this process's environment on to pool parents and
    # workers: the fake framework, and a directory with a module outside every context.
    site = tmp_path / "site"
    site.mkdir()
    (site / "pooltest_dep.py").write_text(textwrap.dedent(DEP))
    path = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(site), path) if p))
    monkeypatch.setenv("DETLITE_EXTRA_PLUGINS", "detlite.testing:FakeFrameworkPlugin")
    monkeypatch.setenv("DETLITE_MASTER_RETRY_S", "20")
    monkeypatch.delenv("DETLITE_WORKER_POOL", raising=False)


def _config(tmp_path: Path, modes: list[str], **overrides: Any) -> dict[str, Any]:
    storage = tmp_path / "storage"
    storage.mkdir(exist_ok=True)
    config = linear_config()
    config["entrypoint"] = "model_def:PoolTrial"
    config["hyperparameters"].update(
        {
            "mode": {"type": "categorical", "vals": modes},
            "gate": str(tmp_path / "gate"),
            "sleep": 0,
        }
    )
    config["searcher"] = {
        "name": "grid",
        "metric": "validation_loss",
        "max_length": {"batches": 2},
        "max_concurrent_trials": 1,
    }
    config["checkpoint_storage"] = {"type": "shared_fs", "host_path": str(storage)}
    config["max_restarts"] = 1
    config.update(overrides)
    return config


def _create(
    master: LiveMaster,
    tmp_path: Path,
    config: dict[str, Any],
    version: str = "a",
    prelude: str = "",
) -> tuple[httpx.Client, int]:
    context = tmp_path / f"context-{version}"
    context.mkdir(exist_ok=True)
    code = MODEL_DEF.format(version=version, prelude=textwrap.dedent(prelude))
    (context / "model_def.py").write_text(textwrap.dedent(code))
    (context / "ctxhelper.py").write_text(f"VALUE = {version!r}\n")
    api = master.client(master.login("determined"))
    body = {"config": config, "contextArchive": base64.b64encode(pack_directory(context)).decode()}
    response = api.post("/api/v1/experiments", json=body)
    assert response.status_code == 200, response.text
    return api, int(response.json()["experiment"]["id"])


def _ready_pool(rm: LocalResourceManager, exp_id: int, *, complete: bool = True) -> dict[str, Any]:
    """Wait for the experiment's pool parent to be ready; its ``pools()`` entry. With
    ``complete``, it must have warmed up completely."""

    def ready() -> dict[str, Any] | None:
        for pool in rm.pools():
            if pool["experimentId"] == exp_id and pool["state"] == "ready":
                return pool
        return None

    pool: dict[str, Any] = _wait_until(f"experiment {exp_id}'s pool parent", ready, 120)
    assert not complete or not pool["notes"], pool
    return pool


def _open_gate(tmp_path: Path) -> None:
    (tmp_path / "gate").touch()


def _seen(api: httpx.Client, trial_id: int) -> list[dict[str, Any]]:
    """The ``POOLTEST`` lines of a trial's runs, in order."""
    prefix = "POOLTEST "
    return [
        json.loads(log["message"][len(prefix) :])
        for log in _logs(api, trial_id)
        if log["message"].startswith(prefix)
    ]


def _by_mode(api: httpx.Client, exp_id: int) -> dict[str, dict[str, Any]]:
    return {t["hparams"]["mode"]: t for t in _trials(api, exp_id)}


def _parent_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the pool forks on Linux")


def test_pooled_trials_are_forked_and_isolated(sqlite_url: str, tmp_path: Path) -> None:
    modes = ["first", "gate", "leak", "check", "segfault", "exit", "last"]
    with pooled_master(sqlite_url, tmp_path, slots=1) as (master, rm):
        exits: list[float] = []
        api, exp_id = _create(master, tmp_path, _config(tmp_path, modes))
        pool = _ready_pool(rm, exp_id)
        # Exits are events (for the scheduler to wake on), from pooled workers too.
        rm.set_listener(lambda: exits.append(time.monotonic()))
        _open_gate(tmp_path)
        assert _wait_for(api, exp_id, {"STATE_COMPLETED", "STATE_ERROR"}) == "STATE_COMPLETED"
        trials = _by_mode(api, exp_id)

        # The first two launches ran as plain processes of this one (the manager's); the
        # parent warmed up during the second.
        for mode in ("first", "gate"):
            [plain] = _seen(api, trials[mode]["id"])
            assert plain["ppid"] == os.getpid() and plain["dep_imported_in"] == plain["pid"]
            assert plain["archive"] is None

        pooled = []
        for mode in ("leak", "check", "segfault", "last"):
            runs = _seen(api, trials[mode]["id"])
            assert runs, f"no report from the {mode} trial"
            pooled += runs
        for seen in pooled:
            # Forked from the warm parent, which had imported what the code imports from
            # outside its context; each worker leads its own process group.
            assert seen["ppid"] == pool["pid"], seen
            assert seen["dep_imported_in"] == pool["pid"], seen
            assert seen["pgid"] == seen["pid"] != pool["pid"]
            assert seen["archive"] == str(Path(pool["dir"]) / "context.tgz")
            assert seen["cuda"] == ""
            if seen["mode"] != "leak":
                # Nothing of the trial that set a global and a variable reached the others.
                assert seen["dep_leak"] is None and seen["env_leak"] is None, seen
        assert len({seen["pid"] for seen in pooled}) == len(pooled)

        # A segfault is a failure like any other: restarted, then it runs normally.
        segfault = trials["segfault"]
        assert segfault["state"] == "STATE_COMPLETED" and segfault["restarts"] == 1
        messages = [log["message"] for log in _logs(api, segfault["id"])]
        assert f"trial {segfault['id']}'s workers exited with code {-signal.SIGSEGV}" in messages
        assert [s["run"] for s in _seen(api, segfault["id"])][-1] == 1
        # os._exit(7) on every run: past max_restarts it ends in ERROR; the others complete.
        failing = trials["exit"]
        assert failing["state"] == "STATE_ERROR" and failing["restarts"] == 1
        messages = [log["message"] for log in _logs(api, failing["id"])]
        assert f"trial {failing['id']}'s workers exited with code 7" in messages
        for mode in ("first", "gate", "leak", "check", "last"):
            assert trials[mode]["state"] == "STATE_COMPLETED", trials[mode]
            assert trials[mode]["restarts"] == 0
            assert [v["stepsCompleted"] for v in _metrics(api, trials[mode]["id"], "validation")]
        # One exit event per worker process that ended after the listener was set: every
        # run of every trial but the first two (which may have ended before).
        runs = sum(1 + t["restarts"] for mode, t in trials.items() if mode not in modes[:2])
        assert len(exits) >= runs


def test_each_experiment_gets_its_own_context(sqlite_url: str, tmp_path: Path) -> None:
    """Two experiments with the same module names and different code: each pooled worker
    runs its own experiment's files, and a two-slot group is forked rank by rank. With room
    for one parent, the first experiment's (idle) makes room for the second's."""
    with pooled_master(sqlite_url, tmp_path, slots=2, max_pools=1) as (master, rm):
        pools = {}
        for version in ("a", "b"):
            (tmp_path / "gate").unlink(missing_ok=True)
            modes = ["first", "gate", "check"]
            config = _config(tmp_path, modes, resources={"slots_per_trial": 2})
            api, exp_id = _create(master, tmp_path, config, version=version)
            pools[version] = _ready_pool(rm, exp_id)
            _open_gate(tmp_path)
            assert _wait_for(api, exp_id, {"STATE_COMPLETED", "STATE_ERROR"}) == ("STATE_COMPLETED")
            check = _by_mode(api, exp_id)["check"]
            ranks = {seen["rank"]: seen for seen in _seen(api, check["id"])}
            assert sorted(ranks) == [0, 1]
            for seen in ranks.values():
                assert seen["ppid"] == pools[version]["pid"]
                assert (seen["version"], seen["helper"]) == (version, version)
            assert ranks[0]["pid"] != ranks[1]["pid"]
        # One parent at most: the idle one of the first experiment made room.
        assert pools["a"]["pid"] != pools["b"]["pid"]
        assert not process_running(pools["a"]["pid"])


def _shared_parent(rm: LocalResourceManager) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        found = [p for p in rm.pools() if p["experimentId"] is None and p["state"] == "ready"]
        return found[0] if found else None

    shared: dict[str, Any] = _wait_until("the shared parent", ready, 60)
    return shared


def test_a_shared_parent_forks_each_experiments_first_trials(
    sqlite_url: str, tmp_path: Path
) -> None:
    """``warm_start``: a parent of no experiment, started with the manager, forks the launches
    no experiment's parent serves yet. Its workers run their own experiment's files (which it
    never imported), and a trial's globals or variables reach no later trial."""
    with pooled_master(sqlite_url, tmp_path, slots=1, warm_start=True) as (master, rm):
        shared = _shared_parent(rm)
        assert shared["notes"] == [] and not shared["workers"]
        seen: dict[str, dict[str, Any]] = {}
        for version, modes in (("a", ["leak", "gate", "check"]), ("b", ["check"])):
            (tmp_path / "gate").unlink(missing_ok=True)
            api, exp_id = _create(master, tmp_path, _config(tmp_path, modes), version=version)
            if version == "a":
                own = _ready_pool(rm, exp_id)
            _open_gate(tmp_path)
            assert _wait_for(api, exp_id, {"STATE_COMPLETED", "STATE_ERROR"}) == "STATE_COMPLETED"
            for mode, trial in _by_mode(api, exp_id).items():
                [seen[f"{version}-{mode}"]] = _seen(api, trial["id"])
        # The first two launches of "a" (the second started its own parent), and the first
        # of "b", were forked from the shared parent; each imported its own code itself.
        for name in ("a-leak", "a-gate", "b-check"):
            assert seen[name]["ppid"] == shared["pid"], (name, seen[name])
            assert seen[name]["dep_imported_in"] == seen[name]["pid"]
            assert seen[name]["archive"] is None  # it downloaded its context
            assert seen[name]["version"] == seen[name]["helper"] == name[0]
        # Then "a"'s own parent served it.
        assert seen["a-check"]["ppid"] == own["pid"]
        # Nothing the leak trial set reached the trials forked after it.
        for name in ("a-gate", "a-check", "b-check"):
            assert seen[name]["dep_leak"] is None and seen[name]["env_leak"] is None
        assert _shared_parent(rm)["pid"] == shared["pid"]  # the same parent, still ready


def test_a_shared_parent_serves_only_its_own_environment(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A launch whose environment differs from the shared parent's (beyond the experiment's
    and the run's own variables) starts a plain process; DETLITE_WORKER_POOL=0 starts no
    shared parent at all."""
    with pooled_master(sqlite_url, tmp_path, slots=1, warm_start=True) as (master, rm):
        shared = _shared_parent(rm)
        monkeypatch.setenv("POOLTEST_OTHER", "1")  # the launches' environment differs now
        _open_gate(tmp_path)
        api, exp_id = _create(master, tmp_path, _config(tmp_path, ["check"]))
        assert _wait_for(api, exp_id, {"STATE_COMPLETED", "STATE_ERROR"}) == "STATE_COMPLETED"
        [trial] = _trials(api, exp_id)
        [seen] = _seen(api, trial["id"])
        assert seen["ppid"] == os.getpid() != shared["pid"]
    monkeypatch.setenv("DETLITE_WORKER_POOL", "0")
    with LocalResourceManager(slots=1, work_dir=tmp_path / "off", warm_start=True) as rm:
        assert rm.pools() == []


def test_pool_off_runs_plain_processes(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DETLITE_WORKER_POOL", "0")
    with pooled_master(sqlite_url, tmp_path, slots=1) as (master, rm):
        _open_gate(tmp_path)
        api, exp_id = _create(master, tmp_path, _config(tmp_path, ["check", "last"]))
        assert _wait_for(api, exp_id, {"STATE_COMPLETED", "STATE_ERROR"}) == "STATE_COMPLETED"
        for trial in _trials(api, exp_id):
            [seen] = _seen(api, trial["id"])
            assert seen["ppid"] == os.getpid() and seen["archive"] is None
        assert rm.pools() == []


def _plain_run(work_dir: Path, command: list[str], **options: Any) -> tuple[int, str]:
    """Launch ``command`` as a trial's group; its exit code and stdout, once the manager's
    listener has heard of its exit. No pool parent may start for it."""
    env = {"DETLITE_EXPERIMENT_ID": "1", "DETLITE_TOKEN": "t", "DETLITE_MASTER": "http://x"}
    exits: list[int] = []
    with LocalResourceManager(slots=1, work_dir=work_dir, gpus=[], **options) as rm:
        rm.set_listener(lambda: exits.append(1))
        handle = rm.launch(WorkerSpec(trial_id=1, slots=1, command=command, env=env))
        _wait_until("the process to end", lambda: rm.poll(handle) is not None)
        code = rm.poll(handle)
        assert code is not None and rm.pools() == []
        _wait_until("the exit event", lambda: exits)
        return code, (rm.log_dir(handle) / "rank0.out").read_text()


def test_a_parent_that_dies_warming_up_is_not_started_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # An interpreter that runs workers but whose pool parents die at once.
    python = tmp_path / "python"
    python.write_text(
        f'#!/bin/sh\ncase "$*" in *detlite.exec.pool*) exit 3;; esac\nexec {sys.executable} "$@"\n'
    )
    python.chmod(0o755)
    env = {"DETLITE_EXPERIMENT_ID": "1", "DETLITE_TOKEN": "t", "DETLITE_MASTER": "http://x"}
    spec = WorkerSpec(
        trial_id=1, slots=1, command=[str(python), "-m", "detlite.exec.trial"], env=env
    )
    with LocalResourceManager(slots=1, work_dir=tmp_path / "work", gpus=[]) as rm:

        def run() -> int | None:
            handle = rm.launch(spec)
            _wait_until("the worker to end", lambda: rm.poll(handle) is not None)
            return rm.poll(handle)

        assert run() == 2  # the first launch: no parent; workers lack their allocation
        assert rm.pools() == []
        assert run() == 2  # the second starts a parent, which dies
        _wait_until("the parent to die", lambda: rm.pools()[0]["state"] == "gone")
        with caplog.at_level("WARNING", logger="detlite.resources"):
            assert run() == 2
            assert run() == 2
        assert rm.pools() == []
        [warning] = [
            r.getMessage() for r in caplog.records if "before it was ready" in r.getMessage()
        ]
        assert "exited (code 3)" in warning


def test_pool_false_and_other_commands_start_no_parent(tmp_path: Path) -> None:
    # pool=False, or a command that is not the trial worker: plain processes, no parent,
    # and the listener hears of their exits too.
    code, _ = _plain_run(tmp_path / "a", [sys.executable, "-m", "detlite.exec.trial"], pool=False)
    assert code == 2  # a worker with no allocation id: a usage error
    show_parent = [sys.executable, "-c", "import os; print(os.getppid())"]
    code, out = _plain_run(tmp_path / "b", show_parent)
    assert code == 0 and int(out) == os.getpid()


def test_kill_terminate_pause_and_kill_a_pooled_trial(sqlite_url: str, tmp_path: Path) -> None:
    """SIGKILL, SIGTERM (the worker ships its logs and exits 143), a pause and a kill of the
    experiment reach pooled workers exactly as plain ones."""
    config = _config(
        tmp_path,
        ["gate_second"],
        scheduling_unit=1,
        min_checkpoint_period={"batches": 3},
        max_restarts=5,
    )
    config["searcher"] = {"name": "single", "metric": "validation_loss"}
    config["searcher"]["max_length"] = {"batches": 400}
    config["hyperparameters"]["mode"] = "gate_second"
    config["hyperparameters"]["sleep"] = 0.05
    with pooled_master(sqlite_url, tmp_path, slots=1) as (master, rm):
        api, exp_id = _create(master, tmp_path, config)
        trial_id = _wait_until("the trial", lambda: _trials(api, exp_id))[0]["id"]

        def run_with_pids(run: int) -> list[int]:
            def current() -> list[int] | None:
                seen = [s for s in _seen(api, trial_id) if s["run"] == run]
                _, pids = _allocation(master, trial_id)
                return pids if seen and pids and seen[-1]["pid"] in pids else None

            pids: list[int] = _wait_until(f"run {run}", current)
            return pids

        def training(run: int) -> None:
            _wait_until(
                f"run {run}'s metrics",
                lambda: [t for t in _metrics(api, trial_id, "training") if t["trialRunId"] == run],
            )

        # Runs 0 and 1 are plain processes (run 1 starts the parent, and waits for it).
        [plain] = run_with_pids(0)
        assert _parent_of(plain) == os.getpid()
        training(0)
        os.kill(plain, signal.SIGKILL)
        [plain] = run_with_pids(1)
        assert _parent_of(plain) == os.getpid()
        pool = _ready_pool(rm, exp_id)
        _open_gate(tmp_path)
        training(1)
        os.kill(plain, signal.SIGKILL)

        # SIGKILL a forked run.
        [pid] = run_with_pids(2)
        assert _parent_of(pid) == pool["pid"]
        training(2)
        os.kill(pid, signal.SIGKILL)

        # SIGTERM to a forked run's group: it ships its logs and exits 143, a failure.
        [pid] = run_with_pids(3)
        assert _parent_of(pid) == pool["pid"]
        training(3)
        handle = rm.handles()[-1]
        assert rm.pids(handle) == [pid]
        rm.terminate(handle)
        [pid] = run_with_pids(4)
        assert _parent_of(pid) == pool["pid"]
        messages = [log["message"] for log in _logs(api, trial_id)]
        assert any("terminated by SIGTERM" in m for m in messages)
        assert f"trial {trial_id}'s workers exited with code 143" in messages
        assert f"trial {trial_id}'s workers exited with code {-signal.SIGKILL}" in messages

        # A pause stops it through the preemption poll; activating goes on, forked again.
        training(4)
        assert api.post(f"/api/v1/experiments/{exp_id}/pause").status_code == 200
        _wait_until("the worker to stop", lambda: _allocation(master, trial_id)[0] is None)
        assert not process_running(pid)
        messages = [log["message"] for log in _logs(api, trial_id)]
        assert any("worker done: preempted" in m for m in messages)
        assert api.post(f"/api/v1/experiments/{exp_id}/activate").status_code == 200
        _wait_until("the worker again", lambda: _allocation(master, trial_id)[1])
        [pid] = _allocation(master, trial_id)[1]
        assert _parent_of(pid) == pool["pid"]

        # Killing the experiment kills the pooled worker (SIGKILL to its group).
        assert api.post(f"/api/v1/experiments/{exp_id}/kill").status_code == 200
        assert _wait_for(api, exp_id, {"STATE_CANCELED", "STATE_ERROR"}) == "STATE_CANCELED"
        _wait_until("the worker to be gone", lambda: not process_running(pid))
        [trial] = _trials(api, exp_id)
        assert trial["restarts"] == 4  # three SIGKILLs and a SIGTERM; not the pause


def test_a_dead_parent_fails_its_workers(sqlite_url: str, tmp_path: Path) -> None:
    """SIGKILL to the pool parent: its running worker is killed and counts as failed; the
    trial runs again (a new parent warms up meanwhile) and completes."""
    config = _config(tmp_path, ["first", "gate", "slow"], scheduling_unit=1)
    config["searcher"]["max_length"] = {"batches": 200}
    with pooled_master(sqlite_url, tmp_path, slots=1) as (master, rm):
        api, exp_id = _create(master, tmp_path, config)
        pool = _ready_pool(rm, exp_id)
        _open_gate(tmp_path)
        slow = _wait_until("the forked trial", lambda: _by_mode(api, exp_id).get("slow"), 120)
        [seen] = _wait_until("its worker", lambda: _seen(api, slow["id"]), 120)
        pid = seen["pid"]
        assert seen["ppid"] == pool["pid"] and _allocation(master, slow["id"])[1] == [pid]
        _wait_until("its metrics", lambda: _metrics(api, slow["id"], "training"))
        os.kill(pool["pid"], signal.SIGKILL)
        _wait_until("the worker to be gone", lambda: not process_running(pid))
        assert _wait_for(api, exp_id, {"STATE_COMPLETED", "STATE_ERROR"}) == "STATE_COMPLETED"
        slow = _by_mode(api, exp_id)["slow"]
        assert slow["state"] == "STATE_COMPLETED" and slow["restarts"] == 1
        messages = [log["message"] for log in _logs(api, slow["id"])]
        assert f"trial {slow['id']}'s workers exited with code {-signal.SIGKILL}" in messages


def test_pool_parent_exits_when_idle(tmp_path: Path, sqlite_url: str) -> None:
    with pooled_master(sqlite_url, tmp_path, slots=1, pool_idle_timeout=0.5) as (master, rm):
        _open_gate(tmp_path)
        api, exp_id = _create(master, tmp_path, _config(tmp_path, ["first", "check"]))
        assert _wait_for(api, exp_id, {"STATE_COMPLETED", "STATE_ERROR"}) == "STATE_COMPLETED"
        pids = [p["pid"] for p in rm.pools()]
        assert pids  # started by the second launch
        _wait_until("the idle parent to exit", lambda: not any(map(process_running, pids)))
        assert {p["state"] for p in rm.pools()} <= {"gone"}
        # Its archive and context went with it; its log stays.
        [pool_dir] = (tmp_path / "groups" / "pools").iterdir()
        assert sorted(p.name for p in pool_dir.iterdir()) == ["pool.log"]


BROKEN_PRELUDE = """
if "RANK" not in os.environ:  # so the pool parent, which has no rank, cannot import this
    raise ImportError("pooltest: this code needs RANK")
if Path({broken!r}).exists() and os.environ["DETLITE_TRIAL_RUN_ID"] == "0":
    raise ImportError("pooltest: broken on purpose")
"""


def test_a_parent_that_cannot_warm_still_serves(sqlite_url: str, tmp_path: Path) -> None:
    """The experiment's code fails to import in the parent: it forks workers anyway, which
    import it themselves; an import error of theirs shows in the trial's own logs."""
    broken = tmp_path / "broken"
    prelude = BROKEN_PRELUDE.format(broken=str(broken))
    with pooled_master(sqlite_url, tmp_path, slots=1) as (master, rm):
        config = _config(tmp_path, ["first", "gate", "check"])
        api, exp_id = _create(master, tmp_path, config, prelude=prelude)
        pool = _ready_pool(rm, exp_id, complete=False)
        assert any("this code needs RANK" in note for note in pool["notes"]), pool
        broken.touch()  # the next trial's first run fails to import the code
        _open_gate(tmp_path)
        assert _wait_for(api, exp_id, {"STATE_COMPLETED", "STATE_ERROR"}) == "STATE_COMPLETED"
        check = _by_mode(api, exp_id)["check"]
        assert check["state"] == "STATE_COMPLETED" and check["restarts"] == 1
        [seen] = _seen(api, check["id"])
        assert seen["run"] == 1 and seen["ppid"] == pool["pid"]
        messages = "\n".join(log["message"] for log in _logs(api, check["id"]))
        assert "cannot import entrypoint 'model_def:PoolTrial'" in messages
        assert "pooltest: broken on purpose" in messages


def _pool_parents_of(pid: int) -> dict[int, Path]:
    """The pool parents that process ``pid`` started: pid -> its directory."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
            if b"detlite.exec.pool" in args and _parent_of(int(entry.name)) == pid:
                found[int(entry.name)] = Path(args[args.index(b"--dir") + 1].decode())
        except (OSError, ValueError, IndexError):
            continue
    return found


@contextmanager
def _master_process(tmp_path: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """``detlite master`` in a subprocess (SQLite file, the local resource manager)."""
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "xdg")}
    command = [sys.executable, "-m", "detlite", "master", "--port", str(port)]
    command += ["--db", f"sqlite:///{tmp_path / 'master.db'}", "--storage", str(tmp_path / "ck")]
    command += ["--allow-shared-fs", str(tmp_path / "storage")]
    with open(tmp_path / f"master-{time.monotonic_ns()}.log", "wb") as log:
        proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:

        def ready() -> bool:
            assert proc.poll() is None, f"the master exited with {proc.returncode}"
            try:
                return httpx.get(f"http://127.0.0.1:{port}/api/v1/health").status_code == 200
            except httpx.HTTPError:
                return False

        _wait_until("the master to start", ready)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_a_crashed_masters_pooled_workers_die_with_it(tmp_path: Path) -> None:
    """A master SIGKILLed with a forked worker running: the pool parent (its socket closed)
    kills the worker at once, rather than leaving it to the next master; that master runs
    the trial again from its checkpoint, not counting a restart."""
    port = free_port()
    config = _config(tmp_path, ["first", "gate", "slow"], min_checkpoint_period={"batches": 5})
    config["searcher"]["max_length"] = {"batches": 200}
    context = tmp_path / "context-a"
    context.mkdir()
    (context / "model_def.py").write_text(
        textwrap.dedent(MODEL_DEF.format(version="a", prelude=""))
    )
    (context / "ctxhelper.py").write_text("VALUE = 'a'\n")
    archive = base64.b64encode(pack_directory(context)).decode()
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as api:
        with _master_process(tmp_path, port) as first:
            login = {"username": "determined", "password": ""}
            token = api.post("/api/v1/auth/login", json=login).json()["token"]
            api.headers["Authorization"] = f"Bearer {token}"
            body = {"config": config, "contextArchive": archive}
            exp_id = int(api.post("/api/v1/experiments", json=body).json()["experiment"]["id"])

            def parents(kind: str) -> list[tuple[int, Path]]:
                found = _pool_parents_of(first.pid).items()
                return [(pid, path) for pid, path in found if path.name.startswith(kind)]

            [(parent, directory)] = _wait_until("the pool parent", lambda: parents("exp"), 120)
            # The master's shared parent (warm_start, on by default) goes with it too.
            [(shared, _)] = parents("shared-")
            _wait_until(
                "the parent to be warm",
                lambda: "warm after" in (directory / "pool.log").read_text(errors="replace"),
                120,
            )
            _open_gate(tmp_path)
            slow = _wait_until("the slow trial", lambda: _by_mode(api, exp_id).get("slow"), 120)
            [seen] = _wait_until("its worker", lambda: _seen(api, slow["id"]), 120)
            assert seen["ppid"] == parent
            _wait_until("a checkpoint", lambda: _checkpoints(api, slow["id"]), 120)
            first.send_signal(signal.SIGKILL)
            first.wait()
            _wait_until("the worker to die", lambda: not process_running(seen["pid"]), 30)
            _wait_until("the parent to exit", lambda: not process_running(parent), 30)
            _wait_until("the shared one to exit", lambda: not process_running(shared), 30)
        with _master_process(tmp_path, port):
            state = _wait_for(api, exp_id, {"STATE_COMPLETED", "STATE_ERROR"})
            assert state == "STATE_COMPLETED"
            slow = _by_mode(api, exp_id)["slow"]
            assert slow["state"] == "STATE_COMPLETED" and slow["restarts"] == 0
            assert [v["stepsCompleted"] for v in _metrics(api, slow["id"], "validation")] == [200]


TORCH_PRELUDE = """
import torch

if {compute_in_parent} or "RANK" in os.environ:  # a worker, or also the pool parent
    float(torch.ones(1 << 20).sum())  # big enough for torch's (OpenMP) thread pool
"""


def test_torch_is_kept_imported_unless_its_threads_ran(sqlite_url: str, tmp_path: Path) -> None:
    """Code that imports torch is forked from a parent that imported it once; code that
    also computes with torch's thread pool at import time is not (a forked child of that
    parent would hang in its first parallel computation): its workers run as plain ones."""
    pytest.importorskip("torch")
    with pooled_master(sqlite_url, tmp_path, slots=1) as (master, rm):
        for version, compute_in_parent in (("imports", False), ("computes", True)):
            (tmp_path / "gate").unlink(missing_ok=True)
            prelude = TORCH_PRELUDE.format(compute_in_parent=compute_in_parent)
            config = _config(tmp_path, ["first", "gate", "check"])
            api, exp_id = _create(master, tmp_path, config, version=version, prelude=prelude)

            def settled(exp_id: int = exp_id) -> dict[str, Any] | None:
                for pool in rm.pools():
                    if pool["experimentId"] == exp_id and pool["state"] != "warming":
                        return pool
                return None

            pool = _wait_until("the pool parent to be warm", settled, 180)
            _open_gate(tmp_path)
            assert _wait_for(api, exp_id, {"STATE_COMPLETED", "STATE_ERROR"}, 180) == (
                "STATE_COMPLETED"
            )
            [seen] = _seen(api, _by_mode(api, exp_id)["check"]["id"])
            if compute_in_parent:
                assert pool["state"] == "refusing" and "hung" in pool["why"], pool
                assert seen["ppid"] == os.getpid()
            else:
                assert pool["state"] == "ready" and not pool["notes"], pool
                assert seen["ppid"] == pool["pid"]
