"""Accounts and ids (issue 13, "smaller defects"), on SQLite and PostgreSQL.

- Login does the same work whoever the user is: every login, right or wrong, of a user with
  a password, with the empty password, unknown, inactive, or still holding the legacy NULL
  marker, runs exactly one scrypt derivation with today's parameters. Counted through a spy
  that wraps the module's own ``_scrypt`` and calls through (the real derivation runs), not
  by timing; ``bench/login_timing.py`` measures the times.
- Registering a checkpoint as a model version needs its experiment's owner or an admin (403
  saying so, nothing written), and deleting an experiment whose checkpoints are registered
  answers 409 naming every model version that holds one and what to do; deleting those
  versions lets it go. Garbage collection racing a registration keeps the checkpoint.
- Ids are never reused: after the newest experiment, trial, model and model version are
  deleted, new ones get higher ids (SQLite as PostgreSQL).
- Identical metric reports sent at the same time from many threads all answer 200 and
  leave one row per report.

The migration that makes SQLite's ids AUTOINCREMENT is tested with the other migrations, in
``tests/master/test_migrations.py``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from detlite.api.enums import CheckpointState, ExperimentState
from detlite.master import gc, security
from detlite.master.orm import (
    Checkpoint,
    Experiment,
    Model,
    ModelVersion,
    TrainingMetrics,
    Trial,
    User,
    ValidationMetrics,
)
from detlite.master.queries import models as model_queries
from detlite.testing.fake import linear_config
from tests.master.conftest import LiveMaster, assert_error
from tests.master.factories import (
    experiment_config,
    make_checkpoint,
    make_experiment,
    make_trial,
    user_id,
)

# -- login -------------------------------------------------------------------------------------

TODAYS_PARAMETERS = (security.SCRYPT_N, security.SCRYPT_R, security.SCRYPT_P)


class DerivationSpy:
    """Wraps ``security._scrypt``: records each derivation's (n, r, p) and runs it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[int, int, int]] = []
        self._real: Callable[..., bytes] = security._scrypt
        monkeypatch.setattr(security, "_scrypt", self)

    def __call__(self, password: str, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
        self.calls.append((n, r, p))
        return self._real(password, salt, n, r, p, dklen)

    def during(self, action: Callable[[], Any]) -> list[tuple[int, int, int]]:
        self.calls.clear()
        action()
        return list(self.calls)


def post_login(master: LiveMaster, username: str, password: str, path: str) -> int:
    with master.client() as client:
        response = client.post(path, json={"username": username, "password": password})
    return response.status_code


def stored_hash(master: LiveMaster, username: str) -> str | None:
    with master.db() as db:
        return db.scalar(sa.select(User.password_hash).where(User.username == username))


def test_every_login_runs_one_derivation_whoever_the_user_is(
    master: LiveMaster, monkeypatch: pytest.MonkeyPatch
) -> None:
    with master.client(master.login("admin")) as admin:
        for username, password in (("with-pw", "s3cret"), ("blank", ""), ("gone", "pw")):
            body = {"user": {"username": username}, "password": password}
            assert admin.post("/api/v1/users", json=body).status_code == 200
        assert admin.patch("/api/v1/users/gone", json={"active": False}).status_code == 200
    # A user made with the empty password stores a real scrypt hash, like any other.
    blank = stored_hash(master, "blank")
    assert blank is not None and blank.startswith(f"scrypt${security.SCRYPT_N}$")
    assert security.verify_password("", blank)

    spy = DerivationSpy(monkeypatch)
    cases = [
        ("with-pw", "s3cret", 200),
        ("with-pw", "wrong", 401),
        ("blank", "", 200),
        ("blank", "not-empty", 401),
        ("nobody", "", 401),
        ("nobody", "s3cret", 401),
        ("gone", "pw", 403),
        ("gone", "wrong", 401),
    ]
    for path in ("/api/v1/auth/login", "/login"):
        for username, password, status in cases:
            spy.calls.clear()
            assert post_login(master, username, password, path) == status
            assert spy.calls == [TODAYS_PARAMETERS], (path, username, password, spy.calls)


def test_the_legacy_empty_password_marker_costs_the_same_and_is_replaced(
    master: LiveMaster, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The initial migration made ``determined`` with NULL, the old empty-password marker.
    assert stored_hash(master, "determined") is None
    spy = DerivationSpy(monkeypatch)
    path = "/api/v1/auth/login"
    assert spy.during(lambda: post_login(master, "determined", "x", path)) == [TODAYS_PARAMETERS]
    assert stored_hash(master, "determined") is None  # a failed login changes nothing
    # The first successful login verifies once and stores a real hash in the marker's place.
    first = spy.during(lambda: post_login(master, "determined", "", path))
    assert first == [TODAYS_PARAMETERS, TODAYS_PARAMETERS]
    upgraded = stored_hash(master, "determined")
    assert upgraded is not None and upgraded.startswith("scrypt$")
    assert security.verify_password("", upgraded) and not security.verify_password("x", upgraded)
    # From then on it is a user like the others.
    assert spy.during(lambda: post_login(master, "determined", "", path)) == [TODAYS_PARAMETERS]
    assert spy.during(lambda: post_login(master, "determined", "x", path)) == [TODAYS_PARAMETERS]


# -- registering checkpoints -------------------------------------------------------------------


def ok(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    return response.json()


def new_user(master: LiveMaster, username: str) -> str:
    with master.client(master.login("admin")) as admin:
        body = {"user": {"username": username}, "password": ""}
        assert admin.post("/api/v1/users", json=body).status_code == 200
    return master.login(username)


def ended_experiment_with_checkpoint(master: LiveMaster, owner: str) -> tuple[int, str]:
    """A COMPLETED experiment of ``owner`` with one COMPLETED checkpoint (no files)."""
    with master.db() as db:
        experiment = make_experiment(
            db,
            owner,
            state=ExperimentState.COMPLETED,
            storage_path=master.settings.storage_path,
        )
        checkpoint = make_checkpoint(db, make_trial(db, experiment), 10)
        return experiment.id, checkpoint.uuid


def test_only_the_experiments_owner_or_an_admin_registers_its_checkpoints(
    master: LiveMaster,
) -> None:
    alice, mallory = new_user(master, "alice"), new_user(master, "mallory")
    experiment_id, uuid = ended_experiment_with_checkpoint(master, "alice")
    register = {"checkpointUuid": uuid}
    with master.client(mallory) as client:
        ok(client.post("/api/v1/models/mallorys", json={}))
        error = assert_error(client.post("/api/v1/models/mallorys/versions", json=register), 403)
        message = error["message"]
        assert f"register checkpoint {uuid}" in message, message
        assert f"experiment {experiment_id}" in message and "only its owner or an admin" in message
        assert ok(client.get("/api/v1/models/mallorys"))["model"]["numVersions"] == 0
    with master.db() as db:
        assert db.scalar(sa.select(sa.func.count()).select_from(ModelVersion)) == 0

    # Its owner and an admin may, each into a model of their own.
    with master.client(alice) as client:
        ok(client.post("/api/v1/models/alices", json={}))
        ok(client.post("/api/v1/models/alices/versions", json=register))
    with master.client(master.login("admin")) as admin:
        ok(admin.post("/api/v1/models/admins", json={}))
        ok(admin.post("/api/v1/models/admins/versions", json=register))
        ok(admin.post("/api/v1/models/admins/versions", json=register))

    # Registered checkpoints keep their experiment: the 409 names every holder and the way out.
    with master.client(alice) as client:
        error = assert_error(client.delete(f"/api/v1/experiments/{experiment_id}"), 409)
        message = error["message"]
        for model, version in (("admins", 1), ("admins", 2), ("alices", 1)):
            assert f"model {model!r} version {version} holds checkpoint {uuid}" in message
        assert "delete those versions first" in message
        assert "the model's owner or an admin" in message
        # Alice cannot delete the admin's versions; she deletes hers, the admin his.
        assert_error(client.delete("/api/v1/models/admins/versions/1"), 403)
        ok(client.delete("/api/v1/models/alices/versions/1"))
        error = assert_error(client.delete(f"/api/v1/experiments/{experiment_id}"), 409)
        assert "alices" not in error["message"] and "'admins' version 2" in error["message"]
    with master.client(master.login("admin")) as admin:
        ok(admin.delete("/api/v1/models/admins"))  # a model's deletion takes its versions
    with master.client(alice) as client:
        ok(client.delete(f"/api/v1/experiments/{experiment_id}"))
        assert_error(client.get(f"/api/v1/experiments/{experiment_id}"), 404)


def _wait_until_blocked(master: LiveMaster, thread: threading.Thread) -> None:
    """Until ``thread`` waits on a lock the registration holds (PostgreSQL: seen in
    pg_stat_activity; SQLite shows no such thing, so a moment's pause stands in for it,
    and the outcome asserted below is the same whichever goes first there)."""
    if master.state.engine.dialect.name != "postgresql":
        time.sleep(0.3)
        return
    query = sa.text(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and thread.is_alive():
        with master.state.engine.connect() as conn:
            if conn.execute(query).scalar_one():
                return
        time.sleep(0.02)
    raise AssertionError("garbage collection never waited for the registration's lock")


def test_garbage_collection_keeps_a_checkpoint_registered_while_it_runs(
    master: LiveMaster,
) -> None:
    storage = {
        "type": "shared_fs",
        "host_path": str(master.settings.storage_path),
        "save_experiment_best": 0,
        "save_trial_best": 0,
        "save_trial_latest": 0,
    }
    with master.db() as db:
        config = experiment_config(checkpoint_storage=storage)
        experiment = make_experiment(db, config=config, state=ExperimentState.COMPLETED)
        uuid = make_checkpoint(db, make_trial(db, experiment), 10).uuid
        model = Model(name="racing", owner_id=user_id(db, "determined"))
        db.add(model)
        db.commit()
        experiment_id, model_id = experiment.id, model.id

    registering = master.db()
    try:
        owner = registering.scalars(sa.select(User).where(User.username == "determined")).one()
        held = registering.get(Model, model_id)
        assert held is not None
        # Registered, not yet committed: the checkpoint's row is locked until the commit.
        model_queries.register_version(registering, owner, held, uuid)
        deleted: list[list[str]] = []

        def collect() -> None:
            with master.db() as db:
                locations = master.settings.storage_locations
                deleted.append(gc.collect_experiment(db, experiment_id, locations=locations))

        collector = threading.Thread(target=collect)
        collector.start()
        _wait_until_blocked(master, collector)
        registering.commit()
        collector.join(timeout=60)
        assert not collector.is_alive()
    finally:
        registering.close()
    assert deleted == [[]]
    with master.db() as db:
        checkpoint = db.get(Checkpoint, uuid)
        assert checkpoint is not None and checkpoint.state is CheckpointState.COMPLETED
        assert db.scalar(sa.select(ModelVersion.checkpoint_uuid)) == uuid


# -- ids ---------------------------------------------------------------------------------------


def test_ids_of_deleted_rows_are_never_given_again(master: LiveMaster) -> None:
    token = master.login("determined")
    with master.db() as db:
        older = make_experiment(db, state=ExperimentState.COMPLETED)
        newest = make_experiment(db, state=ExperimentState.COMPLETED)
        kept_trial = make_trial(db, older)
        newest_trial = make_trial(db, older)
        older_id, newest_id = older.id, newest.id
        kept_trial_id, newest_trial_id = kept_trial.id, newest_trial.id
        uuid = make_checkpoint(db, kept_trial, 10).uuid
    with master.client(token) as client:
        ok(client.delete(f"/api/v1/experiments/{newest_id}"))
        created = ok(client.post("/api/v1/experiments", json={"config": linear_config()}))
        assert created["experiment"]["id"] > newest_id > older_id

        first = ok(client.post("/api/v1/models/first", json={}))["model"]["id"]
        ok(client.delete("/api/v1/models/first"))
        second = ok(client.post("/api/v1/models/second", json={}))["model"]["id"]
        assert second > first

        register = {"checkpointUuid": uuid}
        version_id = ok(client.post("/api/v1/models/second/versions", json=register))
        ok(client.delete("/api/v1/models/second/versions/1"))
        again = ok(client.post("/api/v1/models/second/versions", json=register))
        assert again["modelVersion"]["version"] == 1  # the number is max + 1 (documented)
        assert again["modelVersion"]["id"] > version_id["modelVersion"]["id"]

    # Trials have no delete route: remove the newest one as a cascade would.
    with master.db() as db:
        db.execute(sa.delete(Trial).where(Trial.id == newest_trial_id))
        db.commit()
        experiment = db.get(Experiment, older_id)
        assert experiment is not None
        assert make_trial(db, experiment).id > newest_trial_id > kept_trial_id


# -- concurrent identical metric reports -------------------------------------------------------

THREADS = 8
ROUNDS = 12


def test_identical_reports_sent_at_once_are_all_accepted_once(master: LiveMaster) -> None:
    token = master.login("determined")
    with master.db() as db:
        trial_id = make_trial(db, make_experiment(db)).id
    base = f"/api/v1/trials/{trial_id}"
    statuses: list[tuple[int, str]] = []
    start = threading.Barrier(THREADS)

    def report(rank: int) -> None:
        with master.client(token) as client:
            for batches in range(1, ROUNDS + 1):
                metrics = {"stepsCompleted": batches, "metrics": {"loss": 1 / batches}}
                kind = ("training", "validation", "batch")[batches % 3]
                if kind == "batch":
                    url, body = f"{base}/metrics", {"trainingMetrics": [metrics]}
                else:
                    url, body = f"{base}/{kind}_metrics", {f"{kind}Metrics": metrics}
                start.wait()
                response = client.post(url, json=body)
                statuses.append((response.status_code, response.text))

    threads = [threading.Thread(target=report, args=(rank,)) for rank in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    refused = [(status, text) for status, text in statuses if status != 200]
    assert refused == [] and len(statuses) == THREADS * ROUNDS
    with master.db() as db:
        for table in (TrainingMetrics, ValidationMetrics):
            keys = db.execute(
                sa.select(table.batches_trained).where(table.trial_id == trial_id)
            ).all()
            assert len(keys) == len(set(keys)), table.__tablename__
        trained = db.scalars(sa.select(TrainingMetrics.batches_trained)).all()
        validated = db.scalars(sa.select(ValidationMetrics.batches_trained)).all()
        assert sorted(trained + validated) == list(range(1, ROUNDS + 1))
        trial = db.get(Trial, trial_id)
        assert trial is not None and trial.batches_trained == max(trained)
