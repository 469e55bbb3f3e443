"""Fixtures for the robustness suite, and its long variants kept out of a plain run.

The live master and its databases are those of ``tests/master/conftest.py`` (SQLite and
PostgreSQL), registered here by name. Tests marked ``slow`` are the issue's long variants
(many more fuzzing examples, 20 fault runs): a run without ``-m`` skips them, with the
reason; ``-m slow`` (or any ``-m`` expression that selects them) runs them.
"""

from __future__ import annotations

import pytest

from tests.master import conftest as _master_fixtures

postgres_problem = _master_fixtures.postgres_problem
postgres_template = _master_fixtures.postgres_template
migrated_database_url = _master_fixtures.migrated_database_url
database_url = _master_fixtures.database_url
sqlite_url = _master_fixtures.sqlite_url
master = _master_fixtures.master
sqlite_master = _master_fixtures.sqlite_master


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.option.markexpr:
        return  # the run chose its markers itself
    skip = pytest.mark.skip(reason="a long variant: run it with -m slow")
    for item in items:
        if item.get_closest_marker("slow") is not None and item.nodeid.startswith(
            "tests/robustness/"
        ):
            item.add_marker(skip)
