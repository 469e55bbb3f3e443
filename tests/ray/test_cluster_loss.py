"""A master that loses its Ray cluster, and gets it back, without a restart of its own.

The cluster is a head of this test's own (``ray start --head`` on loopback, like the
session's in ``conftest``), killed hard -- every process of it at once, as when its machine
goes -- and started again on the same port. The master is ``detlite master`` in a
subprocess (the pytest process may be a Ray driver already, and a process connects to one
cluster in its life), without ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` in its environment: the
master sets it for its driver itself. Its driver gives up on a GCS that is gone after 5 s
(``RAY_gcs_rpc_server_reconnect_timeout_s``; 60 s by default), to keep the test short.

- the head killed: ``GET /api/v1/master`` says ``disconnected`` and names the address; the
  trial that ran is not failed for good, and a trial created meanwhile waits (not launched,
  not failed for want of slots);
- the head back on the same port: launching resumes; the interrupted trial restarts from
  its checkpoint (one restart) and both experiments complete.

And a cluster smaller than the master last counted: a launch looks at the count again
first, and one that would not fit the cluster as it is now is refused (the scheduler keeps
the trial waiting) rather than left to wait in Ray for a node that left.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from detlite.interfaces import WorkerSpec
from detlite.launch import free_port
from detlite.testing.fake import linear_config
from tests.e2e.test_search_local import (
    completed_checkpoints,
    config,
    create,
    exp_state,
    trials_of,
    wait_for,
)
from tests.ray.conftest import HEAD_CPUS as SESSION_CPUS
from tests.ray.conftest import RAY_ENV, _end_tree, _port_open, _read, _stat, descendants

HEAD_CPUS = 2
_START_TIMEOUT_S = 120.0


class Head:
    """``ray start --head --block`` on 127.0.0.1 at a fixed GCS port, in a temp dir of its own."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.temp_dir = Path(tempfile.mkdtemp(prefix="dlloss-", dir="/tmp"))  # short: sockets
        ports = (
            "--node-manager-port",
            "--object-manager-port",
            "--ray-client-server-port",
            "--dashboard-agent-grpc-port",
            "--dashboard-agent-listen-port",
            "--metrics-export-port",
            "--runtime-env-agent-port",
        )
        command = [
            str(Path(sys.executable).with_name("ray")),
            "start",
            "--head",
            "--block",
            f"--port={port}",
            "--node-ip-address=127.0.0.1",
            f"--temp-dir={self.temp_dir}",
            f"--num-cpus={HEAD_CPUS}",
            "--num-gpus=0",
            "--include-dashboard=false",
            "--disable-usage-stats",
            "--object-store-memory=80000000",
            *(f"{flag}={free_port()}" for flag in ports),
        ]
        self.log = self.temp_dir / "head.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                command,
                env={**os.environ, **RAY_ENV},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not (_port_open(port) and "Ray runtime started" in _read(self.log)):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the Ray head did not start: {_read(self.log)[-3000:]}")
            time.sleep(0.2)

    def kill(self) -> None:
        """Every process of the head at once (SIGKILL), as when its machine goes."""
        tree = descendants(self.process.pid)
        self.process.kill()
        for pid, started in tree.items():
            stat = _stat(pid)
            if stat is not None and stat[1] == started:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process.poll() is None:
            _end_tree(self.process)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@pytest.fixture
def heads() -> Iterator[list[Head]]:
    """The heads a test starts (appended as it goes); every one is ended afterwards."""
    started: list[Head] = []
    try:
        yield started
    finally:
        for head in started:
            head.stop()


def _rm_status(api: httpx.Client) -> dict[str, Any]:
    return dict(api.get("/api/v1/master").json()["resourceManager"])


