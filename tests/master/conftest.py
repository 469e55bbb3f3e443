"""Fixtures: a fresh database on SQLite and on PostgreSQL, and a live master over real HTTP.

``database_url`` is parametrized over ``sqlite`` (a file in tmp_path) and ``postgres`` (a
database of its own on the PostgreSQL server at ``$DETLITE_TEST_POSTGRES_URL``, default
``postgresql://postgres@127.0.0.1:5432/postgres``, created for the test and dropped after
it). When the server cannot be reached, or psycopg is missing, the postgres case is skipped
with the reason -- unless ``DETLITE_TEST_POSTGRES=1`` (the tox ``postgres`` env), where it
fails: that env exists to prove the PostgreSQL path. ``migrated_database_url`` is the same at
head: on PostgreSQL a copy of a template database migrated once per session, because
creating and migrating a database for every API test would double the suite's time.

``master`` runs ``create_app`` under uvicorn in a thread on a free loopback port, so tests
talk HTTP to the same server code ``detlite master`` runs.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from detlite.master import Settings, create_app, db
from detlite.master.deps import MasterState

PG_ADMIN_URL = os.environ.get(
    "DETLITE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
PG_REQUIRED = os.environ.get("DETLITE_TEST_POSTGRES") == "1"


def _postgres_problem() -> str | None:
    """Why PostgreSQL tests cannot run here, or None when they can."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install 'detlite[postgres]')"
    try:
        with psycopg.connect(_libpq_url(PG_ADMIN_URL), connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"PostgreSQL at {make_url(PG_ADMIN_URL)!r} is unreachable: {exc}"
    return None


def _libpq_url(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def postgres_problem() -> str | None:
    return _postgres_problem()


def _require_postgres(problem: str | None) -> None:
    if problem is not None:
        if PG_REQUIRED:
            pytest.fail(f"DETLITE_TEST_POSTGRES=1 but {problem}")
        pytest.skip(problem)


@contextmanager
def postgres_database(template: str | None = None) -> Iterator[str]:
    """A new database of our own (empty, or a copy of ``template``); dropped afterwards."""
    import psycopg
    from psycopg import sql

    name = f"detlite_test_{os.getpid()}_{uuid.uuid4().hex[:10]}"
    admin = _libpq_url(PG_ADMIN_URL)
    create = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template is not None:
        create = sql.SQL("{} TEMPLATE {}").format(create, sql.Identifier(template))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(create)
    try:
        yield make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
            conn.execute(drop.format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def postgres_template(postgres_problem: str | None) -> Iterator[str]:
    """A database migrated to head once per session; each master test gets a copy of it."""
    _require_postgres(postgres_problem)
    with postgres_database() as url:
        engine = db.create_engine(url)
        db.upgrade(engine)
        engine.dispose()  # a template must have no connections while it is copied
        name = make_url(url).database
        assert name is not None
        yield name


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, postgres_problem: str | None
) -> Iterator[str]:
    """An empty database: a SQLite file, or a PostgreSQL database made for this test."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'master.db'}"
        return
    _require_postgres(postgres_problem)
    with postgres_database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def migrated_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Like ``database_url``, already at head (PostgreSQL: a copy of the template)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'master.db'}"
        return
    with postgres_database(template=request.getfixturevalue("postgres_template")) as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """For tests of layers that do not depend on the database (errors, client)."""
    return f"sqlite:///{tmp_path / 'master.db'}"


@dataclass
class LiveMaster:
    """A running master: its app, its settings and its URL."""

    app: FastAPI
    settings: Settings
    url: str

    @property
    def state(self) -> MasterState:
        state: MasterState = self.app.state.master
        return state

    def db(self) -> Session:
        """A database session of the master's own engine (to look behind the API)."""
        return self.state.sessionmaker()

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def login(self, username: str, password: str = "") -> str:
        with self.client() as client:
            response = client.post(
                "/api/v1/auth/login", json={"username": username, "password": password}
            )
        assert response.status_code == 200, response.text
        token: str = response.json()["token"]
        return token


@contextmanager
def serve_in_thread(app: FastAPI, port: int = 0) -> Iterator[str]:
    """Run ``app`` under uvicorn on a loopback port (default: a free one); yields its URL.

    A given ``port`` restarts a master in place, at the address its workers know."""
    # log_config=None: keep pytest's logging capture instead of uvicorn's handlers.
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="detlite-master", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the master failed to start (see the captured log)")
        if time.monotonic() > deadline:
            raise TimeoutError("the master did not start within 60 s")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        assert not thread.is_alive(), "the master did not stop"


def make_settings(db_url: str, tmp_path: Path, **overrides: Any) -> Settings:
    """A master's settings for tests; the scheduler is off unless ``scheduler=True``: API
    tests make their trials themselves (scheduling tests turn it on). No shared warm parent
    (``warm_start``) unless asked for.

    The master allows ``tmp_path`` as a shared_fs root (``storage_roots``), where every test
    keeps its checkpoint storage; tests of the allow list itself pass their own."""
    values: dict[str, Any] = {
        "port": 0,
        "scheduler": False,
        "storage_roots": (tmp_path,),
        "warm_start": False,  # one interpreter fewer per test master (tests/exec/test_pool.py)
        **overrides,
    }
    return Settings(db_url=db_url, storage_path=tmp_path / "checkpoints", **values)


@contextmanager
def live_master(settings: Settings, port: int = 0) -> Iterator[LiveMaster]:
    app = create_app(settings)
    with serve_in_thread(app, port) as url:
        yield LiveMaster(app=app, settings=settings, url=url)


@pytest.fixture
def master(migrated_database_url: str, tmp_path: Path) -> Iterator[LiveMaster]:
    """A live master on each database."""
    with live_master(make_settings(migrated_database_url, tmp_path)) as running:
        yield running


@pytest.fixture
def sqlite_master(sqlite_url: str, tmp_path: Path) -> Iterator[LiveMaster]:
    """A live master on SQLite only, for tests that do not depend on the database."""
    with live_master(make_settings(sqlite_url, tmp_path)) as running:
        yield running


@pytest.fixture
def admin_token(master: LiveMaster) -> str:
    return master.login("admin")


def expire(master: LiveMaster, token_hash: str) -> None:
    """Move a token's expiry into the past, as if its lifetime had run out."""
    from detlite.master.orm import Token

    with master.db() as session:
        row = session.query(Token).filter_by(token_hash=token_hash).one()
        row.expires_at = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)
        session.commit()


def assert_error(response: httpx.Response, status: int, contains: str = "") -> dict[str, Any]:
    """Check the one error shape of detlite.master.errors; returns its ``error`` object."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"code", "reason", "message", "details"}
    assert error["code"] == status
    assert contains in error["message"]
    return dict(error)
