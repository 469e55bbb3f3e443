"""The master's throughput over real HTTP, on SQLite and PostgreSQL.

Two measurements per database, each against a live master (``create_app`` under uvicorn in a
thread of this process, on a free loopback port), talked to through ``detlite.api.Session``
(the HTTP layer every detlite client and the trial workers use), logged in as ``admin``:

1. **Metric ingestion**: training metric points per second through the batched report,
   ``POST /api/v1/trials/{id}/metrics`` with ``{"trainingMetrics": [{"trialRunId": 0,
   "stepsCompleted": n, "metrics": {"loss": x, "acc": y}}, ...]}`` (``--batch`` points per
   request). The ceiling is a plain SQLAlchemy Core ``INSERT`` (executemany) of the same
   rows into ``training_metrics``, one transaction per batch as the API commits one per
   request, on the master's own engine (same pool, same SQLite pragmas). The two sides
   alternate batch by batch, so that noise from other processes hits both alike; each
   writes to a trial of its own (an ACTIVE one: ended trials refuse metrics).
2. **Model registry**: operations per second of create model, register a version (a
   COMPLETED checkpoint), list models sorted by last-updated time (newest first, limit 100)
   and get a model's latest version, with ``--experiments`` experiments (10,000 by default)
   in the database. Those, and a trial per experiment plus the checkpoints to register, are
   inserted beforehand with Core bulk inserts (admin-owned, one small validated config).
   Create, register and latest go through the ``detlite.experimental`` model client
   (``create_model``, ``Model.register_version``, ``Model.get_model_version(0)``); the
   listing is a plain ``Session.get`` because the client's ``get_models`` has no limit.
   MLflow's tracking server is the peer (``--peers mlflow``, the default where ``mlflow`` is
   importable: the ``bench`` extra), in the same run: ``python -m mlflow server --workers 1``
   on a fresh database of the same kind, talked to through a plain ``requests.Session``
   (the library under ``detlite.api.Session``): ``POST registered-models/create``, ``POST
   model-versions/create`` (source ``runs:/<run>/model`` of one run made beforehand), ``GET
   registered-models/search`` (``max_results=100``, ``order_by=last_updated_timestamp
   DESC``) and ``POST registered-models/get-latest-versions``, all under
   ``/api/2.0/mlflow``. The two servers take turns call by call within each operation, and
   the script prints detlite / MLflow of the ops/s (above 1: detlite is faster).

Decisions and caveats:

- Client and server share this process (and its GIL), so every figure includes the
  client's own cost (JSON encoding, ``requests``); a worker on another machine would not
  take CPU from the master. Requests are sequential: this measures latency-bound
  throughput of one client, not the server's capacity under concurrency.
- MLflow's server runs in a process of its own while detlite's master shares the client's
  (and its GIL), which favours MLflow. It has one worker, as the master is one process;
  its job runner is off (``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false``: the master's
  scheduler has nothing to do here either), and it writes no access log. Its database
  holds one experiment and one run, not ``--experiments``: none of the four operations
  scans experiments (detlite's register reads one by its key, MLflow's reads its run).
  Ingestion has no MLflow figure: its reference is the INSERT ceiling.
- PostgreSQL runs in a database created for the run on ``--postgres-url``'s server and
  dropped afterwards; when it cannot be reached the script says why and measures SQLite only.

    python bench/master_api.py [--quick] [--databases sqlite,postgres] [--peers mlflow|none]
        [--json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import importlib.util
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import load  # bench/load.py: MLflow's server and --peers (bench/ is on sys.path)
import requests
import sqlalchemy as sa
import uvicorn
from fastapi import FastAPI
from sqlalchemy.engine import Engine, make_url

from detlite.api import CheckpointState, ExperimentState, Session
from detlite.config import validate_config
from detlite.experimental._model import Model, create_model
from detlite.master import Settings, create_app
from detlite.master.db import normalize_url
from detlite.master.deps import MasterState
from detlite.master.orm import Checkpoint, Experiment, TrainingMetrics, Trial, User
from detlite.testing.fake import linear_config, linear_hparams

DEFAULT_PG_URL = os.environ.get(
    "DETLITE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
NOTES = {
    "mlflow": (
        "Registry peer: MLflow's server over HTTP (its own process, one worker); ingestion's "
        "reference is the plain Core INSERT ceiling. Client and master share one process; "
        "requests are sequential."
    ),
    "none": (
        "No peer (MLflow not measured): the only comparison is the plain Core INSERT ceiling. "
        "Client and master share one process; requests are sequential."
    ),
}
REGISTRY_OPS = (
    "create_model",
    "register_version",
    "list_models_by_updated_limit_100",
    "get_latest_version",
)
MLFLOW_API = "/api/2.0/mlflow"


@dataclass(frozen=True)
class Sizes:
    experiments: int
    points: int
    batch: int
    ops: int


FULL = Sizes(experiments=10_000, points=50_000, batch=500, ops=200)
QUICK = Sizes(experiments=1_000, points=2_000, batch=500, ops=15)


# -- the master ---------------------------------------------------------------------------


@contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    """Run ``app`` under uvicorn in a daemon thread on a free loopback port; yields its URL."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, log_level="warning", access_log=False, lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="bench-master", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the master failed to start")
        if time.monotonic() > deadline:
            raise TimeoutError("the master did not start within 60 s")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def postgres_problem(admin_url: str) -> str | None:
    """Why PostgreSQL cannot be measured, or None when it can."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install 'detlite[postgres]')"
    try:
        with psycopg.connect(_libpq(admin_url), connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"PostgreSQL at {make_url(admin_url)!r} is unreachable: {exc}"
    return None


@contextmanager
def postgres_database(admin_url: str) -> Iterator[str]:
    """A database made for this run on ``admin_url``'s server, dropped afterwards."""
    import psycopg
    from psycopg import sql

    name = f"detlite_bench_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(_libpq(admin_url), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(_libpq(admin_url), autocommit=True) as conn:
            drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
            conn.execute(drop.format(sql.Identifier(name)))