def test_a_lost_cluster_pauses_launching_until_it_is_back(
    heads: list[Head], tmp_path: Path
) -> None:
    gcs_port = free_port()
    heads.append(Head(gcs_port))
    address = f"127.0.0.1:{gcs_port}"
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"},
        "RAY_AUTH_MODE": "disabled",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_gcs_rpc_server_reconnect_timeout_s": "5",
        "DETLITE_EXTRA_PLUGINS": "detlite.testing:FakeFrameworkPlugin",
        "DETLITE_MASTER_RETRY_S": "30",
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "PYTHONUNBUFFERED": "1",
    }
    command = [
        *(sys.executable, "-m", "detlite", "master", "--port", str(port)),
        *("--db", f"sqlite:///{tmp_path / 'master.db'}", "--storage", str(tmp_path / "ckpts")),
        *("--allow-shared-fs", str(tmp_path)),  # the experiments keep checkpoints in it
        *("--resource-manager", "ray", "--ray-address", address, "--ray-connect-timeout", "10"),
    ]
    log = tmp_path / "master.log"
    with log.open("wb") as out:
        master = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for("the master", lambda: "listening on" in log.read_text() or master.poll(), 120)
        assert master.poll() is None, log.read_text()
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as api:
            login = api.post("/api/v1/auth/login", json={"username": "determined", "password": ""})
            api.headers["Authorization"] = f"Bearer {login.json()['token']}"
            assert _rm_status(api) == {
                "type": "ray",
                "status": "ok",
                "message": "",
                "slots": HEAD_CPUS,
            }

            # A trial that trains for a while, and has a checkpoint when the head goes.
            hparams = {**linear_config()["hyperparameters"], "sleep": 0.2}
            single = {"name": "single", "max_length": {"batches": 40}}
            body = config(
                tmp_path, single, hyperparameters=hparams, min_checkpoint_period={"batches": 2}
            )
            running = create(api, body)
            (trial,) = wait_for("the trial", lambda: trials_of(api, running))
            wait_for("a checkpoint", lambda: completed_checkpoints(api, trial["id"]), 120)

            heads[0].kill()
            status = wait_for(
                "the master to see the cluster gone",
                lambda: (s := _rm_status(api))["status"] == "disconnected" and s,
                timeout=60,
            )
            assert address in status["message"], status

            waiting = create(
                api, config(tmp_path, {"name": "single", "max_length": {"batches": 2}})
            )
            (late,) = wait_for("the second trial", lambda: trials_of(api, waiting))
            time.sleep(3)  # many scheduler ticks: none may launch it, nor fail it
            (late,) = trials_of(api, waiting)
            assert late["state"] == "STATE_ACTIVE" and late["node"] is None, late
            assert exp_state(api, waiting) == exp_state(api, running) == "STATE_ACTIVE"

            heads.append(Head(gcs_port))  # the same address again
            for exp_id in (running, waiting):
                wait_for(
                    f"experiment {exp_id} to complete",
                    lambda e=exp_id: exp_state(api, e) == "STATE_COMPLETED",
                    timeout=240,
                )
            assert _rm_status(api)["status"] == "ok"
            (trial,) = trials_of(api, running)
            assert trial["restarts"] == 1, trial  # the run the lost cluster took with it
        text = log.read_text()
        assert f"lost the Ray cluster at {address}" in text
        assert f"reconnected to the Ray cluster at {address}" in text
    finally:
        master.send_signal(signal.SIGINT)  # Ctrl-C: the master stops its trials and its driver
        try:
            master.wait(timeout=60)
        except subprocess.TimeoutExpired:
            master.kill()
            master.wait()


def test_a_launch_that_would_not_fit_the_cluster_now_is_refused(ray_rm: Any) -> None:
    from detlite.ray.manager import RayConnectionError

    sleeper = [sys.executable, "-c", "import time; time.sleep(120)"]
    before = set(ray_rm.handles())
    whole = ray_rm.launch(WorkerSpec(trial_id=1, slots=SESSION_CPUS, command=sleeper))
    try:
        expected = (
            rf"no room for trial 2's 1 slot\(s\): the Ray cluster has {SESSION_CPUS} slot\(s\) "
            rf"now and {SESSION_CPUS} in use; it waits"
        )
        with pytest.raises(RayConnectionError, match=expected):
            ray_rm.launch(WorkerSpec(trial_id=2, slots=1, command=sleeper))
        assert set(ray_rm.handles()) == before | {whole}  # the refused one left nothing
    finally:
        ray_rm.forget(whole)
