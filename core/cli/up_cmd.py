"""``detlite up`` and ``detlite down``: a master as a background service on this machine.

``up`` starts ``detlite master`` (SQLite under the data directory unless ``--db``) as a
detached process (its own session, so closing the terminal does not stop it), with two
files in the data directory (``$XDG_DATA_HOME/detlite``): ``master.pid`` (JSON: pid, URL,
log path) and ``master.log`` (the master's stdout and stderr, appended to). It waits for
the "listening" line and for ``GET /api/v1/health`` to answer, then prints the URL. A master
that dies while starting is reported with the end of its log, and its pid file removed.

A pid file whose process is gone (or is a zombie, or is no detlite process: the pid was
reused) is stale: ``up`` replaces it and ``down`` removes it. ``up`` refuses while a master
it started is alive. ``down`` sends SIGTERM (the master stops its workers and exits), waits
``--timeout`` seconds, then SIGKILLs the master's process group, and removes the pid file.

The server stack is never imported here: the master runs in its own process, and the data
directory comes from ``detlite.master.settings`` (which imports only pydantic).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import click

from detlite.cli._storage_options import allowed_storage_options
from detlite.errors import DetliteError

__all__ = ["down_command", "up_command"]

_LISTENING = "detlite master listening on "
_TAIL_CHARS = 3000


class MasterServiceError(DetliteError):
    """The background master could not be started or stopped."""


def _data_dir() -> Path:
    # The settings module is light, but its package's __init__ imports the server stack;
    # load it only when a command runs.
    from detlite.master.settings import data_dir

    return data_dir()


def _pid_path() -> Path:
    from detlite.master.service import pid_file

    return pid_file()


def _log_path() -> Path:
    return _data_dir() / "master.log"


@dataclass
class _Running:
    pid: int
    url: str | None
    log: str


def _alive(pid: int) -> bool:
    from detlite.master.service import master_process_alive

    return master_process_alive(pid)


def _read_pid_file(path: Path) -> _Running | None:
    try:
        data = json.loads(path.read_text())
        return _Running(int(data["pid"]), data.get("url"), str(data.get("log", "")))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        return _Running(-1, None, "")  # unreadable: treated as stale


def _running_master() -> _Running | None:
    """The master a pid file names, if alive; a stale pid file is removed."""
    path = _pid_path()
    running = _read_pid_file(path)
    if running is None:
        return None
    if running.pid > 0 and _alive(running.pid):
        return running
    path.unlink(missing_ok=True)
    click.echo(f"removed a stale pid file ({path})", err=True)
    return None


def _tail(path: Path, start: int) -> str:
    try:
        with path.open("rb") as f:
            f.seek(start)
            data = f.read()
    except OSError:
        return ""
    return data[-_TAIL_CHARS:].decode("utf-8", errors="replace").strip()


def _healthy(url: str) -> bool:
    from detlite.master.service import master_healthy

    return master_healthy(url)


def _listening_url(log: Path, start: int) -> str | None:
    for line in _tail_lines(log, start):
        if line.startswith(_LISTENING):
            return line[len(_LISTENING) :].strip()
    return None


def _tail_lines(log: Path, start: int) -> list[str]:
    try:
        with log.open("rb") as f:
            f.seek(start)
            return f.read().decode("utf-8", errors="replace").splitlines()
    except OSError:
        return []


def _stop(pid: int, timeout: float) -> bool:
    """SIGTERM, wait up to ``timeout`` s, then SIGKILL the group; True if it went quietly."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return False


def _master_takes(option: str) -> bool:
    from detlite.cli.master_cmd import master_command

    return any(p.name == option for p in master_command.params)


@click.command("up")
@click.option(
    "--port",
    default=8080,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port to listen on (0: any free port).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--db",
    "db_url",
    metavar="URL",
    help="Database URL [default: sqlite under $XDG_DATA_HOME/detlite]",
)
@click.option(
    "--slots",
    type=click.IntRange(min=1),
    help="Worker slots [default: one per GPU, else one per CPU core]",
)
@allowed_storage_options
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    help="Seconds to wait for the master to answer.",
)
def up_command(
    port: int,
    host: str,
    db_url: str | None,
    slots: int | None,
    allow_shared_fs: tuple[Path, ...],
    allow_s3: tuple[str, ...],
    timeout: float,
) -> None:
    """Start a master in the background (pid and log files in the data directory).

    Experiments may keep checkpoints in its data directory's ``checkpoints/`` with no
    option; ``--allow-shared-fs`` and ``--allow-s3`` allow more locations."""
    running = _running_master()
    if running is not None:
        raise MasterServiceError(
            f"a detlite master is already running (pid {running.pid}"
            f"{', ' + running.url if running.url else ''}); stop it first with: detlite down"
        )
    args = [sys.executable, "-m", "detlite", "master", "--host", host, "--port", str(port)]
    if db_url:
        args += ["--db", db_url]
    if slots is not None:
        if not _master_takes("slots"):
            raise click.UsageError("this detlite's master has no --slots option yet")
        args += ["--slots", str(slots)]
    for root in allow_shared_fs:
        args += ["--allow-shared-fs", str(root.expanduser().resolve())]
    for location in allow_s3:
        args += ["--allow-s3", location]

    data = _data_dir()
    data.mkdir(parents=True, exist_ok=True)
    log, pid_path = _log_path(), _pid_path()
    with log.open("ab") as out:
        start = out.tell()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    record = {"pid": proc.pid, "url": None, "log": str(log), "args": args[3:]}
    try:
        with pid_path.open("x") as f:
            json.dump(record, f)
    except FileExistsError:
        _stop(proc.pid, 5)
        raise MasterServiceError(
            f"another detlite up started a master at the same time (see {pid_path})"
        ) from None

    url = _wait_until_healthy(proc, log, start, timeout)
    pid_path.write_text(json.dumps({**record, "url": url}))
    click.echo(f"detlite master running at {url} (pid {proc.pid})")
    click.echo(f"  log: {log}")
    if url != "http://localhost:8080" and url != "http://127.0.0.1:8080":
        click.echo(f"  clients find it with: export DETLITE_MASTER={url}")
    click.echo("  stop it with: detlite down")


def _wait_until_healthy(
    proc: subprocess.Popen[bytes], log: Path, start: int, timeout: float
) -> str:
    deadline = time.monotonic() + timeout
    url: str | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            _pid_path().unlink(missing_ok=True)
            raise MasterServiceError(
                f"the master exited with code {proc.returncode} while starting; the end of "
                f"{log}:\n{_tail(log, start)}"
            )
        url = url or _listening_url(log, start)
        if url is not None and _healthy(url):
            return url
        time.sleep(0.1)
    _stop(proc.pid, 5)
    _pid_path().unlink(missing_ok=True)
    raise MasterServiceError(
        f"the master did not answer within {timeout:g} s and was stopped; the end of "
        f"{log}:\n{_tail(log, start)}"
    )


@click.command("down")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="Seconds to wait after SIGTERM before SIGKILL.",
)
def down_command(timeout: float) -> None:
    """Stop the master that detlite up started."""
    running = _running_master()
    if running is None:
        click.echo("no detlite master is running")
        return
    quiet = _stop(running.pid, timeout)
    _pid_path().unlink(missing_ok=True)
    how = "stopped" if quiet else f"killed (it did not stop within {timeout:g} s)"
    click.echo(f"detlite master (pid {running.pid}) {how}")