@contextmanager
def database(kind: str, tmp: Path, pg_url: str) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{tmp / 'master.db'}"
    else:
        with postgres_database(pg_url) as url:
            yield url


@contextmanager
def mlflow_server(kind: str, tmp: Path, pg_url: str) -> Iterator[str]:
    """MLflow's tracking server (one worker) on a fresh database of ``kind``; its URL."""
    work = tmp / "mlflow"
    work.mkdir()
    with database(kind, work, pg_url) as db_url:
        # psycopg 3 for PostgreSQL, as the master uses (MLflow would ask for psycopg2).
        url = normalize_url(db_url).render_as_string(False)
        with load.mlflow_server(url, work) as server:
            yield server


def login(url: str) -> Session:
    response = httpx.post(
        f"{url}/api/v1/auth/login", json={"username": "admin", "password": ""}, timeout=30
    )
    response.raise_for_status()
    return Session(url, token=response.json()["token"], user="admin", retries=0)


# -- seeding ------------------------------------------------------------------------------


def checkpoint_row(
    ckpt: str, trial_id: int, experiment_id: int, storage: Path, when: dt.datetime
) -> dict[str, Any]:
    """A COMPLETED checkpoint's row, as the seeders insert it (no file behind it)."""
    return {
        "uuid": ckpt,
        "trial_id": trial_id,
        "experiment_id": experiment_id,
        "batches_trained": 10,
        "state": CheckpointState.COMPLETED,
        "files": {"state.json": {"size": 10, "sha256": "0" * 64}},
        "metadata": {"bench": True},
        "framework": "fake-1.0",
        "format": "fake-json",
        "storage_id": f"shared_fs:{storage}",
        "start_time": when,
        "end_time": when,
    }


@dataclass
class Seeded:
    api_trial: int
    plain_trial: int
    checkpoints: list[str]
    seconds: float


