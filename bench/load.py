"""Many workers reporting metrics at once: is every point stored, and how long does a report take?

For each database (SQLite, PostgreSQL) this starts a real master process (``create_app``
under uvicorn, its scheduler off, on a free loopback port), inserts one experiment with one
ACTIVE trial per worker, and runs ``--workers`` threads (100 by default) for ``--seconds``
(60 by default). Each thread is one worker: it logs in as ``admin`` and posts training
metrics for its own trial, ``POST /api/v1/trials/{id}/training_metrics`` with
``{"trialRunId": 0, "stepsCompleted": n, "metrics": {"loss", "accuracy"}}``, n = 1, 2, ...,
one request after the other, as a trial worker reports after each scheduling unit. A point
counts as *acknowledged* when the master answered 200. Afterwards the ``training_metrics``
rows of those trials are counted straight from the database, and the script prints, per
database: points sent, acknowledged, stored, errors, and the p50 and p99 latency of a report.

Every acknowledged point must be stored (``missing`` counts those that are not); the exit
status is 1 when one is missing or any report failed. The clients are threads of one process,
so their own cost (JSON, HTTP) is in the latencies; the master has a process of its own.

PostgreSQL runs in a database created for the run on ``--postgres-url``'s server and dropped
afterwards; when it cannot be reached the script says why and goes on with SQLite.

    python bench/load.py [--workers 100] [--seconds 60] [--databases sqlite,postgres] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from detlite.api.enums import ExperimentState
from detlite.config import validate_config
from detlite.launch import free_port
from detlite.master import db as master_db
from detlite.master.orm import Experiment, TrainingMetrics, Trial, User
from detlite.testing.fake import linear_config, linear_hparams

__all__ = [
    "LoadResult",
    "WorkerLog",
    "count_stored",
    "make_trials",
    "master_process",
    "percentile",
    "run_load",
]

DEFAULT_PG_URL = os.environ.get(
    "DETLITE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)

# The master, in a process of its own: create_app with the settings given as JSON.
_SERVE = """
import json, sys
import uvicorn
from detlite.master import Settings, create_app
settings = Settings(**json.loads(sys.argv[1]))
uvicorn.run(create_app(settings), host="127.0.0.1", port=settings.port, log_level="warning")
"""


@dataclass
class WorkerLog:
    """What one worker sent and what the master acknowledged."""

    trial_id: int
    sent: int = 0
    acknowledged: list[int] = field(default_factory=list)  # stepsCompleted answered with 200
    errors: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)  # seconds, acknowledged reports


@dataclass
class LoadResult:
    database: str
    workers: int
    seconds: float
    sent: int
    acknowledged: int
    stored: int
    missing: int  # acknowledged but not in the database: must be 0
    errors: int
    p50_ms: float
    p99_ms: float
    reports_per_s: float
    first_errors: list[str]


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by the nearest-rank method; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


@contextmanager
def master_process(db_url: str, work: Path) -> Iterator[str]:
    """A master (scheduler off) in a subprocess on a free port; yields its URL."""
    port = free_port()
    settings = {
        "db_url": db_url,
        "port": port,
        "storage_path": str(work / "checkpoints"),
        "scheduler": False,
    }
    log = open(work / f"master-{port}.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-c", _SERVE, json.dumps(settings)], stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the master exited with {proc.returncode}: see {log.name}")
            try:
                if httpx.get(f"{url}/api/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("the master did not start within 60 s")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def make_trials(db_url: str, count: int, owner: str = "admin") -> list[int]:
    """One ACTIVE experiment owned by ``owner`` with ``count`` ACTIVE trials; their ids."""
    engine = master_db.create_engine(db_url)
    try:
        with master_db.make_sessionmaker(engine)() as db:
            owner_id = db.scalar(sa.select(User.id).where(User.username == owner))
            config = validate_config(linear_config()).to_dict()
            experiment = Experiment(owner_id=owner_id, config=config, state=ExperimentState.ACTIVE)
            db.add(experiment)
            db.flush()
            trials = [
                Trial(
                    experiment_id=experiment.id,
                    request_id=uuid.uuid4().hex,
                    hparams=linear_hparams(),
                    state=ExperimentState.ACTIVE,
                )
                for _ in range(count)
            ]
            db.add_all(trials)
            db.commit()
            return [t.id for t in trials]
    finally:
        engine.dispose()


def count_stored(db_url: str, trial_ids: list[int]) -> dict[int, set[int]]:
    """The ``stepsCompleted`` of every training metrics row of ``trial_ids``, per trial."""
    engine = master_db.create_engine(db_url)
    try:
        with engine.connect() as conn:
            query = sa.select(TrainingMetrics.trial_id, TrainingMetrics.batches_trained).where(
                TrainingMetrics.trial_id.in_(trial_ids)
            )
            stored: dict[int, set[int]] = {t: set() for t in trial_ids}
            for trial_id, batches in conn.execute(query):
                stored[trial_id].add(int(batches))
            return stored
    finally:
        engine.dispose()


def _login(url: str, username: str = "admin", password: str = "") -> str:
    answer = httpx.post(
        f"{url}/api/v1/auth/login", json={"username": username, "password": password}, timeout=30
    )
    answer.raise_for_status()
    return str(answer.json()["token"])


def _worker(
    url: str, token: str, log: WorkerLog, start: threading.Barrier, stop_at: list[float]
) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    path = f"/api/v1/trials/{log.trial_id}/training_metrics"
    with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
        start.wait()
        step = 0
        while time.monotonic() < stop_at[0]:
            step += 1
            body = {
                "trainingMetrics": {
                    "trialRunId": 0,
                    "stepsCompleted": step,
                    "metrics": {"loss": 1.0 / step, "accuracy": 1.0 - 1.0 / (step + 1)},
                }
            }
            log.sent += 1
            began = time.perf_counter()
            try:
                answer = client.post(path, json=body)
            except httpx.HTTPError as exc:
                log.errors.append(f"step {step}: {type(exc).__name__}: {exc}")
                continue
            if answer.status_code == 200:
                log.latencies.append(time.perf_counter() - began)
                log.acknowledged.append(step)
            else:
                log.errors.append(f"step {step}: {answer.status_code} {answer.text[:200]}")


def run_load(url: str, trial_ids: list[int], seconds: float) -> list[WorkerLog]:
    """One worker thread per trial, all reporting for ``seconds``; what each one saw."""
    token = _login(url)
    logs = [WorkerLog(trial_id) for trial_id in trial_ids]
    stop_at = [0.0]

    def begin() -> None:  # run once, when every worker is ready: the clock starts now
        stop_at[0] = time.monotonic() + seconds

    start = threading.Barrier(len(logs), action=begin)
    threads = [
        threading.Thread(target=_worker, args=(url, token, log, start, stop_at), daemon=True)
        for log in logs
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return logs


def summarize(
    database: str, seconds: float, logs: list[WorkerLog], stored: dict[int, set[int]]
) -> LoadResult:
    latencies = [x for log in logs for x in log.latencies]
    errors = [e for log in logs for e in log.errors]
    acknowledged = sum(len(log.acknowledged) for log in logs)
    return LoadResult(
        database=database,
        workers=len(logs),
        seconds=seconds,
        sent=sum(log.sent for log in logs),
        acknowledged=acknowledged,
        stored=sum(len(steps) for steps in stored.values()),
        missing=sum(len(set(log.acknowledged) - stored[log.trial_id]) for log in logs),
        errors=len(errors),
        p50_ms=round(percentile(latencies, 50) * 1000, 2),
        p99_ms=round(percentile(latencies, 99) * 1000, 2),
        reports_per_s=round(acknowledged / seconds, 1),
        first_errors=errors[:5],
    )


@contextmanager
def _database(kind: str, work: Path, pg_url: str) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{work / 'master.db'}"
        return
    import psycopg
    from psycopg import sql

    name = f"detlite_load_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = make_url(pg_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_url(pg_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
            conn.execute(drop.format(sql.Identifier(name)))


def _postgres_problem(pg_url: str) -> str | None:
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install 'detlite[postgres]')"
    admin = make_url(pg_url).set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        with psycopg.connect(admin, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"PostgreSQL is unreachable: {exc}"
    return None


def measure(kind: str, workers: int, seconds: float, pg_url: str) -> LoadResult:
    with tempfile.TemporaryDirectory(prefix="detlite-load-") as tmp:
        work = Path(tmp)
        with _database(kind, work, pg_url) as db_url, master_process(db_url, work) as url:
            trial_ids = make_trials(db_url, workers)
            logs = run_load(url, trial_ids, seconds)
            return summarize(kind, seconds, logs, count_stored(db_url, trial_ids))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=100, help="concurrent workers (100)")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long they report (60)")
    parser.add_argument("--databases", default="sqlite,postgres", help="sqlite,postgres")
    parser.add_argument("--postgres-url", default=DEFAULT_PG_URL)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    results: list[LoadResult] = []
    for kind in [d.strip() for d in args.databases.split(",") if d.strip()]:
        if kind not in ("sqlite", "postgres"):
            parser.error(f"--databases: expected sqlite and/or postgres, got {kind!r}")
        if kind == "postgres" and (problem := _postgres_problem(args.postgres_url)):
            print(f"skipping postgres: {problem}", file=sys.stderr)
            continue
        results.append(measure(kind, args.workers, args.seconds, args.postgres_url))
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=2))
    else:
        for r in results:
            print(
                f"{r.database}: {r.workers} workers x {r.seconds:g} s: sent {r.sent}, "
                f"acknowledged {r.acknowledged}, stored {r.stored}, missing {r.missing}, "
                f"errors {r.errors}; "
                f"p50 {r.p50_ms} ms, p99 {r.p99_ms} ms, {r.reports_per_s} reports/s"
            )
            for error in r.first_errors:
                print(f"  error: {error}")
    lost = any(r.missing or r.errors for r in results)
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
