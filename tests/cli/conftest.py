"""A live master without a scheduler, and an in-process ``detlite`` runner.

The CLI tests put experiments into the states they need through the database; a scheduler
would act on them (settle stopping trials, run active ones), so the master runs without.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.master.conftest import (  # noqa: F401 - fixtures used by this directory's tests
    LiveMaster,
    live_master,
    make_settings,
    postgres_problem,
    postgres_template,
)
from tests.master.conftest import migrated_database_url as migrated_database_url  # fixture
from tests.master.test_cli_models import CLI


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    # Error output is compared line by line: no tracebacks. (tests/conftest.py gives every
    # test private XDG directories and no master, user or password from the environment.)
    monkeypatch.delenv("DETLITE_DEBUG", raising=False)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> CLI:
    return CLI(capsys, monkeypatch)


@pytest.fixture
def master(
    migrated_database_url: str,
    tmp_path: Path,
) -> Iterator[LiveMaster]:
    """A live master on each database, its scheduler off."""
    settings = make_settings(migrated_database_url, tmp_path, scheduler=False)
    with live_master(settings) as running:
        yield running
