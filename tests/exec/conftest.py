"""Fixtures for the trial worker's tests: the live master of ``tests/master`` (on SQLite and
PostgreSQL), with its scheduler off where the master has one, so that the tests themselves
start the workers they examine; plus rows made with ``tests.master.factories``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.master import conftest as _master_fixtures
from tests.master.conftest import LiveMaster, live_master, make_settings

# The database fixtures of tests/master, registered here by name.
postgres_problem = _master_fixtures.postgres_problem
postgres_template = _master_fixtures.postgres_template
migrated_database_url = _master_fixtures.migrated_database_url
sqlite_url = _master_fixtures.sqlite_url


@pytest.fixture
def master(migrated_database_url: str, tmp_path: Path) -> Iterator[LiveMaster]:
    """A live master on each database."""
    with live_master(make_settings(migrated_database_url, tmp_path)) as running:
        yield running


@pytest.fixture
def sqlite_master(sqlite_url: str, tmp_path: Path) -> Iterator[LiveMaster]:
    """A live master on SQLite only, for what does not depend on the database."""
    with live_master(make_settings(sqlite_url, tmp_path)) as running:
        yield running