def seed(engine: Engine, sizes: Sizes, storage: Path) -> Seeded:
    """Experiments (one trial each), two ACTIVE trials for metrics, COMPLETED checkpoints."""
    start = time.perf_counter()
    config = linear_config()
    config["checkpoint_storage"] = {"type": "shared_fs", "host_path": str(storage)}
    stored = validate_config(config).to_dict()
    hparams = linear_hparams()
    now = dt.datetime.now(dt.timezone.utc)
    n = sizes.experiments
    with engine.begin() as conn:
        admin = conn.scalar(sa.select(User.id).where(User.username == "admin"))
        conn.execute(
            sa.insert(Experiment.__table__),
            [
                {
                    "owner_id": admin,
                    "config": stored,
                    "state": ExperimentState.COMPLETED,
                    "description": f"bench {i}",
                    "start_time": now,
                    "end_time": now,
                }
                for i in range(n)
            ],
        )
        exp_ids = list(conn.scalars(sa.select(Experiment.id).order_by(Experiment.id)))
        # The two metrics trials stay ACTIVE (an ended trial refuses metrics with 409).
        states = [ExperimentState.ACTIVE] * 2 + [ExperimentState.COMPLETED] * (n - 2)
        conn.execute(
            sa.insert(Trial.__table__),
            [
                {
                    "experiment_id": exp_id,
                    "request_id": f"r{exp_id}",
                    "hparams": hparams,
                    "state": state,
                    "batches_trained": 0 if state is ExperimentState.ACTIVE else 10,
                    "start_time": now,
                }
                for exp_id, state in zip(exp_ids, states, strict=True)
            ],
        )
        trials = list(
            conn.execute(sa.select(Trial.id, Trial.experiment_id).order_by(Trial.id)).all()
        )
        completed = trials[2:]
        uuids = [str(uuid.uuid4()) for _ in range(sizes.ops)]
        conn.execute(
            sa.insert(Checkpoint.__table__),
            [
                checkpoint_row(ckpt, *completed[i % len(completed)], storage, now)
                for i, ckpt in enumerate(uuids)
            ],
        )
    return Seeded(trials[0].id, trials[1].id, uuids, time.perf_counter() - start)


# -- measurements -------------------------------------------------------------------------


def _points(start: int, count: int) -> list[dict[str, Any]]:
    return [
        {
            "trialRunId": 0,
            "stepsCompleted": step,
            "metrics": {"loss": 1.0 / step, "acc": 1.0 - 1.0 / step},
        }
        for step in range(start, start + count)
    ]


