"""Holes a second adversarial pass found, as a plain user against a live master.

- A checkpoint file name with a backslash passed the report's check (which refused ``..``,
  empty parts and NUL only) but not the shared_fs resolver's: serving that file answered
  500, and ending or deleting the experiment failed with a 500 in its checkpoint GC. Now
  the report is refused (400; a backslash is a separator on Windows, so a client there
  would have climbed out on download), and a row an older master stored is a 503 that
  names it, with nothing deleted.
- FastAPI parses and validates a JSON body inside the event loop; the value rules walk
  every value in Python, so one report of millions of values (within the 16 MiB cap) kept
  the loop, and with it health and login, busy for seconds. Bodies are now parsed and
  validated on a worker thread (``detlite.master._bodies``); these tests check where the
  work runs, not how long it takes (``bench/loop_block.py`` measures that).

Filesystem cases use decoy directories under tmp_path only.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from pydantic import field_validator

from detlite.api.enums import ExperimentState
from detlite.master._bodies import BodyOffLoopRoute
from detlite.master.errors import install_error_handlers
from detlite.master.orm import Checkpoint
from detlite.master.routers import ROUTERS, ui, ui_api
from detlite.master.schemas._values import RequestModel
from tests.master.conftest import LiveMaster, assert_error, serve_in_thread
from tests.master.factories import experiment_config, make_checkpoint, make_experiment, make_trial

SECRET = b"the decoy's bytes: never served, never deleted"


def _record(data: bytes) -> dict[str, Any]:
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


# -- backslashes in checkpoint file names -----------------------------------------------------


def test_a_backslash_in_a_reported_file_name_is_refused(master: LiveMaster) -> None:
    with master.db() as db:
        trial_id = make_trial(db, make_experiment(db, owner="determined")).id
    names = ["a\\b", "..\\..\\decoy\\secret.txt", "code\\model_def.py"]
    with master.client(master.login("determined")) as client:
        for name in names:
            report = {
                "uuid": "7f0c1d9e-2a51-4e8f-9c61-0d5b7a9e2f10",
                "trialId": trial_id,
                "batchNumber": 1,
                "state": "STATE_COMPLETED",
                "files": {name: _record(b"x")},
            }
            assert_error(client.post("/api/v1/checkpoints", json=report), 400, "refusing")
    with master.db() as db:
        assert db.scalar(sa.select(sa.func.count()).select_from(Checkpoint)) == 0


@pytest.fixture
def decoy(tmp_path: Path) -> Path:
    place = tmp_path / "decoy"
    place.mkdir()
    (place / "secret.txt").write_bytes(SECRET)
    return place


def test_a_stored_backslash_name_is_a_503_never_a_500(
    master: LiveMaster, tmp_path: Path, decoy: Path
) -> None:
    """A row an older master accepted: serving, GC and deletion answer, and touch nothing."""
    storage = tmp_path / "ckpts"
    storage.mkdir()
    files = {"metadata.json": b"{}", "..\\decoy\\secret.txt": SECRET}
    with master.db() as db:
        exp = make_experiment(db, config=experiment_config(storage), state=ExperimentState.PAUSED)
        trial = make_trial(db, exp, state=ExperimentState.PAUSED)
        uuid = make_checkpoint(db, trial, 10, files=files, write_to=storage).uuid
        exp_id = exp.id
    with master.client(master.login("determined")) as client:
        answer = client.get(f"/api/v1/checkpoints/{uuid}/files/..%5Cdecoy%5Csecret.txt")
        assert answer.status_code == 503, answer.text
        assert SECRET not in answer.content
        # Ending the experiment runs its GC: the state changes, the bad row is logged.
        assert client.post(f"/api/v1/experiments/{exp_id}/kill").status_code == 200
        assert_error(client.delete(f"/api/v1/experiments/{exp_id}"), 503, "cannot be addressed")
    assert (decoy / "secret.txt").read_bytes() == SECRET
    assert (storage / uuid / "metadata.json").read_bytes() == b"{}"
    with master.db() as db:
        row = db.get(Checkpoint, uuid)
        assert row is not None and "metadata.json" in (row.files or {})


# -- bodies are validated off the event loop --------------------------------------------------


#: The names of the threads that validated a ``_Probe``.
_VALIDATED_IN: list[str] = []


class _Probe(RequestModel):
    """A body that records which thread validated it."""

    values: list[int]

    @field_validator("values")
    @classmethod
    def _where(cls, value: list[int]) -> list[int]:
        _VALIDATED_IN.append(threading.current_thread().name)
        return value


@pytest.fixture
def probe_app() -> Iterator[str]:
    app = FastAPI()
    install_error_handlers(app)

    router = APIRouter(route_class=BodyOffLoopRoute)

    @router.post("/probe")
    def probe(body: _Probe) -> dict[str, int]:
        return {"n": len(body.values)}

    app.include_router(router)
    with serve_in_thread(app) as url:
        yield url


def test_a_body_is_parsed_and_validated_off_the_event_loop(probe_app: str) -> None:
    _VALIDATED_IN.clear()
    with httpx.Client(base_url=probe_app, timeout=60) as client:
        answer = client.post("/probe", json={"values": list(range(1000))})
        assert answer.status_code == 200 and answer.json() == {"n": 1000}
        # The same errors as FastAPI's own: the master's 400, naming the field.
        bad = client.post("/probe", json={"values": ["x"]})
        assert_error(bad, 400, "values")
        broken = client.post(
            "/probe", content=b'{"values": [1,', headers={"Content-Type": "application/json"}
        )
        assert_error(broken, 400, "JSON decode error")
    # serve_in_thread runs the event loop in the thread named "detlite-master".
    assert _VALIDATED_IN and "detlite-master" not in _VALIDATED_IN


def test_every_route_of_the_master_validates_bodies_off_the_loop() -> None:
    routers = (*ROUTERS, ui_api.router, ui.router)  # what create_app includes
    with_body = [
        route
        for router in routers
        for route in router.routes
        if isinstance(route, APIRoute) and route.body_field is not None
    ]
    assert len(with_body) > 10
    assert [r.path for r in with_body if not isinstance(r, BodyOffLoopRoute)] == []


def test_a_report_of_a_million_values_is_validated_and_stored(master: LiveMaster) -> None:
    """The master still applies its value rules to a large body, and stores it once."""
    with master.db() as db:
        trial_id = make_trial(db, make_experiment(db, owner="determined")).id
    values = [0] * 1_000_000
    with master.client(master.login("determined")) as client:
        url = f"/api/v1/trials/{trial_id}/training_metrics"
        bad = {"trainingMetrics": {"stepsCompleted": 1, "metrics": {"x": [*values, 2**60]}}}
        assert_error(client.post(url, json=bad), 400, "2**53")
        good = {"trainingMetrics": {"stepsCompleted": 1, "metrics": {"x": values}}}
        assert client.post(url, json=good).status_code == 200
