"""``detlite up`` and ``detlite down`` as real processes, with the data directory in tmp_path."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from detlite.launch import free_port, process_running
from tests.master.test_cli_master import EXE, clean_env


def detlite(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([EXE, *args], capture_output=True, text=True, timeout=120, env=env)


def test_up_down(tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    data = tmp_path / "data" / "detlite"
    pid_file, log_file = data / "master.pid", data / "master.log"

    # A stale pid file (its process has exited) does not block up.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    data.mkdir(parents=True)
    pid_file.write_text(json.dumps({"pid": dead.pid, "url": None, "log": ""}))

    port = free_port()
    up = detlite("up", "--port", str(port), env=env)
    assert up.returncode == 0, (up.stdout, up.stderr)
    url = f"http://127.0.0.1:{port}"
    assert f"detlite master running at {url}" in up.stdout
    assert "stale pid file" in up.stderr
    record = json.loads(pid_file.read_text())
    pid = record["pid"]
    assert record["url"] == url and process_running(pid)
    try:
        health = httpx.get(url + "/api/v1/health", timeout=10).json()
        assert health["status"] == "ok" and health["database"] == "sqlite"
        assert (data / "master.db").is_file()  # SQLite under the data directory by default
        assert f"detlite master listening on {url}" in log_file.read_text()

        # A second up is refused while the first runs; nothing changes.
        again = detlite("up", "--port", str(free_port()), env=env)
        assert again.returncode != 0
        assert f"already running (pid {pid}, {url})" in again.stderr
        assert json.loads(pid_file.read_text())["pid"] == pid

        down = detlite("down", env=env)
        assert down.returncode == 0, down.stderr
        assert down.stdout.strip() == f"detlite master (pid {pid}) stopped"
        assert not process_running(pid) and not pid_file.exists()
        assert detlite("down", env=env).stdout.strip() == "no detlite master is running"
    finally:
        if process_running(pid):
            os.kill(pid, 9)


def test_up_reports_a_master_that_cannot_start(tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        up = detlite("up", "--port", str(port), env=env)
    assert up.returncode != 0
    assert "the master exited with code" in up.stderr, up.stderr
    assert "master.log" in up.stderr
    assert not (tmp_path / "data" / "detlite" / "master.pid").exists()
