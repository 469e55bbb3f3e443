"""Downsampled metric series (``maxPoints``) over HTTP, on SQLite and PostgreSQL.

Each answer is checked against ``expected``, a plain restatement of the documented rule
(``detlite.master.queries.metrics``): per series, its first and last point and, per bucket
of equal batch width, the point of its smallest and of its largest value (the earliest on
ties). The scan reads a trial a page at a time; the tests shrink the page to a few rows, so
that buckets straddle pages as they do in a trial of a million rows.
"""

from __future__ import annotations

import datetime as dt
import math
import random
from collections import defaultdict
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from detlite.master.orm import Experiment, TrainingMetrics, ValidationMetrics
from detlite.master.queries import metrics as metric_queries
from tests.master.conftest import LiveMaster, assert_error
from tests.master.factories import make_experiment, make_trial

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
NOT_NUMBERS: list[Any] = ["NaN", "Infinity", "-Infinity", None, True, [1, 2], {"a": 1}, "7"]

Rows = dict[int, dict[str, Any]]  # batch count -> the effective row's metrics


@pytest.fixture(params=[3, 10_000], ids=["pages-of-3", "one-page"])
def page_rows(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(metric_queries, "_SCAN_ROWS", request.param)
    return int(request.param)


def finite(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def expected(rows: Rows, max_points: int, stored: int | None = None) -> set[tuple[int, str]]:
    """The (batch count, series) points the documented rule keeps; ``stored`` is how many
    rows the trial has (superseded runs included) when that differs from ``len(rows)``."""
    steps = sorted(rows)
    names = {name for metrics in rows.values() for name in metrics}
    kept: set[tuple[int, str]] = set()
    buckets = (max_points - 2) // 2
    first, span = steps[0], steps[-1] - steps[0] + 1
    for name in names:
        points = [(step, rows[step][name]) for step in steps if finite(rows[step].get(name))]
        if not points:
            continue
        if (stored or len(rows)) <= max_points:
            kept |= {(step, name) for step, _ in points}
            continue
        kept |= {(points[0][0], name), (points[-1][0], name)}
        by_bucket: dict[int, list[tuple[int, Any]]] = defaultdict(list)
        for step, value in points:
            by_bucket[(step - first) * buckets // span].append((step, value))
        for group in by_bucket.values():
            kept.add((min(group, key=lambda p: p[1])[0], name))
            kept.add((max(group, key=lambda p: p[1])[0], name))
    return kept


def insert(
    master: LiveMaster, trial_id: int, rows: Rows, run: int = 0, model: Any = TrainingMetrics
) -> None:
    values = [
        {
            "trial_id": trial_id,
            "trial_run_id": run,
            "batches_trained": step,
            "metrics": metrics,
            "end_time": NOW,
        }
        for step, metrics in rows.items()
    ]
    with master.db() as db:
        db.execute(sa.insert(model), values)
        db.commit()


def new_trial(master: LiveMaster) -> tuple[int, int]:
    with master.db() as db:
        experiment = make_experiment(db)
        return experiment.id, make_trial(db, experiment).id


def get_rows(client: httpx.Client, path: str, **params: Any) -> list[dict[str, Any]]:
    response = client.get(path, params=params)
    assert response.status_code == 200, response.text
    rows: list[dict[str, Any]] = response.json()["metrics"]
    return rows


def points(rows: list[dict[str, Any]]) -> set[tuple[int, str]]:
    return {(row["stepsCompleted"], name) for row in rows for name in row["metrics"]}


def noisy_rows(count: int, seed: int = 0) -> Rows:
    """Sparse batch counts; values rounded so that ties happen; series that start late,
    stop early, and mix in values that are not numbers."""
    rng = random.Random(seed)
    rows: Rows = {}
    for i in range(count):
        step = 7 + 3 * i
        metrics: dict[str, Any] = {
            "loss": round(rng.gauss(1.0, 0.3), 1),
            "lr": rng.randrange(5),  # integers, mostly tied
            "mixed": rng.choice(NOT_NUMBERS) if i % 3 else rng.random(),
        }
        if count // 3 <= i < 2 * count // 3:
            metrics["acc"] = rng.random()
        if i % 5 == 0:
            metrics["text"] = "warming up"  # a series of no numbers at all
        rows[step] = metrics
    rows[7 + 3 * (count // 2)]["loss"] = 1e9  # a spike
    rows[7 + 3 * (count // 4)]["loss"] = -1e9  # and a dip
    return rows


@pytest.mark.parametrize("max_points", [4, 5, 100, 1000])
def test_series_keep_their_extremes_ends_and_budget(
    master: LiveMaster, admin_token: str, page_rows: int, max_points: int
) -> None:
    _, trial_id = new_trial(master)
    rows = noisy_rows(1200)
    insert(master, trial_id, rows)
    with master.client(admin_token) as client:
        answer = get_rows(client, f"/api/v1/trials/{trial_id}/metrics", maxPoints=max_points)
    assert points(answer) == expected(rows, max_points)
    per_series: dict[str, list[int]] = defaultdict(list)
    for row in answer:
        assert row["trialId"] == trial_id and row["trialRunId"] == 0
        assert row["numInputs"] is None and row["endTime"].startswith("2026-01-01")
        for name, value in row["metrics"].items():
            assert value == rows[row["stepsCompleted"]][name]  # the stored value, as stored
            per_series[name].append(row["stepsCompleted"])
    assert [row["stepsCompleted"] for row in answer] == sorted(r["stepsCompleted"] for r in answer)
    assert set(per_series) == {"loss", "lr", "mixed", "acc"}  # "text" holds no number
    for name, steps in per_series.items():
        assert len(steps) <= max_points
        numbers = {s: v[name] for s, v in rows.items() if finite(v.get(name))}
        assert min(numbers) in steps and max(numbers) in steps  # first and last
        assert min(numbers, key=numbers.__getitem__) in steps
        assert max(numbers, key=numbers.__getitem__) in steps
    assert 7 + 3 * 600 in per_series["loss"] and 7 + 3 * 300 in per_series["loss"]


def test_a_trial_within_the_budget_keeps_every_number(master: LiveMaster, admin_token: str) -> None:
    _, trial_id = new_trial(master)
    rows = noisy_rows(50, seed=3)
    insert(master, trial_id, rows)
    with master.client(admin_token) as client:
        answer = get_rows(client, f"/api/v1/trials/{trial_id}/metrics", maxPoints=50)
        everything = get_rows(client, f"/api/v1/trials/{trial_id}/metrics")
    assert points(answer) == {(s, n) for s, m in rows.items() for n, v in m.items() if finite(v)}
    assert len(everything) == 50  # without maxPoints: every row, every value, as before
    assert everything[1]["metrics"] == rows[10]


def test_only_the_latest_run_of_a_batch_count_counts(
    master: LiveMaster, admin_token: str, page_rows: int
) -> None:
    _, trial_id = new_trial(master)
    first_run = {step: {"loss": 1.0 + step / 1000} for step in range(1, 301)}
    first_run[250]["loss"] = 1e6  # superseded by the second run: never a point
    second_run = {step: {"loss": 2.0 - step / 1000} for step in range(201, 401)}
    insert(master, trial_id, first_run, run=0)
    insert(master, trial_id, second_run, run=1)
    effective = {**first_run, **second_run}
    with master.client(admin_token) as client:
        answer = get_rows(client, f"/api/v1/trials/{trial_id}/metrics", maxPoints=20)
    assert points(answer) == expected(effective, 20, stored=500)
    for row in answer:
        step = row["stepsCompleted"]
        assert row["trialRunId"] == (1 if step > 200 else 0)
        assert row["metrics"]["loss"] == effective[step]["loss"]
    assert 1e6 not in [row["metrics"]["loss"] for row in answer]


def test_nested_validations_and_the_experiment_and_ui_series(
    master: LiveMaster, admin_token: str
) -> None:
    experiment_id, first = new_trial(master)
    with master.db() as db:
        experiment = db.get(Experiment, experiment_id)
        assert experiment is not None
        second = make_trial(db, experiment).id
    nested = {
        s: {"validation_metrics": {"validation_loss": 1 / s, "note": "x"}} for s in range(1, 201)
    }
    flat = {s: {"validation_loss": (s % 17) / 17} for s in range(1, 301)}
    insert(master, first, nested, model=ValidationMetrics)
    insert(master, second, flat, model=ValidationMetrics)
    with master.client(admin_token) as client:
        path = f"/api/v1/experiments/{experiment_id}/metrics"
        answer = get_rows(client, path, kind="validation", maxPoints=10)
        series = client.get(
            f"/api/v1/ui/experiments/{experiment_id}/series",
            params={"kind": "validation", "maxPoints": 10},
        ).json()["series"]
        page = client.get(path, params={"kind": "validation", "maxPoints": 10, "limit": 3})
    by_trial = defaultdict(list)
    for row in answer:
        by_trial[row["trialId"]].append(row)
    assert list(by_trial) == [first, second]
    unnested = {s: m["validation_metrics"] for s, m in nested.items()}
    assert all(set(r["metrics"]) == {"validation_metrics"} for r in by_trial[first])
    kept = {
        (r["stepsCompleted"], n)
        for r in by_trial[first]
        for n in r["metrics"]["validation_metrics"]
    }
    assert kept == expected(unnested, 10)
    assert points(by_trial[second]) == expected(flat, 10)
    assert [(s["trialId"], s["metric"], len(s["steps"])) for s in series] == [
        (first, "validation_loss", len(by_trial[first])),
        (second, "validation_loss", len(by_trial[second])),
    ]
    assert page.json()["pagination"] == {
        "offset": 0,
        "limit": 3,
        "startIndex": 0,
        "endIndex": 3,
        "total": len(answer),
    }
    assert page.json()["metrics"] == answer[:3]


def test_max_points_is_bounded(master: LiveMaster, admin_token: str) -> None:
    _, trial_id = new_trial(master)
    with master.client(admin_token) as client:
        for bad in (3, 10_001, -1):
            response = client.get(f"/api/v1/trials/{trial_id}/metrics", params={"maxPoints": bad})
            assert_error(response, 400, "maxPoints")
        assert get_rows(client, f"/api/v1/trials/{trial_id}/metrics", maxPoints=4) == []


def test_rows_a_hand_edited_database_spoiled(sqlite_master: LiveMaster) -> None:
    """SQLite keeps JSON as text: a row that is not JSON, or holds the scan's separator,
    is left out instead of failing the chart (PostgreSQL's json type refuses both)."""
    _, trial_id = new_trial(sqlite_master)
    rows = {step: {"loss": float(step % 7)} for step in range(1, 41)}
    insert(sqlite_master, trial_id, rows)
    with sqlite_master.db() as db:
        for step, text in ((10, "{not json"), (20, '{"loss": "a\x1eb"}'), (30, "[1, 2]")):
            db.execute(
                sa.text("UPDATE training_metrics SET metrics = :text WHERE batches_trained = :s"),
                {"text": text, "s": step},
            )
        db.commit()
    for step in (10, 20, 30):
        del rows[step]
    with sqlite_master.client(sqlite_master.login("admin")) as client:
        answer = get_rows(client, f"/api/v1/trials/{trial_id}/metrics", maxPoints=6)
    assert points(answer) == expected(rows, 6, stored=40)
