"""Fixtures for the trial worker's tests: the live master of ``tests/master`` (on SQLite and
PostgreSQL), with its scheduler off where the master has one, so that the tests themselves
start the workers they examine; plus rows made with ``tests.master.factories``."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI

from detlite.master import Settings, create_app
from tests.master import conftest as _master_fixtures
from tests.master.conftest import LiveMaster, live_master, make_settings

# The database fixtures of tests/master, registered here by name.
postgres_problem = _master_fixtures.postgres_problem
postgres_template = _master_fixtures.postgres_template
migrated_database_url = _master_fixtures.migrated_database_url
sqlite_url = _master_fixtures.sqlite_url


def worker_settings(db_url: str, tmp_path: Path, **overrides: Any) -> Settings:
    """A master's settings for worker tests: no scheduler of its own, when it has one."""
    if "scheduler" in Settings.model_fields:
        overrides.setdefault("scheduler", False)
    return make_settings(db_url, tmp_path, **overrides)


@pytest.fixture
def master(migrated_database_url: str, tmp_path: Path) -> Iterator[LiveMaster]:
    """A live master on each database."""
    with live_master(worker_settings(migrated_database_url, tmp_path)) as running:
        yield running


@pytest.fixture
def sqlite_master(sqlite_url: str, tmp_path: Path) -> Iterator[LiveMaster]:
    """A live master on SQLite only, for what does not depend on the database."""
    with live_master(worker_settings(sqlite_url, tmp_path)) as running:
        yield running


@contextmanager
def serve_on_port(app: FastAPI, port: int) -> Iterator[str]:
    """Run ``app`` under uvicorn on a given loopback port (to restart a master in place)."""
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="detlite-master", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError(f"the master failed to start on port {port}")
        if time.monotonic() > deadline:
            raise TimeoutError("the master did not start within 60 s")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        assert not thread.is_alive(), "the master did not stop"


@contextmanager
def master_on_port(settings: Settings, port: int) -> Iterator[LiveMaster]:
    app = create_app(settings)
    with serve_on_port(app, port) as url:
        yield LiveMaster(app=app, settings=settings, url=url)
