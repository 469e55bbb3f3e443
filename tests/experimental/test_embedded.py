"""The embedded master: started once per process on the user's local database, found by a
later Determined(), never a second master on the same database (another process is refused
while the lock is held), stopped cleanly; a running `detlite up` master is used instead."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from detlite.experimental import Determined
from detlite.experimental._embedded import (
    allow_storage,
    current_embedded_master,
    local_master,
    lock_path,
    stop_embedded_master,
)
from tests.master.conftest import live_master, make_settings

_CHILD = (
    "from detlite.experimental._embedded import local_master, MasterBusy\n"
    "try:\n"
    "    print('URL', local_master())\n"
    "except MasterBusy as exc:\n"
    "    print('BUSY', exc)\n"
)


def _child() -> str:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD], capture_output=True, text=True, timeout=120, env=os.environ
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_start_reuse_lock_and_stop(_isolated_home: Path) -> None:
    url = local_master()
    assert url.startswith("http://127.0.0.1:")
    assert local_master() == url  # once per process
    assert os.environ["DETLITE_MASTER"] == url
    assert httpx.get(url + "/api/v1/health").status_code == 200
    # The user's local database, under the data directory.
    assert (_isolated_home / "master.db").is_file()
    lock = lock_path(f"sqlite:///{_isolated_home / 'master.db'}")
    assert lock is not None and lock.name == "master.db.lock"
    assert json.loads(lock.read_text()) == {"pid": os.getpid(), "url": url, "kind": "embedded"}
    # A later Determined() in this process finds it, and logs in as the default user.
    with Determined() as d:
        assert d.master == url and d.user == "determined"
        assert d.get_experiments() == []

    # Another process on the same database is refused while this one serves it.
    out = _child()
    assert out.startswith("BUSY") and f"process {os.getpid()}" in out and "detlite up" in out

    stop_embedded_master()
    assert current_embedded_master() is None
    assert "DETLITE_MASTER" not in os.environ
    with pytest.raises(httpx.TransportError):
        httpx.get(url + "/api/v1/health", timeout=2)
    # The lock went with it: another process starts its own (and stops it at exit).
    out = _child()
    assert out.startswith("URL http://127.0.0.1:"), out
    assert lock.read_text() == ""


def test_the_user_allows_the_storage_their_config_names(
    _isolated_home: Path, tmp_path: Path
) -> None:
    """create(local=True) calls allow_storage with the experiment's checkpoint_storage: the
    embedded master runs in the user's own process, so the user is its operator. Only the
    location named is added, and nothing over HTTP can add one."""
    from detlite.testing.fake import linear_config

    mine, other = tmp_path / "mine", tmp_path / "other"
    mine.mkdir()
    other.mkdir()
    url = local_master()
    try:
        token = httpx.post(
            url + "/api/v1/auth/login", json={"username": "determined", "password": ""}
        ).json()["token"]

        def create(host_path: Path) -> int:
            config = {
                **linear_config(),
                "checkpoint_storage": {"type": "shared_fs", "host_path": str(host_path)},
            }
            return httpx.post(
                url + "/api/v1/experiments",
                json={"config": config, "activate": False},
                headers={"Authorization": f"Bearer {token}"},
            ).status_code

        assert create(mine) == 400  # not allowed until the user names it
        allow_storage({"type": "shared_fs", "host_path": str(mine)})
        assert create(mine) == 200
        assert create(other) == 400
    finally:
        stop_embedded_master()


def test_detlite_up_master_is_used(_isolated_home: Path, tmp_path: Path) -> None:
    settings = make_settings(f"sqlite:///{tmp_path / 'service.db'}", tmp_path)
    # A live process that is a detlite one (a pid reused by something else would not count).
    stand_in = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "detlite"])
    try:
        with live_master(settings) as service:
            _isolated_home.mkdir(parents=True, exist_ok=True)
            pid_file = _isolated_home / "master.pid"
            info = {"pid": stand_in.pid, "url": service.url, "log": ""}
            pid_file.write_text(json.dumps(info))
            assert local_master() == service.url
            assert current_embedded_master() is None  # nothing started here
    finally:
        stand_in.kill()
        stand_in.wait()
    # A pid file whose process is gone is ignored: an embedded master starts.
    pid_file.write_text(json.dumps({"pid": 2**22 + 12345, "url": service.url, "log": ""}))
    url = local_master()
    assert url != service.url and current_embedded_master() is not None
