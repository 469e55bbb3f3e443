"""Fixtures for create() and the embedded master: every test gets its own data and config
directories (so the embedded master's SQLite database, its lock and the token cache live in
tmp_path), and the live-master fixtures of tests/master on both databases: ``master`` (API
only) and ``scheduling_master`` (it runs trials)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from detlite.experimental._embedded import stop_embedded_master
from tests.master.conftest import (  # noqa: F401 - fixtures, found by name
    LiveMaster,
    live_master,
    make_settings,
    master,
    migrated_database_url,
    postgres_problem,
    postgres_template,
)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    for name in ("DETLITE_MASTER", "DET_MASTER", "DET_MASTER_ADDR", "DETLITE_USER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("DETLITE_IN_TRIAL_WORKER", raising=False)
    yield tmp_path / "data" / "detlite"
    stop_embedded_master()


@pytest.fixture
def scheduling_master(
    migrated_database_url: str,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> Iterator[LiveMaster]:
    """A live master on each database that runs trials (2 slots, local workers)."""
    settings = make_settings(migrated_database_url, tmp_path, scheduler=True, slots=2)
    settings.storage_path.mkdir(parents=True, exist_ok=True)
    with live_master(settings) as running:
        yield running
