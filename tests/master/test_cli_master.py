"""``detlite master`` as a real process, and ``detlite user`` talking to it over HTTP."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

EXE = shutil.which("detlite", path=str(Path(sys.executable).parent)) or "detlite"


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The test's environment without any detlite or XDG setting of the machine."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("DETLITE_", "DET_MASTER", "XDG_"))
    }
    env.update(
        XDG_CONFIG_HOME=str(tmp_path / "config"),
        XDG_DATA_HOME=str(tmp_path / "data"),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def detlite(
    *args: str, env: dict[str, str], stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [EXE, *args], input=stdin, capture_output=True, text=True, timeout=120, env=env
    )


@dataclass
class MasterProcess:
    proc: subprocess.Popen[bytes]
    url: str
    stdout: Path
    stderr: Path


def start_master(tmp_path: Path, *args: str) -> MasterProcess:
    """``detlite master ARGS --port 0``; waits for the line that gives its URL."""
    out, err = tmp_path / "master.out", tmp_path / "master.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(
            [EXE, "master", *args, "--port", "0"],
            stdout=stdout,
            stderr=stderr,
            env=clean_env(tmp_path),
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        for line in out.read_text().splitlines():
            if line.startswith("detlite master listening on "):
                return MasterProcess(proc, line.rsplit(" ", 1)[1], out, err)
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    raise AssertionError(f"the master did not start:\n{out.read_text()}\n{err.read_text()}")


@pytest.fixture
def master_process(database_url: str, tmp_path: Path) -> Iterator[MasterProcess]:
    running = start_master(
        tmp_path, "--db", database_url, "--storage", str(tmp_path / "checkpoints")
    )
    try:
        yield running
    finally:
        if running.proc.poll() is None:
            running.proc.kill()
            running.proc.wait()


def test_master_process_with_user_commands_then_ctrl_c(
    master_process: MasterProcess, tmp_path: Path
) -> None:
    env = clean_env(tmp_path, DETLITE_MASTER=master_process.url)

    login = detlite("user", "login", env=env)
    assert login.returncode == 0, login.stderr
    assert login.stdout.strip() == f"logged in as determined on {master_process.url}"
    cache = tmp_path / "config" / "detlite" / "auth.json"
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    assert json.loads(cache.read_text())["active_user"] == "determined"

    assert detlite("user", "login", "admin", env=env).returncode == 0
    created = detlite("user", "create", "alice", "--password-stdin", env=env, stdin="alice-pw\n")
    assert created.returncode == 0, created.stderr
    as_alice = {**env, "DETLITE_PASSWORD": "alice-pw"}
    assert detlite("user", "login", "alice", env=as_alice).returncode == 0
    whoami = detlite("user", "whoami", env=env)
    assert whoami.stdout.startswith("alice on "), whoami.stderr
    listed = detlite("user", "list", env=env).stdout.splitlines()
    assert listed[0].split() == ["USERNAME", "ADMIN", "ACTIVE"]
    assert [row.split()[0] for row in listed[1:]] == ["admin", "determined", "alice"]

    # A non-admin cannot create users: one line, exit code 1, no traceback.
    denied = detlite("user", "create", "mallory", "--password-stdin", env=env, stdin="x\n")
    assert denied.returncode == 1
    assert denied.stderr.strip() == "error: user 'alice' is not an admin; only admins may do this"

    changed = detlite("user", "change-password", "--password-stdin", env=env, stdin="new-pw\n")
    assert changed.returncode == 0, changed.stderr
    assert "alice-pw" not in changed.stdout + changed.stderr
    assert detlite("user", "login", "alice", env=as_alice).returncode == 1
    assert (
        detlite("user", "login", "alice", env={**env, "DETLITE_PASSWORD": "new-pw"}).returncode == 0
    )
    assert detlite("user", "logout", env=env).stdout.strip() == "logged out alice"

    master_process.proc.send_signal(signal.SIGINT)
    assert master_process.proc.wait(timeout=30) == 0
    out, err = master_process.stdout.read_text(), master_process.stderr.read_text()
    assert out.splitlines()[-1] == "detlite master stopped"
    assert "Application shutdown complete" in err
    assert "Traceback" not in out + err
    for secret in ("alice-pw", "new-pw"):
        assert secret not in out + err


def test_user_commands_without_a_master_say_so(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = clean_env(tmp_path, DETLITE_MASTER=f"127.0.0.1:{port}")
    result = detlite("user", "login", env=env)
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: could not reach the master at http://127.0.0.1:{port}")


def test_a_busy_port_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = detlite(
            "master",
            "--db",
            f"sqlite:///{tmp_path / 'm.db'}",
            "--port",
            str(port),
            env=clean_env(tmp_path),
        )
    assert result.returncode == 1
    assert "error: the master could not start" in result.stderr
    assert "address already in use" in result.stderr.lower()


def test_a_bad_database_url_is_a_clear_error(tmp_path: Path) -> None:
    result = detlite("master", "--db", "nonsense", env=clean_env(tmp_path))
    assert result.returncode == 1
    assert result.stderr.strip().startswith("error: invalid database URL 'nonsense'")


@pytest.mark.skipif(importlib.util.find_spec("psycopg") is None, reason="psycopg not installed")
def test_an_unreachable_postgres_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"postgresql://someone:hidden@127.0.0.1:{port}/nothing"
    result = detlite("master", "--db", url, env=clean_env(tmp_path))
    assert result.returncode == 1
    assert result.stderr.startswith(
        "error: cannot open the database postgresql+psycopg://someone:***@"
    )
    assert "hidden" not in result.stderr


def test_a_second_master_on_one_sqlite_database_is_refused(tmp_path: Path) -> None:
    from detlite.master.dblock import lock_database, lock_path, record_holder, release

    url = f"sqlite:///{tmp_path / 'master.db'}"
    held = lock_database(url)
    record_holder(held, "http://127.0.0.1:9", "embedded")
    try:
        result = detlite("master", "--db", url, "--port", "0", env=clean_env(tmp_path))
    finally:
        release(held)
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: process {os.getpid()} (master at http://127.0.0.1:9)")
    assert "already runs a master on the database" in result.stderr
    assert not (tmp_path / "master.db").exists()  # refused before touching the database
    # Released (as at the holder's exit, even a SIGKILL): the lock is free again.
    again = lock_database(url)
    release(again)
    assert lock_path(url) == tmp_path / "master.db.lock"


def test_the_master_config_is_read_like_every_config(tmp_path: Path) -> None:
    """The master's own YAML file: 1e1 is a number (YAML 1.2), a repeated key an error."""
    import click

    from detlite.cli.master_cmd import _read_config

    path = tmp_path / "master.yaml"
    path.write_text("stop_grace: 1e1\nslots: 2\n")
    assert _read_config(path) == {"stop_grace": 10.0, "slots": 2}
    path.write_text("slots: 2\nslots: 3\n")
    with pytest.raises(click.UsageError, match="twice"):
        _read_config(path)
