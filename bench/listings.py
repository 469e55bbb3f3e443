"""How long the listings the web UI and the CLI read take with 100,000 experiments and
10,000 models, on SQLite and PostgreSQL, over real HTTP.

Per database (a SQLite file in a temporary directory; a PostgreSQL database made for the
run and dropped afterwards, skipped with the reason when the server cannot be reached), it
bulk-inserts with Core (no ORM objects, no API):

- ``--users`` users (``user0``...) besides ``admin``, who own the experiments in turn;
- ``--experiments`` experiments with one trial and one validation each, all with one small
  validated config (the fake framework's, as ``master_api.py`` seeds them). Their states,
  labels, descriptions, archived flags and progress vary in fixed patterns, so that every
  filter keeps a part of them: 1 in 20 ACTIVE, 1 in 20 PAUSED, 1 in 10 CANCELED, 1 in 50
  ERROR, the rest COMPLETED; 1 in 10 of the ended ones archived; labels from a few sets;
  descriptions ``"<word> <i>"`` with one word of eight;
- ``--models`` models with ``--versions`` versions each (each version a COMPLETED checkpoint
  of its own), plus one model with ``--big-model-versions`` versions.

Then it starts a master (``create_app`` under uvicorn in a thread, ``master_api.serve``),
logs in as ``admin`` and times each listing ``--repeats`` times after two untimed calls,
one request after the other through one keep-alive connection (a listing that is still slow
stops after ``--budget`` seconds of timed calls, at least 3). It prints p50 and p99 per
listing, in milliseconds, and the number of rows each answer held (so a listing that
silently answers nothing shows up).

    python bench/listings.py [--quick] [--databases sqlite,postgres] [--repeats 30] [--json]

Client and master share this process, so the figures include the client's JSON decoding.
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
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from master_api import (  # bench/ is on sys.path
    DEFAULT_PG_URL,
    checkpoint_row,
    database,
    databases_to_measure,
    serve,
)
from sqlalchemy.engine import Engine

from detlite.api import ExperimentState
from detlite.config import validate_config
from detlite.master import Settings, create_app
from detlite.master.deps import MasterState
from detlite.master.orm import (
    Checkpoint,
    Experiment,
    Model,
    ModelVersion,
    Trial,
    User,
    ValidationMetrics,
)
from detlite.testing.fake import linear_config, linear_hparams

S = ExperimentState
WORDS = ("mnist", "cifar", "bert", "resnet", "gpt", "vit", "unet", "lstm")
LABEL_SETS: tuple[list[str], ...] = ([], ["team-a"], ["team-b", "prod"], ["team-a", "prod"], [])
MODEL_LABELS: tuple[list[str], ...] = ([], ["prod"], ["staging"], ["prod", "vision"])
BIG_MODEL = "big-model"


@dataclass(frozen=True)
class Sizes:
    users: int
    experiments: int
    models: int
    versions: int
    big_model_versions: int


FULL = Sizes(users=10, experiments=100_000, models=10_000, versions=3, big_model_versions=100)
QUICK = Sizes(users=4, experiments=2_000, models=200, versions=2, big_model_versions=20)


def _state(i: int) -> ExperimentState:
    if i % 20 == 0:
        return S.ACTIVE
    if i % 20 == 1:
        return S.PAUSED
    if i % 10 == 2:
        return S.CANCELED
    if i % 50 == 3:
        return S.ERROR
    return S.COMPLETED


def _chunks(rows: list[dict[str, Any]], size: int = 10_000) -> list[list[dict[str, Any]]]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]


def _insert(conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    for chunk in _chunks(rows):
        conn.execute(sa.insert(table), chunk)


def seed(engine: Engine, sizes: Sizes, storage: Path) -> float:
    """The rows described in the module docstring; returns the seconds it took."""
    start = time.perf_counter()
    config = linear_config()
    config["checkpoint_storage"] = {"type": "shared_fs", "host_path": str(storage)}
    stored = validate_config(config).to_dict()
    hparams = linear_hparams()
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    with engine.begin() as conn:
        admin = conn.scalar(sa.select(User.id).where(User.username == "admin"))
        _insert(
            conn,
            User.__table__,
            [
                {"username": f"user{u}", "admin": False, "active": True, "created_at": t0}
                for u in range(sizes.users)
            ],
        )
        owners = [admin, *conn.scalars(sa.select(User.id).where(User.username.like("user%")))]
        experiments = []
        for i in range(sizes.experiments):
            state = _state(i)
            started = t0 + dt.timedelta(minutes=i)
            experiments.append(
                {
                    "owner_id": owners[i % len(owners)],
                    "config": stored,
                    "state": state,
                    "archived": state.terminal and i % 10 == 5,
                    "description": f"{WORDS[i % len(WORDS)]} {i}",
                    "labels": LABEL_SETS[i % len(LABEL_SETS)],
                    "notes": "",
                    "progress": None if state is S.ACTIVE else (i % 101) / 100,
                    "start_time": started,
                    "end_time": started + dt.timedelta(minutes=30) if state.terminal else None,
                }
            )
        _insert(conn, Experiment.__table__, experiments)
        exp_ids = list(conn.scalars(sa.select(Experiment.id).order_by(Experiment.id)))
        _insert(
            conn,
            Trial.__table__,
            [
                {
                    "experiment_id": exp_id,
                    "request_id": f"r{exp_id}",
                    "hparams": hparams,
                    "state": row["state"],
                    "batches_trained": 10,
                    "start_time": row["start_time"],
                }
                for exp_id, row in zip(exp_ids, experiments, strict=True)
            ],
        )
        trials = list(conn.execute(sa.select(Trial.id, Trial.experiment_id).order_by(Trial.id)))
        _insert(
            conn,
            ValidationMetrics.__table__,
            [
                {
                    "trial_id": trial_id,
                    "trial_run_id": 0,
                    "batches_trained": 10,
                    "metrics": {"validation_loss": 1.0 / (1 + trial_id % 97)},
                    "num_inputs": 12,
                    "end_time": t0,
                }
                for trial_id, _ in trials
            ],
        )
        _seed_models(conn, sizes, storage, owners, trials, t0)
    return time.perf_counter() - start


def _seed_models(
    conn: sa.Connection,
    sizes: Sizes,
    storage: Path,
    owners: list[int],
    trials: list[Any],
    t0: dt.datetime,
) -> None:
    names = [f"model-{m:05d}" for m in range(sizes.models)] + [BIG_MODEL]
    _insert(
        conn,
        Model.__table__,
        [
            {
                "name": name,
                "description": f"{WORDS[m % len(WORDS)]} model {m}",
                "metadata": {"framework": "fake"},
                "labels": MODEL_LABELS[m % len(MODEL_LABELS)],
                "notes": "",
                "owner_id": owners[m % len(owners)],
                "creation_time": t0 + dt.timedelta(seconds=m),
                # Updated in an order unlike creation, so the sort has work to do.
                "last_updated_time": t0 + dt.timedelta(seconds=(m * 7919) % len(names)),
            }
            for m, name in enumerate(names)
        ],
    )
    model_ids = list(conn.scalars(sa.select(Model.id).order_by(Model.id)))
    counts = [sizes.versions] * sizes.models + [sizes.big_model_versions]
    checkpoints: list[dict[str, Any]] = []
    versions: list[dict[str, Any]] = []
    for model_id, count in zip(model_ids, counts, strict=True):
        for version in range(1, count + 1):
            trial_id, experiment_id = trials[len(checkpoints) % len(trials)]
            ckpt = str(uuid.uuid4())
            checkpoints.append(checkpoint_row(ckpt, trial_id, experiment_id, storage, t0))
            versions.append(
                {
                    "model_id": model_id,
                    "version": version,
                    "checkpoint_uuid": ckpt,
                    "name": "",
                    "comment": "",
                    "notes": "",
                    "labels": [],
                    "metadata": {},
                    "creation_time": t0,
                    "last_updated_time": t0,
                }
            )
    _insert(conn, Checkpoint.__table__, checkpoints)
    _insert(conn, ModelVersion.__table__, versions)


# -- the listings -----------------------------------------------------------------------------

PAGE = {"offset": 0, "limit": 50}
EXPERIMENT_SORTS = (
    "ID",
    "DESCRIPTION",
    "START_TIME",
    "END_TIME",
    "STATE",
    "NUM_TRIALS",
    "PROGRESS",
    "USER",
    "NAME",
)


def listings() -> dict[str, tuple[str, dict[str, Any]]]:
    """Name -> (path, query) of every listing timed."""
    newest = {**PAGE, "sort_by": "SORT_BY_ID", "order_by": "ORDER_BY_DESC"}
    out: dict[str, tuple[str, dict[str, Any]]] = {
        "experiments: default page (id desc)": ("/api/v1/experiments", newest),
        "experiments: states=ACTIVE": ("/api/v1/experiments", {**newest, "states": "STATE_ACTIVE"}),
        "experiments: states=ERROR": ("/api/v1/experiments", {**newest, "states": "STATE_ERROR"}),
        "experiments: labels=team-b": ("/api/v1/experiments", {**newest, "labels": "team-b"}),
        "experiments: users=user3": ("/api/v1/experiments", {**newest, "users": "user3"}),
        "experiments: name=bert": ("/api/v1/experiments", {**newest, "name": "bert"}),
        "experiments: archived=false": ("/api/v1/experiments", {**newest, "archived": "false"}),
        "experiments: archived=true": ("/api/v1/experiments", {**newest, "archived": "true"}),
    }
    for key in EXPERIMENT_SORTS:
        out[f"experiments: sort {key} desc"] = (
            "/api/v1/experiments",
            {**PAGE, "sort_by": f"SORT_BY_{key}", "order_by": "ORDER_BY_DESC"},
        )
    ui = {**newest, "archived": "false"}  # the UI's experiment list as it opens
    out["ui experiments: first page"] = ("/api/v1/ui/experiments", ui)
    out["ui experiments: name=bert"] = ("/api/v1/ui/experiments", {**ui, "name": "bert"})
    out["ui experiments: sort BEST_METRIC"] = (
        "/api/v1/ui/experiments",
        {**ui, "sort_by": "SORT_BY_BEST_METRIC", "order_by": "ORDER_BY_ASC"},
    )
    updated = {"sort_by": "SORT_BY_LAST_UPDATED_TIME", "order_by": "ORDER_BY_DESC", "limit": 100}
    out["models: last updated, limit 100"] = ("/api/v1/models", updated)
    out["models: name=model-0042"] = ("/api/v1/models", {**updated, "name": "model-0042"})
    out["models: labels=vision"] = ("/api/v1/models", {**updated, "labels": "vision"})
    out["models: UI list (all, by last updated)"] = (
        "/api/v1/models",
        {"sort_by": "SORT_BY_LAST_UPDATED_TIME", "order_by": "ORDER_BY_DESC"},
    )
    out["model versions: a model's 3"] = ("/api/v1/models/model-00042/versions", {})
    out[f"model versions: {BIG_MODEL}"] = (f"/api/v1/models/{BIG_MODEL}/versions", {})
    return out


def _rows(answer: Any) -> int:
    if isinstance(answer, int):  # an error status
        return 0
    for key in ("experiments", "models", "modelVersions"):
        if key in answer:
            return len(answer[key])
    raise RuntimeError(f"unexpected answer: {sorted(answer)}")


def time_listing(get: Callable[[], dict[str, Any]], repeats: int, budget: float) -> dict[str, Any]:
    """``repeats`` timed calls, or fewer (at least 3) once they have taken ``budget`` s; a
    listing that fails is reported with its status instead."""
    for _ in range(2):  # untimed: the route's first call, the database's caches
        answer = get()
        if isinstance(answer, int):
            return {"error": answer}
        rows = _rows(answer)
    latencies: list[float] = []
    while len(latencies) < repeats and (len(latencies) < 3 or sum(latencies) < budget):
        t0 = time.perf_counter()
        get()
        latencies.append(time.perf_counter() - t0)
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return {
        "rows": rows,
        "calls": len(latencies),
        "p50_ms": 1e3 * statistics.median(latencies),
        "p99_ms": 1e3 * cuts[98],
    }


def run_database(
    kind: str, sizes: Sizes, pg_url: str, repeats: int, budget: float
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="detlite-bench-") as tmp_dir:
        tmp = Path(tmp_dir)
        with database(kind, tmp, pg_url) as url:
            # No scheduler: the seeded ACTIVE trials are rows to list, not work to run.
            settings = Settings(
                db_url=url, storage_path=tmp / "checkpoints", port=0, scheduler=False
            )
            app = create_app(settings)
            with serve(app) as master_url:
                state: MasterState = app.state.master
                seconds = seed(state.engine, sizes, settings.storage_path)
                if kind == "postgres":
                    with state.engine.connect().execution_options(
                        isolation_level="AUTOCOMMIT"
                    ) as conn:
                        # What autovacuum does soon after a bulk insert: statistics, and the
                        # visibility map that index-only scans need.
                        conn.execute(sa.text("VACUUM ANALYZE"))
                token = httpx.post(
                    f"{master_url}/api/v1/auth/login", json={"username": "admin", "password": ""}
                ).json()["token"]
                headers = {"Authorization": f"Bearer {token}"}
                results: dict[str, Any] = {}
                with httpx.Client(base_url=master_url, headers=headers, timeout=300) as client:
                    for name, (path, params) in listings().items():

                        def get(path: str = path, params: dict[str, Any] = params) -> Any:
                            response = client.get(path, params=params)
                            if response.status_code != 200:
                                return response.status_code
                            return response.json()

                        results[name] = time_listing(get, repeats, budget)
    return {"database": kind, "seed_s": seconds, "listings": results}


def print_table(result: dict[str, Any], sizes: Sizes) -> None:
    print(
        f"\n== {result['database']}: {sizes.experiments:,} experiments, {sizes.models:,} "
        f"models (seeded in {result['seed_s']:.0f} s) =="
    )
    print(f"  {'listing':<44}{'rows':>6}{'calls':>6}{'p50 ms':>10}{'p99 ms':>10}")
    for name, r in result["listings"].items():
        if "error" in r:
            print(f"  {name:<44}  failed: HTTP {r['error']}")
            continue
        figures = f"{r['rows']:>6}{r['calls']:>6}{r['p50_ms']:>10.1f}{r['p99_ms']:>10.1f}"
        print(f"  {name:<44}{figures}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="small counts (seconds)")
    parser.add_argument("--databases", default="sqlite,postgres", help="comma-separated")
    parser.add_argument("--postgres-url", default=DEFAULT_PG_URL, help="an admin URL")
    parser.add_argument("--repeats", type=int, default=30, help="timed calls per listing")
    parser.add_argument(
        "--budget", type=float, default=15.0, help="seconds of timed calls per listing at most"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    kinds, skipped = databases_to_measure(parser, args.databases, args.postgres_url)
    results = []
    for kind in kinds:
        results.append(run_database(kind, sizes, args.postgres_url, args.repeats, args.budget))
        if not args.json:  # each database as soon as it is measured
            print_table(results[-1], sizes)
            sys.stdout.flush()
    if args.json:
        report = {
            "sizes": asdict(sizes),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "results": results,
            "skipped": skipped,
        }
        print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
