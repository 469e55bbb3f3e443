"""``detlite master`` choosing Ray: from a config file (``resource_manager: {type: ray,
address: ...}``) or from ``--resource-manager ray --ray-address``, and what it refuses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from detlite.launch import free_port
from tests.e2e.test_search_local import ENDED, config, create, exp_state, trials_of, wait_for
from tests.master.test_cli_models import CLI
from tests.ray.conftest import RayHead


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
