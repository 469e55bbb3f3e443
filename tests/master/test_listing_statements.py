"""Listings run as many SQL statements for a page of 30 rows as for a page of 2 (no N+1).

The statements are counted on the master's engine (an event listener) around one request,
after a first request has warmed what the master caches (the token check). A listing that
read something per row would grow with the page; these must not.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import sqlalchemy as sa

from detlite.master.orm import ModelVersion
from tests.master.conftest import LiveMaster
from tests.master.factories import (
    make_checkpoint,
    make_experiment,
    make_model_version,
    make_trial,
    make_validation,
)

LISTINGS = (
    ("/api/v1/experiments", {"sort_by": "SORT_BY_ID", "order_by": "ORDER_BY_DESC", "limit": 50}),
    ("/api/v1/experiments", {"sort_by": "SORT_BY_NUM_TRIALS", "archived": "false", "limit": 50}),
    ("/api/v1/ui/experiments", {"archived": "false", "limit": 50}),
    ("/api/v1/ui/experiments", {"sort_by": "SORT_BY_BEST_METRIC", "limit": 50}),
    ("/api/v1/models", {"sort_by": "SORT_BY_LAST_UPDATED_TIME", "order_by": 2, "limit": 100}),
    ("/api/v1/models/the-model/versions", {}),
)


@contextmanager
def statements(master: LiveMaster) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    sa.event.listen(master.state.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sa.event.remove(master.state.engine, "before_cursor_execute", record)


def add_experiments(master: LiveMaster, count: int, model_versions: int) -> None:
    """``count`` experiments of 2 trials, each validated and checkpointed; their checkpoints
    become versions of ``the-model`` until it has ``model_versions``."""
    with master.db() as db:
        version = db.scalar(sa.select(sa.func.count()).select_from(ModelVersion)) or 0
        for _ in range(count):
            experiment = make_experiment(db, owner="admin")
            for batches in (10, 20):
                trial = make_trial(db, experiment)
                validation = make_validation(db, trial, batches, {"validation_loss": 0.5})
                checkpoint = make_checkpoint(db, trial, batches, validation=validation)
                if version < model_versions:
                    version += 1
                    make_model_version(db, checkpoint, "the-model", version)


def counts(client: httpx.Client, master: LiveMaster) -> dict[str, int]:
    out = {}
    for path, params in LISTINGS:
        assert client.get(path, params=params).status_code == 200  # warm
        with statements(master) as seen:
            response = client.get(path, params=params)
        assert response.status_code == 200, response.text
        out[f"{path} {sorted(params.items())}"] = len(seen)
    return out


def test_listings_run_a_constant_number_of_statements(master: LiveMaster) -> None:
    add_experiments(master, 1, model_versions=2)
    with master.client(master.login("admin")) as client:
        small = counts(client, master)
        add_experiments(master, 15, model_versions=30)
        large = counts(client, master)
        versions = client.get("/api/v1/models/the-model/versions").json()["modelVersions"]
        experiments = client.get("/api/v1/experiments").json()["experiments"]
    assert len(versions) == 30 and len(experiments) == 16
    assert large == small


def test_a_trials_checkpoints_list_in_a_constant_number_of_statements(
    master: LiveMaster,
) -> None:
    with master.db() as db:
        trial = make_trial(db, make_experiment(db, owner="admin"))
        trial_id = trial.id

    def add_checkpoints(first: int, count: int) -> None:
        with master.db() as db:
            row = db.get(type(trial), trial_id)
            for batches in range(first, first + count):
                validation = make_validation(db, row, batches, {"validation_loss": 0.5})
                make_checkpoint(db, row, batches, validation=validation)

    path = f"/api/v1/trials/{trial_id}/checkpoints"
    with master.client(master.login("admin")) as client:
        add_checkpoints(1, 2)
        assert client.get(path).status_code == 200  # warm
        with statements(master) as small:
            assert len(client.get(path).json()["checkpoints"]) == 2
        add_checkpoints(3, 28)
        with statements(master) as large:
            assert len(client.get(path).json()["checkpoints"]) == 30
    assert len(large) == len(small)
