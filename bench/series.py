"""A chart's metric series from a trial of a million points: downsampled against read whole.

Per database (a SQLite file in a temporary directory; a PostgreSQL database made for the
run and dropped afterwards, skipped with the reason when the server cannot be reached), it
bulk-inserts ``--points`` training metric rows (``{"loss", "acc"}``, one per batch) for one
trial with Core (no API; PostgreSQL then ``VACUUM ANALYZE``, as autovacuum soon would),
starts a master (``create_app`` under uvicorn in a thread, ``master_api.serve``) and
times, over HTTP as ``admin`` through ``detlite.api.Session``:

- ``downsampled``: ``GET /api/v1/trials/{id}/metrics?maxPoints=1000`` (``--max-points``),
  the median of ``--repeats`` calls after an untimed one, and the same through the web
  UI's ``GET /api/v1/ui/trials/{id}/series``;
- ``everything``: every row, ``--page-size`` rows a request (``offset``/``limit``), once.

It prints the seconds of each, the rows and bytes each answer held, and the ratio
``everything / downsampled``. Client and master share this process, so the figures include
the client's JSON decoding.

    python bench/series.py [--points 1000000] [--databases sqlite,postgres] [--json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from master_api import (  # bench/ on path
    DEFAULT_PG_URL,
    database,
    databases_to_measure,
    login,
    serve,
)
from sqlalchemy.engine import Engine

from detlite.api import ExperimentState, Session
from detlite.config import validate_config
from detlite.master import Settings, create_app
from detlite.master.deps import MasterState
from detlite.master.orm import Experiment, TrainingMetrics, Trial, User
from detlite.testing.fake import linear_config, linear_hparams

_INSERT_ROWS = 50_000


def seed(engine: Engine, points: int) -> tuple[int, float]:
    """One COMPLETED trial with ``points`` training rows; its id and the seconds it took."""
    start = time.perf_counter()
    now = dt.datetime.now(dt.timezone.utc)
    with engine.begin() as conn:
        admin = conn.scalar(sa.select(User.id).where(User.username == "admin"))
        experiment = conn.execute(
            sa.insert(Experiment.__table__)
            .values(
                owner_id=admin,
                config=validate_config(linear_config()).to_dict(),
                state=ExperimentState.COMPLETED,
                start_time=now,
            )
            .returning(Experiment.id)
        ).scalar_one()
        trial = conn.execute(
            sa.insert(Trial.__table__)
            .values(
                experiment_id=experiment,
                request_id="r1",
                hparams=linear_hparams(),
                state=ExperimentState.COMPLETED,
                batches_trained=points,
                start_time=now,
            )
            .returning(Trial.id)
        ).scalar_one()
    insert = sa.insert(TrainingMetrics.__table__)
    for first in range(1, points + 1, _INSERT_ROWS):
        rows = [
            {
                "trial_id": trial,
                "trial_run_id": 0,
                "batches_trained": step,
                # A decaying, noisy loss with a spike: what downsampling must keep.
                "metrics": {
                    "loss": 1.0 / step + (step * 7919 % 1000) / 1e5 + (step == points // 3),
                    "acc": 1.0 - 1.0 / step,
                },
                "end_time": now,
            }
            for step in range(first, min(first + _INSERT_ROWS, points + 1))
        ]
        with engine.begin() as conn:
            conn.execute(insert, rows)
    return trial, time.perf_counter() - start


def _timed(session: Session, path: str, params: dict[str, Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    answer = session.get(path, params=params)
    return time.perf_counter() - t0, answer


def measure(session: Session, trial: int, args: argparse.Namespace) -> dict[str, Any]:
    metrics = f"/api/v1/trials/{trial}/metrics"
    series = f"/api/v1/ui/trials/{trial}/series"
    sample = {"maxPoints": args.max_points}
    _timed(session, metrics, sample)  # untimed: the route's first call, the caches
    downsampled = [_timed(session, metrics, sample) for _ in range(args.repeats)]
    ui = [_timed(session, series, sample) for _ in range(args.repeats)]
    answer = downsampled[-1][1]
    everything_s = 0.0
    rows = 0
    size = 0
    while True:
        seconds, page = _timed(session, metrics, {"offset": rows, "limit": args.page_size})
        everything_s += seconds
        rows += len(page["metrics"])
        size += len(json.dumps(page))
        if not page["metrics"] or rows >= page["pagination"]["total"]:
            break
    downsampled_s = statistics.median(s for s, _ in downsampled)
    return {
        "downsampled_s": downsampled_s,
        "downsampled_rows": len(answer["metrics"]),
        "downsampled_bytes": len(json.dumps(answer)),
        "ui_series_s": statistics.median(s for s, _ in ui),
        "everything_s": everything_s,
        "everything_rows": rows,
        "everything_bytes": size,
        "ratio": everything_s / downsampled_s,
    }


def run_database(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="detlite-bench-") as tmp_dir:
        tmp = Path(tmp_dir)
        with database(kind, tmp, args.postgres_url) as url:
            settings = Settings(
                db_url=url, storage_path=tmp / "checkpoints", port=0, scheduler=False
            )
            app = create_app(settings)
            with serve(app) as master_url:
                state: MasterState = app.state.master
                trial, seed_s = seed(state.engine, args.points)
                if kind == "postgres":
                    # What autovacuum does soon after a bulk insert: the planner's statistics
                    # (without them it may sort the trial's rows for every page).
                    autocommit = state.engine.connect().execution_options(
                        isolation_level="AUTOCOMMIT"
                    )
                    with autocommit as conn:
                        conn.execute(sa.text("VACUUM ANALYZE training_metrics"))
                with login(master_url) as session:
                    result = measure(session, trial, args)
    return {"database": kind, "points": args.points, "seed_s": seed_s, **result}


def print_result(r: dict[str, Any], args: argparse.Namespace) -> None:
    print(f"\n== {r['database']}: {r['points']:,} points (seeded in {r['seed_s']:.0f} s) ==")
    print(
        f"  maxPoints={args.max_points}: {r['downsampled_s']:.3f} s (median of {args.repeats}), "
        f"{r['downsampled_rows']:,} rows, {r['downsampled_bytes'] / 1e3:,.0f} kB"
    )
    print(f"  UI series, maxPoints={args.max_points}: {r['ui_series_s']:.3f} s")
    print(
        f"  everything, pages of {args.page_size:,}: {r['everything_s']:.1f} s, "
        f"{r['everything_rows']:,} rows, {r['everything_bytes'] / 1e6:,.0f} MB"
    )
    print(f"  everything / downsampled: {r['ratio']:,.0f}x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--points", type=int, default=1_000_000, help="rows of the trial")
    parser.add_argument("--max-points", type=int, default=1000, help="maxPoints asked for")
    parser.add_argument("--page-size", type=int, default=10_000, help="rows per page read")
    parser.add_argument("--repeats", type=int, default=5, help="timed downsampled calls")
    parser.add_argument("--databases", default="sqlite,postgres", help="comma-separated")
    parser.add_argument("--postgres-url", default=DEFAULT_PG_URL, help="an admin URL")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    kinds, skipped = databases_to_measure(parser, args.databases, args.postgres_url)
    results = []
    for kind in kinds:
        results.append(run_database(kind, args))
        if not args.json:  # each database as soon as it is measured
            print_result(results[-1], args)
            sys.stdout.flush()
    if args.json:
        report = {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "results": results,
            "skipped": skipped,
        }
        print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