def bench_metrics(session: Session, engine: Engine, seeded: Seeded, sizes: Sizes) -> dict[str, Any]:
    """Points/s through the API and through a plain executemany, alternating batch by batch."""
    table = TrainingMetrics.__table__
    insert = sa.insert(table)
    path = f"/api/v1/trials/{seeded.api_trial}/metrics"

    def api(points: list[dict[str, Any]]) -> None:
        answer = session.post(path, json={"trainingMetrics": points})
        if answer["training"] != len(points):
            raise RuntimeError(f"the master stored {answer['training']} of {len(points)}")

    def plain(points: list[dict[str, Any]]) -> None:
        now = dt.datetime.now(dt.timezone.utc)
        rows = [
            {
                "trial_id": seeded.plain_trial,
                "trial_run_id": p["trialRunId"],
                "batches_trained": p["stepsCompleted"],
                "metrics": p["metrics"],
                "end_time": now,
            }
            for p in points
        ]
        with engine.begin() as conn:
            conn.execute(insert, rows)

    # Warm-up: a first batch on each side (connections, caches), not timed.
    step = 1
    api(_points(step, sizes.batch))
    plain(_points(step, sizes.batch))
    step += sizes.batch
    times: dict[str, list[float]] = {"api": [], "plain": []}
    sides: list[tuple[str, Callable[[list[dict[str, Any]]], None]]] = [
        ("api", api),
        ("plain", plain),
    ]
    batches = max(1, sizes.points // sizes.batch)
    for i in range(batches):
        points = _points(step, sizes.batch)
        step += sizes.batch
        for name, run in sides if i % 2 == 0 else reversed(sides):
            t0 = time.perf_counter()
            run(points)
            times[name].append(time.perf_counter() - t0)
    with engine.connect() as conn:
        counts = {
            name: conn.scalar(
                sa.select(sa.func.count()).select_from(table).where(table.c.trial_id == trial)
            )
            for name, trial in (("api", seeded.api_trial), ("plain", seeded.plain_trial))
        }
    stored = batches * sizes.batch + sizes.batch
    if counts != {"api": stored, "plain": stored}:
        raise RuntimeError(f"expected {stored} rows per side, found {counts}")
    points = batches * sizes.batch
    api_rate = points / sum(times["api"])
    plain_rate = points / sum(times["plain"])
    return {
        "points": points,
        "batch": sizes.batch,
        "api_points_per_s": api_rate,
        "plain_points_per_s": plain_rate,
        "ratio": api_rate / plain_rate,
        # From the median batch: robust to a few stalled batches (other load, autovacuum).
        "ratio_of_medians": statistics.median(times["plain"]) / statistics.median(times["api"]),
        "api_batch_ms_median": 1e3 * statistics.median(times["api"]),
        "plain_batch_ms_median": 1e3 * statistics.median(times["plain"]),
    }


Ops = dict[str, Callable[[int], object]]  # operation name -> its i-th call


def detlite_registry(session: Session, seeded: Seeded) -> Ops:
    """The four registry operations through detlite's model client."""
    models: list[Model] = []
    prefix = f"bench-{uuid.uuid4().hex[:6]}"
    create_model(session, f"{prefix}-warmup")  # the first request of a route is not timed

    def create(i: int) -> None:
        models.append(create_model(session, f"{prefix}-{i}", description="benchmark model"))

    def register(i: int) -> None:
        models[i].register_version(seeded.checkpoints[i])

    def list_models(i: int) -> None:
        params = {"sort_by": "SORT_BY_LAST_UPDATED_TIME", "order_by": "ORDER_BY_DESC"}
        answer = session.get("/api/v1/models", params={**params, "limit": 100})
        if not answer["models"]:
            raise RuntimeError("the listing is empty")

    def latest(i: int) -> None:
        found = models[i].get_model_version(0)
        if found is None or found.version != 1:
            raise RuntimeError(f"model {models[i].name}: latest version is {found!r}")

    return dict(zip(REGISTRY_OPS, (create, register, list_models, latest), strict=True))


def mlflow_registry(url: str) -> Ops:
    """The same four operations through MLflow's REST API, over a plain requests.Session."""
    http = requests.Session()

    def call(method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        answer = http.request(method, f"{url}{MLFLOW_API}{path}", timeout=60, **kwargs)
        if not answer.ok:
            raise RuntimeError(f"MLflow: {method} {path}: {answer.status_code} {answer.text}")
        return dict(answer.json())

    experiment = call("POST", "/experiments/create", json={"name": "bench"})["experiment_id"]
    run = call("POST", "/runs/create", json={"experiment_id": experiment})["run"]
    run_id = run["info"]["run_id"]
    prefix = f"bench-{uuid.uuid4().hex[:6]}"
    call("POST", "/registered-models/create", json={"name": f"{prefix}-warmup"})  # untimed

    def create(i: int) -> None:
        body = {"name": f"{prefix}-{i}", "description": "benchmark model"}
        call("POST", "/registered-models/create", json=body)

    def register(i: int) -> None:
        body = {"name": f"{prefix}-{i}", "source": f"runs:/{run_id}/model", "run_id": run_id}
        call("POST", "/model-versions/create", json=body)

    def list_models(i: int) -> None:
        params = {"max_results": 100, "order_by": "last_updated_timestamp DESC"}
        if not call("GET", "/registered-models/search", params=params)["registered_models"]:
            raise RuntimeError("the listing is empty")

    def latest(i: int) -> None:
        body = {"name": f"{prefix}-{i}"}
        found = call("POST", "/registered-models/get-latest-versions", json=body)
        versions = [v["version"] for v in found.get("model_versions", [])]
        if versions != ["1"]:
            raise RuntimeError(f"model {prefix}-{i}: latest versions are {versions!r}")

    return dict(zip(REGISTRY_OPS, (create, register, list_models, latest), strict=True))


def bench_registry(sides: dict[str, Ops], count: int) -> dict[str, dict[str, Any]]:
    """Each operation ``count`` times on every side, the sides taking turns call by call
    (reversed every other call, as the metric batches are); ops/s and latencies per side."""
    names = list(sides)
    results: dict[str, dict[str, Any]] = {side: {} for side in names}
    for op in REGISTRY_OPS:
        latencies: dict[str, list[float]] = {side: [] for side in names}
        for i in range(count):
            for side in names if i % 2 == 0 else names[::-1]:
                t0 = time.perf_counter()
                sides[side][op](i)
                latencies[side].append(time.perf_counter() - t0)
        for side, times in latencies.items():
            results[side][op] = {
                "count": count,
                "ops_per_s": count / sum(times),
                "p50_ms": 1e3 * statistics.median(times),
                "max_ms": 1e3 * max(times),
            }
    return results


def run_database(kind: str, sizes: Sizes, pg_url: str, peer: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="detlite-bench-") as tmp_dir:
        tmp = Path(tmp_dir)
        with database(kind, tmp, pg_url) as url:
            settings = Settings(db_url=url, storage_path=tmp / "checkpoints", port=0)
            app = create_app(settings)
            mlflow = mlflow_server(kind, tmp, pg_url) if peer else nullcontext(None)
            with serve(app) as master_url, mlflow as mlflow_url:
                state: MasterState = app.state.master
                seeded = seed(state.engine, sizes, settings.storage_path)
                with login(master_url) as session:
                    metrics = bench_metrics(session, state.engine, seeded, sizes)
                    sides = {"detlite": detlite_registry(session, seeded)}
                    if mlflow_url is not None:
                        sides["mlflow"] = mlflow_registry(mlflow_url)
                    registry = bench_registry(sides, sizes.ops)
    result = {
        "database": kind,
        "experiments": sizes.experiments,
        "seed_s": seeded.seconds,
        "metrics": metrics,
        "registry": registry["detlite"],
        "mlflow_registry": registry.get("mlflow"),
    }
    if "mlflow" in registry:
        result["ratio_detlite_mlflow"] = {
            op: registry["detlite"][op]["ops_per_s"] / registry["mlflow"][op]["ops_per_s"]
            for op in REGISTRY_OPS
        }
    return result


# -- output -------------------------------------------------------------------------------


def print_table(result: dict[str, Any]) -> None:
    m = result["metrics"]
    print(
        f"\n== {result['database']} ({result['experiments']} experiments, seeded in "
        f"{result['seed_s']:.1f} s) =="
    )
    print(f"metric ingestion: {m['points']} points in batches of {m['batch']}")
    print(f"  {'path':<28}{'points/s':>12}{'ms/batch (median)':>20}")
    print(
        f"  {'API POST .../metrics':<28}{m['api_points_per_s']:>12,.0f}"
        f"{m['api_batch_ms_median']:>20.1f}"
    )
    print(
        f"  {'plain Core INSERT':<28}{m['plain_points_per_s']:>12,.0f}"
        f"{m['plain_batch_ms_median']:>20.1f}"
    )
    print(
        f"  ratio API / plain: {m['ratio']:.3f} (total time), "
        f"{m['ratio_of_medians']:.3f} (median batches)"
    )
    peer = result["mlflow_registry"]
    print("model registry:")
    columns = f"{'ops/s':>10}{'p50 ms':>10}{'max ms':>10}"
    if peer:
        print(f"  {'':<42}{'detlite':>30}{'MLflow server':>30}")
    print(f"  {'operation':<36}{'n':>6}{columns}" + (f"{columns}{'ratio':>8}" if peer else ""))
    for name, r in result["registry"].items():
        line = (
            f"  {name:<36}{r['count']:>6}{r['ops_per_s']:>10.1f}{r['p50_ms']:>10.2f}"
            f"{r['max_ms']:>10.1f}"
        )
        if peer:
            p = peer[name]
            line += f"{p['ops_per_s']:>10.1f}{p['p50_ms']:>10.2f}{p['max_ms']:>10.1f}"
            line += f"{result['ratio_detlite_mlflow'][name]:>8.2f}"
        print(line)
    if peer:
        print("  ratio: detlite / MLflow ops/s (above 1: detlite is faster)")


def databases_to_measure(
    parser: argparse.ArgumentParser, databases: str, postgres_url: str
) -> tuple[list[str], dict[str, str]]:
    """The databases ``--databases`` names that can be measured here, and why the others
    cannot (PostgreSQL unreachable: said on stderr, and the run goes on without it)."""
    kinds = [k.strip() for k in databases.split(",") if k.strip()]
    if set(kinds) - {"sqlite", "postgres"} or not kinds:
        parser.error(f"--databases takes sqlite and/or postgres, got {databases!r}")
    skipped: dict[str, str] = {}
    if "postgres" in kinds:
        problem = postgres_problem(postgres_url)
        if problem is not None:
            skipped["postgres"] = problem
            kinds.remove("postgres")
            print(f"postgres skipped: {problem}", file=sys.stderr)
    return kinds, skipped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="small counts (a few seconds)")
    parser.add_argument("--databases", default="sqlite,postgres", help="comma-separated")
    parser.add_argument("--postgres-url", default=DEFAULT_PG_URL, help="an admin URL")
    parser.add_argument(
        "--peers", choices=("mlflow", "none"), help="mlflow where it is installed, else none"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    args.peers = load.choose_peers(parser, args.peers)
    sizes = QUICK if args.quick else FULL
    kinds, skipped = databases_to_measure(parser, args.databases, args.postgres_url)
    peer = args.peers == "mlflow"
    results = [run_database(kind, sizes, args.postgres_url, peer) for kind in kinds]
    report = {
        "note": NOTES[args.peers],
        "mlflow": importlib.metadata.version("mlflow") if peer else None,
        "sizes": asdict(sizes),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "results": results,
        "skipped": skipped,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(NOTES[args.peers])
        for result in results:
            print_table(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
