"""``detlite master`` choosing Ray: from a config file (``resource_manager: {type: ray,
address: ...}``) or from ``--resource-manager ray --ray-address``, and what it refuses.

- an address where nothing listens ends the master within ``--ray-connect-timeout``, with a
  message that names it; SIGTERM stops a master whose driver is stuck in ``ray.init``
  (against a port that accepts connections and never answers), its driver process with it;
- an address the Ray nodes could not reach the master at (``--host 0.0.0.0`` without
  ``--master-url``, or loopback beside a cluster that is not) is refused before anything
  starts, and a master that would keep checkpoints on its own disk alone warns.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from detlite.launch import free_port
from tests.e2e.test_search_local import ENDED, config, create, exp_state, trials_of, wait_for
from tests.master.test_cli_models import CLI
from tests.ray.conftest import RayHead, _stat, descendants


def test_ray_address_needs_the_ray_manager(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cli = CLI(capsys, monkeypatch)
    code, _, err = cli("master", "--ray-address", "127.0.0.1:1")
    assert code == 2 and "--ray-address needs --resource-manager ray (not local)" in err
    bad = tmp_path / "master.yaml"
    bad.write_text("- not\n- a mapping\n")
    code, _, err = cli("master", "--config", str(bad))
    assert code == 2 and "must be a mapping of settings" in err
    bad.write_text("resource_manager: {address: 127.0.0.1:1}\n")
    code, _, err = cli("master", "--config", str(bad))
    assert code == 2 and "resource_manager.type is required" in err


def test_a_master_configured_by_file_runs_trials_on_ray(
    ray_rm: object, ray_head: RayHead, tmp_path: Path
) -> None:
    # ray_rm: the head is up and takes drivers (its GCS port opens before that).
    port = free_port()
    settings = {
        "db_url": f"sqlite:///{tmp_path / 'master.db'}",
        "storage_path": str(tmp_path / "checkpoints"),
        "storage_roots": [str(tmp_path / "ckpt")],  # where the experiment keeps checkpoints
        "port": 8080,  # the command line wins over the file
        "resource_manager": {"type": "ray", "address": ray_head.address},
    }
    (tmp_path / "master.yaml").write_text(yaml.safe_dump(settings))
    env = {
        **os.environ,
        "DETLITE_EXTRA_PLUGINS": "detlite.testing:FakeFrameworkPlugin",
        "DETLITE_MASTER_RETRY_S": "30",
        "PYTHONUNBUFFERED": "1",  # the "listening on" line, as soon as it is written
    }
    command = [sys.executable, "-m", "detlite", "master", "--config", "master.yaml"]
    log = tmp_path / "master.log"
    with log.open("wb") as out:
        master = subprocess.Popen(
            [*command, "--port", str(port)],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for("the master", lambda: "listening on" in log.read_text() or master.poll())
        assert master.poll() is None, log.read_text()
        with httpx.Client(base_url=url, timeout=30) as api:
            login = api.post("/api/v1/auth/login", json={"username": "determined", "password": ""})
            api.headers["Authorization"] = f"Bearer {login.json()['token']}"
            single = {"name": "single", "max_length": {"batches": 2}}
            exp_id = create(api, config(tmp_path, single))
            wait_for("the trial", lambda: exp_state(api, exp_id) in ENDED, timeout=120)
            assert exp_state(api, exp_id) == "STATE_COMPLETED", log.read_text()[-3000:]
            (trial,) = trials_of(api, exp_id)
            assert trial["resourceManager"] == "ray" and trial["devices"] == ["cpu"]
    finally:
        master.send_signal(signal.SIGINT)  # Ctrl-C: the master stops its scheduler and Ray
        try:
            master.wait(timeout=60)
        except subprocess.TimeoutExpired:
            master.kill()
            master.wait()


def any_alive(tree: dict[int, str]) -> bool:
    """Whether a process of ``tree`` (pid -> start time, from ``descendants``) still runs."""
    return any((stat := _stat(pid)) is not None and stat[1] == start for pid, start in tree.items())


def _master_command(tmp_path: Path, *args: str) -> list[str]:
    db = f"sqlite:///{tmp_path / 'master.db'}"
    storage = str(tmp_path / "checkpoints")
    command = [sys.executable, "-m", "detlite", "master", "--port", "0", "--db", db]
    return [*command, "--storage", storage, "--resource-manager", "ray", *args]


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "XDG_DATA_HOME": str(tmp_path / "data"), "PYTHONUNBUFFERED": "1"}


def test_an_unreachable_cluster_ends_the_master_within_its_timeout(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    command = _master_command(tmp_path, "--ray-address", address, "--ray-connect-timeout", "2")
    done = subprocess.run(command, env=_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert f"cannot connect to the Ray cluster at {address} within 2 s: nothing accepts " in (
        done.stderr
    )
    assert "--ray-connect-timeout" in done.stderr and "listening on" not in done.stdout


def test_sigterm_stops_a_master_whose_driver_is_stuck_connecting(tmp_path: Path) -> None:
    # A port that accepts connections and never says a word: ray.init waits on it for good.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        silent.settimeout(1)
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        command = _master_command(
            tmp_path, "--ray-address", address, "--ray-connect-timeout", "600"
        )
        log = tmp_path / "master.log"
        with log.open("wb") as out:
            master = subprocess.Popen(command, env=_env(tmp_path), stdout=out, stderr=out)
        accepted = []
        try:
            # The first connection is the master's look at the port; the next, ray.init's.
            deadline = time.monotonic() + 120
            while len(accepted) < 2:
                assert master.poll() is None, log.read_text()
                assert time.monotonic() < deadline, f"no ray.init at {address}: {log.read_text()}"
                with contextlib.suppress(TimeoutError):
                    accepted.append(silent.accept()[0])
            tree = descendants(master.pid)
            assert tree, "the master has no driver process"
            master.send_signal(signal.SIGTERM)
            assert master.wait(timeout=30) == 0, log.read_text()
        finally:
            if master.poll() is None:
                master.kill()
                master.wait()
            for conn in accepted:
                conn.close()
    text = log.read_text()
    assert f"connecting to the Ray cluster at {address} (waiting up to 600 s)" in text
    assert "detlite master stopped" in text
    wait_for("the driver process to end", lambda: not any_alive(tree), timeout=30)


def test_workers_must_be_told_an_address_they_reach(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cli = CLI(capsys, monkeypatch)
    ray = ("--resource-manager", "ray")
    code, _, err = cli("master", "--host", "0.0.0.0", *ray, "--ray-address", "127.0.0.1:1")
    assert code == 2 and "report to http://0.0.0.0:8080, which means every interface" in err
    assert "--master-url" in err
    code, _, err = cli("master", "--master-url", "http://0.0.0.0:9", *ray)
    assert code == 2 and "report to http://0.0.0.0:9" in err
    code, _, err = cli("master", *ray, "--ray-address", "10.0.0.5:6379")
    assert code == 2 and "would be told to report to http://127.0.0.1:8080, a loopback" in err
    code, _, err = cli("master", *ray, "--ray-address", "ray://10.0.0.5:10001")
    assert code == 2 and "at 10.0.0.5 would be told" in err
    code, _, err = cli("master", "--master-url", "10.0.0.4:8080")
    assert code == 2 and "is not an http(s)://host[:port] URL" in err
    code, _, err = cli("master", "--ray-connect-timeout", "5")
    assert code == 2 and "--ray-connect-timeout needs --resource-manager ray (not local)" in err


def test_settings_say_what_a_cluster_needs() -> None:
    from detlite.master.settings import S3Location, Settings

    remote = {"resource_manager": "ray", "resource_manager_options": {"address": "10.0.0.5:1"}}
    told = Settings.model_validate({**remote, "master_url": "http://10.0.0.4:8080/"})
    assert told.master_url == "http://10.0.0.4:8080" and told.worker_address_problem() is None
    assert "keep checkpoints in" in (told.cluster_storage_warning() or "")
    s3 = S3Location(bucket="b", endpoint_url=None)
    assert told.model_copy(update={"s3_locations": (s3,)}).cluster_storage_warning() is None
    shared = told.model_copy(update={"storage_roots": (Path("/mnt/shared"),)})
    assert shared.cluster_storage_warning() is None
    here = Settings(resource_manager="ray", resource_manager_options={"address": "[::1]:6379"})
    assert here.worker_address_problem() is None and here.cluster_storage_warning() is None
    assert Settings(host="0.0.0.0").worker_address_problem() is None  # the local manager


def test_a_master_whose_checkpoints_stay_on_its_disk_warns(tmp_path: Path) -> None:
    # TEST-NET addresses (RFC 5737): nothing answers there; the warning comes first.
    command = _master_command(
        tmp_path,
        "--ray-address",
        "192.0.2.1:6379",
        "--master-url",
        "http://192.0.2.2:8080",
        "--ray-connect-timeout",
        "1",
    )
    done = subprocess.run(command, env=_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, (done.stdout, done.stderr)
    storage = tmp_path / "checkpoints"
    assert f"warning: experiments without checkpoint_storage keep checkpoints in {storage}" in (
        done.stderr
    )
    assert "--allow-s3" in done.stderr and "--allow-shared-fs" in done.stderr
    assert "cannot connect to the Ray cluster at 192.0.2.1:6379 within 1 s" in done.stderr
