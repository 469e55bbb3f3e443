"""Fixtures for the trial worker's tests: the live master of ``tests/master`` (on SQLite and
PostgreSQL), with its scheduler off where the master has one, so that the tests themselves
start the workers they examine; plus rows made with ``tests.master.factories``."""

from __future__ import annotations

from tests.master import conftest as _master_fixtures

# The database and live-master fixtures of tests/master, registered here by name.
postgres_problem = _master_fixtures.postgres_problem
postgres_template = _master_fixtures.postgres_template
migrated_database_url = _master_fixtures.migrated_database_url
sqlite_url = _master_fixtures.sqlite_url
master = _master_fixtures.master
sqlite_master = _master_fixtures.sqlite_master
