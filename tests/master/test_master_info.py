"""``GET /api/v1/master``: the master's version and its resource manager's state, and the
scheduler pausing while that manager is disconnected.

The disconnected manager is the local one with a switch (a throwaway subclass): while it is
off it reports ``disconnected`` and counts no slots, as a manager that lost its cluster
would. A trial created meanwhile waits -- it is neither launched nor failed for want of
slots -- and runs once the switch is on again.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from detlite import __version__
from detlite.interfaces import ResourceManagerStatus
from detlite.master import Settings, create_app
from detlite.resources.local import LocalResourceManager
from tests.e2e.test_search_local import config, create, exp_state, trials_of, wait_for
from tests.master.conftest import LiveMaster, assert_error, serve_in_thread


class SwitchedManager(LocalResourceManager):
    """The local manager, with its cluster switched off (``away``) or on."""

    away = False

    def status(self) -> ResourceManagerStatus:
        if self.away:
            return ResourceManagerStatus("disconnected", "the test switched the cluster off")
        return ResourceManagerStatus()

    def total_slots(self) -> int:
        return 0 if self.away else super().total_slots()


@pytest.fixture
def switched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LiveMaster]:
    with switched_master(tmp_path, monkeypatch) as live:
        yield live


@contextmanager
def switched_master(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LiveMaster]:
    """A live master whose resource manager is a ``SwitchedManager`` of one slot."""
    monkeypatch.setenv("DETLITE_EXTRA_PLUGINS", "detlite.testing:FakeFrameworkPlugin")
    monkeypatch.setenv("DETLITE_MASTER_RETRY_S", "30")
    settings = Settings(
        db_url=f"sqlite:///{tmp_path / 'master.db'}",
        storage_path=tmp_path / "checkpoints",
        storage_roots=(tmp_path,),
        port=0,
        scheduler_tick=0.1,
        stop_grace=5,
    )
    with SwitchedManager(slots=1, work_dir=tmp_path / "groups") as rm:
        app = create_app(settings, resource_manager=rm)
        with serve_in_thread(app) as url:
            yield LiveMaster(app=app, settings=settings, url=url)


def test_master_info_needs_a_token_and_says_the_scheduler_is_off(sqlite_master: LiveMaster) -> None:
    with sqlite_master.client() as anonymous:
        assert_error(anonymous.get("/api/v1/master"), 401)
    with sqlite_master.client(sqlite_master.login("determined")) as api:
        body = api.get("/api/v1/master").json()
    assert body["version"] == __version__
    assert body["resourceManager"] == {
        "type": "local",
        "status": "off",
        "message": "this master schedules no trials (its scheduler is off)",
        "slots": 0,
    }


def test_a_disconnected_manager_pauses_launching_without_failing_trials(
    switched: LiveMaster, tmp_path: Path
) -> None:
    rm = switched.app.state.scheduler.rm
    with switched.client(switched.login("determined")) as api:
        info = api.get("/api/v1/master").json()
        assert info["resourceManager"] == {
            "type": "local",
            "status": "ok",
            "message": "",
            "slots": 1,
        }
        assert info["masterUrl"] == switched.url

        rm.away = True
        info = api.get("/api/v1/master").json()["resourceManager"]
        assert info["status"] == "disconnected"
        assert info["message"] == "the test switched the cluster off" and info["slots"] == 0
        exp_id = create(api, config(tmp_path, {"name": "single", "max_length": {"batches": 2}}))
        (trial,) = wait_for("the trial", lambda: trials_of(api, exp_id))
        time.sleep(1)  # ten scheduler ticks: none may launch it, nor end it for want of slots
        (trial,) = trials_of(api, exp_id)
        assert trial["state"] == "STATE_ACTIVE" and exp_state(api, exp_id) == "STATE_ACTIVE"
        assert trial["node"] is None and trial["restarts"] == 0

        rm.away = False
        wait_for("the experiment", lambda: exp_state(api, exp_id) == "STATE_COMPLETED", 120)
        assert api.get("/api/v1/master").json()["resourceManager"]["status"] == "ok"
