"""Many workers reporting metrics at once: is every point stored, and how long does a report take?

For each database (SQLite, PostgreSQL) this starts a real master process (``create_app``
under uvicorn, its scheduler off, on a free loopback port), inserts one experiment with one
ACTIVE trial per worker, and runs ``--workers`` workers (100 by default) for ``--seconds``
(60 by default). Each coroutine is one worker: with the token of ``admin`` it posts training
metrics for its own trial, ``POST /api/v1/trials/{id}/training_metrics`` with
``{"trialRunId": 0, "stepsCompleted": n, "metrics": {"loss", "accuracy"}}``, n = 1, 2, ...,
one request after the other, as a trial worker reports after each scheduling unit. A point
counts as *acknowledged* when the server answered 200. Afterwards the stored points of those
trials are counted straight from the database, and the script prints, per database: points
sent, acknowledged, stored, errors, and the p50 and p99 latency of a report.

MLflow's tracking server is the peer (``--peers mlflow``, the default where ``mlflow`` is
importable: the ``bench`` extra), measured in the same run on a database of the same kind,
made fresh for it as for the master: ``python -m mlflow server --backend-store-uri <url>
--default-artifact-root <tmp>/artifacts --workers 1`` on a free loopback port. One
experiment and one run per worker are created through its REST API, then each worker posts
``POST /api/2.0/mlflow/runs/log-metric`` with ``{"run_id", "key": "loss", "value",
"timestamp", "step": n}`` in the same closed loop, over the same client, and the points are
counted from MLflow's ``metrics`` table. Per database the two servers take turns (detlite
then MLflow, reversed every other of ``--rounds``), and each round prints detlite / MLflow
for reports/s (above 1: detlite serves more) and for p99 (below 1: detlite's is shorter).

Decisions about the peer:

- One MLflow worker (``--mlflow-workers``): detlite's master is one process, and MLflow's
  server with ``--workers 1`` is the same shape (uvicorn in one process, the Flask handlers
  on its thread pool). On 2 CPUs a second worker would take the CPU the clients and the
  database need, and MLflow's default of 4 would oversubscribe them further.
- MLflow's job runner is off (``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false``), as detlite's
  scheduler is, and neither server writes an access log. Everything else is MLflow's
  default (its connection pool of 5 + 10 against the master's 10 + 30 included).
- A detlite report carries two metrics, an MLflow log-metric one: the call that
  ``mlflow.log_metric`` makes once per step.

Every acknowledged point must be stored (``missing`` counts those that are not, on either
server); the exit status is 1 when one is missing or when a report to detlite failed (the
peer's failed reports are printed and counted, not held against the run). The clients are
coroutines of one process, each with a keep-alive connection of its own, speaking HTTP/1.1
directly (a full client such as httpx costs about a millisecond of CPU per request, which on
a small machine would measure the clients); their own cost is in the latencies. Each server
has a process of its own.

PostgreSQL runs in a database created for each measurement on ``--postgres-url``'s server
and dropped afterwards; when it cannot be reached the script says why and goes on with
SQLite.

    python bench/load.py [--workers 100] [--seconds 60] [--databases sqlite,postgres]
        [--peers mlflow|none] [--rounds 1] [--mlflow-workers 1] [--master-workers 1] [--json]

``--master-workers N`` adds, on PostgreSQL, a master of N API processes (``detlite master
--workers N``: a supervisor and N uvicorn processes on one socket) to each round, printed
as ``detlite xN`` beside the one-process master.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
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
    "count_mlflow_stored",
    "count_stored",
    "make_runs",
    "make_trials",
    "master_process",
    "mlflow_server",
    "percentile",
    "run_load",
]

DEFAULT_PG_URL = os.environ.get(
    "DETLITE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
MLFLOW_API = "/api/2.0/mlflow"

# The master, in a process of its own: create_app with the settings given as JSON.
_SERVE = """
import json, sys
import uvicorn
from detlite.master import Settings, create_app
settings = Settings(**json.loads(sys.argv[1]))
if settings.workers > 1:  # detlite master --workers N: a supervisor and N API processes
    from detlite.master.server import serve
    serve(settings, log_level="warning", on_ready=lambda url: None)
else:
    uvicorn.run(create_app(settings), host="127.0.0.1", port=settings.port, log_level="warning")
"""

# A worker's request for step n: path, headers, body.
Request = tuple[str, dict[str, str], bytes]
RequestFor = Callable[[int], Request]
_JSON = {"Content-Type": "application/json"}


@dataclass
class WorkerLog:
    """What one worker sent and what the server acknowledged."""

    series: int | str  # the detlite trial id or the MLflow run id the worker reports to
    sent: int = 0
    acknowledged: list[int] = field(default_factory=list)  # steps answered with 200
    errors: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)  # seconds, acknowledged reports


@dataclass
class LoadResult:
    target: str  # "detlite" or "mlflow"
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
    # On detlite's result: MLflow's in the same round, and detlite / MLflow of two figures.
    peer: LoadResult | None = None
    vs_peer: dict[str, float] | None = None


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by the nearest-rank method; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


@contextmanager
def _server(
    name: str, command: list[str], health: str, log_path: Path, env: dict[str, str]
) -> Iterator[None]:
    """Run ``command`` in a session of its own, wait until ``health`` answers 200, and stop
    the whole session afterwards (``mlflow server`` runs uvicorn in a child process)."""
    log = open(log_path, "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        command,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, **env},
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}: see {log_path}")
            try:
                if httpx.get(health, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} did not start within 120 s: see {log_path}")
            time.sleep(0.1)
        yield
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@contextmanager
def master_process(db_url: str, work: Path, workers: int = 1) -> Iterator[str]:
    """A master (scheduler off; ``workers`` API processes) in a subprocess on a free port;
    yields its URL."""
    port = free_port()
    settings = {
        "db_url": db_url,
        "port": port,
        "storage_path": str(work / "checkpoints"),
        "scheduler": False,
        "workers": workers,
    }
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-c", _SERVE, json.dumps(settings)]
    with _server("the master", command, f"{url}/api/v1/health", work / f"master-{port}.log", {}):
        yield url


@contextmanager
def mlflow_server(db_url: str, work: Path, workers: int = 1) -> Iterator[str]:
    """MLflow's tracking server on ``db_url`` (a SQLAlchemy URL) on a free port; its URL."""
    port = free_port()
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--workers", str(workers)]
    command += ["--backend-store-uri", db_url]
    command += ["--default-artifact-root", str(work / "artifacts")]
    command += ["--uvicorn-opts", "--no-access-log"]
    url = f"http://127.0.0.1:{port}"
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with _server("mlflow server", command, f"{url}/health", work / f"mlflow-{port}.log", env):
        yield url


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


def make_runs(url: str, count: int) -> list[str]:
    """One MLflow experiment with ``count`` runs, made through the REST API; the run ids."""
    with httpx.Client(base_url=f"{url}{MLFLOW_API}", timeout=30) as client:
        created = client.post("/experiments/create", json={"name": f"load-{uuid.uuid4().hex}"})
        experiment_id = created.raise_for_status().json()["experiment_id"]
        run_ids = []
        for _ in range(count):
            body = {"experiment_id": experiment_id, "start_time": int(time.time() * 1000)}
            run = client.post("/runs/create", json=body).raise_for_status().json()
            run_ids.append(str(run["run"]["info"]["run_id"]))
        return run_ids


def count_stored(db_url: str, trial_ids: list[int]) -> dict[int | str, set[int]]:
    """The ``stepsCompleted`` of every training metrics row of ``trial_ids``, per trial."""
    engine = master_db.create_engine(db_url)
    try:
        with engine.connect() as conn:
            query = sa.select(TrainingMetrics.trial_id, TrainingMetrics.batches_trained).where(
                TrainingMetrics.trial_id.in_(trial_ids)
            )
            stored: dict[int | str, set[int]] = {t: set() for t in trial_ids}
            for trial_id, batches in conn.execute(query):
                stored[trial_id].add(int(batches))
            return stored
    finally:
        engine.dispose()


def count_mlflow_stored(db_url: str, run_ids: list[str]) -> dict[int | str, set[int]]:
    """The steps of every ``loss`` point in MLflow's ``metrics`` table, per run."""
    metrics = sa.table("metrics", sa.column("run_uuid"), sa.column("key"), sa.column("step"))
    query = sa.select(metrics.c.run_uuid, metrics.c.step).where(
        metrics.c.key == "loss", metrics.c.run_uuid.in_(run_ids)
    )
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            stored: dict[int | str, set[int]] = {r: set() for r in run_ids}
            for run_id, step in conn.execute(query):
                stored[run_id].add(int(step))
            return stored
    finally:
        engine.dispose()


def _login(url: str, username: str = "admin", password: str = "") -> str:
    answer = httpx.post(
        f"{url}/api/v1/auth/login", json={"username": username, "password": password}, timeout=30
    )
    answer.raise_for_status()
    return str(answer.json()["token"])


def _detlite_report(headers: dict[str, str], trial_id: int, step: int) -> Request:
    body = {
        "trainingMetrics": {
            "trialRunId": 0,
            "stepsCompleted": step,
            "metrics": {"loss": 1.0 / step, "accuracy": 1.0 - 1.0 / (step + 1)},
        }
    }
    return f"/api/v1/trials/{trial_id}/training_metrics", headers, json.dumps(body).encode()


def _mlflow_log_metric(run_id: str, step: int) -> Request:
    body = {
        "run_id": run_id,
        "key": "loss",
        "value": 1.0 / step,
        "timestamp": int(time.time() * 1000),
        "step": step,
    }
    return f"{MLFLOW_API}/runs/log-metric", _JSON, json.dumps(body).encode()


class _Connection:
    """One keep-alive HTTP/1.1 connection, spoken directly: the load comes from one process,
    and a full HTTP client's own cost per request (httpx: about a millisecond of CPU) would
    make the clients, not the server, the bottleneck on a small machine."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def post(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        if self._streams is None:
            self._streams = await asyncio.open_connection(self.host, self.port)
        reader, writer = self._streams
        head = [f"POST {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        head += [f"{name}: {value}" for name, value in headers.items()]
        head.append(f"Content-Length: {len(body)}")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        try:
            status_line = await reader.readline()
            status = int(status_line.split()[1])
            length, close = 0, False
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
                elif name.strip().lower() == "connection" and "close" in value.lower():
                    close = True
            answer = await reader.readexactly(length)
        except (OSError, ValueError, IndexError, asyncio.IncompleteReadError):
            self.close()
            raise
        if close:
            self.close()
        return status, answer

    def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None


async def _worker(
    url: str, request_for: RequestFor, log: WorkerLog, start: asyncio.Event, stop_at: list[float]
) -> None:
    parsed = httpx.URL(url)
    connection = _Connection(parsed.host, parsed.port or 80)
    await start.wait()
    step = 0
    try:
        while time.monotonic() < stop_at[0]:
            step += 1
            log.sent += 1
            began = time.perf_counter()
            try:
                status, answer = await connection.post(*request_for(step))
            except (OSError, ValueError, IndexError, asyncio.IncompleteReadError) as exc:
                log.errors.append(f"step {step}: {type(exc).__name__}: {exc}")
                continue
            if status == 200:
                log.latencies.append(time.perf_counter() - began)
                log.acknowledged.append(step)
            else:
                log.errors.append(f"step {step}: {status} {answer[:200]!r}")
    finally:
        connection.close()


def run_load(url: str, requests: dict[int | str, RequestFor], seconds: float) -> list[WorkerLog]:
    """One worker per series (``requests`` builds its request for each step), all reporting
    for ``seconds``; what each one saw. The workers are coroutines of one event loop, each a
    closed loop on its own connection."""
    logs = [WorkerLog(series) for series in requests]

    async def main() -> None:
        start = asyncio.Event()
        stop_at = [0.0]
        tasks = [
            asyncio.create_task(_worker(url, requests[log.series], log, start, stop_at))
            for log in logs
        ]
        await asyncio.sleep(0)  # every worker waits at the start line
        stop_at[0] = time.monotonic() + seconds
        start.set()
        await asyncio.gather(*tasks)

    asyncio.run(main())
    return logs


def summarize(
    target: str,
    database: str,
    seconds: float,
    logs: list[WorkerLog],
    stored: dict[int | str, set[int]],
) -> LoadResult:
    latencies = [x for log in logs for x in log.latencies]
    errors = [e for log in logs for e in log.errors]
    acknowledged = sum(len(log.acknowledged) for log in logs)
    return LoadResult(
        target=target,
        database=database,
        workers=len(logs),
        seconds=seconds,
        sent=sum(log.sent for log in logs),
        acknowledged=acknowledged,
        stored=sum(len(steps) for steps in stored.values()),
        missing=sum(len(set(log.acknowledged) - stored[log.series]) for log in logs),
        errors=len(errors),
        p50_ms=round(percentile(latencies, 50) * 1000, 2),
        p99_ms=round(percentile(latencies, 99) * 1000, 2),
        reports_per_s=round(acknowledged / seconds, 1),
        first_errors=errors[:5],
    )


@contextmanager
def _database(kind: str, work: Path, pg_url: str) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{work / 'load.db'}"
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


def _load_detlite(
    db_url: str, work: Path, workers: int, seconds: float, processes: int = 1
) -> tuple[list[WorkerLog], dict[int | str, set[int]]]:
    with master_process(db_url, work, processes) as url:
        trial_ids = make_trials(db_url, workers)
        headers = {"Authorization": f"Bearer {_login(url)}", **_JSON}
        requests: dict[int | str, RequestFor] = {
            t: functools.partial(_detlite_report, headers, t) for t in trial_ids
        }
        logs = run_load(url, requests, seconds)
        return logs, count_stored(db_url, trial_ids)


def _load_mlflow(
    db_url: str, work: Path, workers: int, seconds: float, server_workers: int
) -> tuple[list[WorkerLog], dict[int | str, set[int]]]:
    # The same database, in the driver detlite uses (psycopg 3; MLflow's default is psycopg2).
    url = master_db.normalize_url(db_url).render_as_string(hide_password=False)
    with mlflow_server(url, work, server_workers) as server:
        run_ids = make_runs(server, workers)
        requests: dict[int | str, RequestFor] = {
            r: functools.partial(_mlflow_log_metric, r) for r in run_ids
        }
        logs = run_load(server, requests, seconds)
        return logs, count_mlflow_stored(url, run_ids)


def measure(target: str, kind: str, args: argparse.Namespace) -> LoadResult:
    """One target (``detlite``, ``detlite xN``: N API processes, or ``mlflow``) on a fresh
    database of ``kind``."""
    with tempfile.TemporaryDirectory(prefix=f"detlite-load-{target}-") as tmp:
        work = Path(tmp)
        with _database(kind, work, args.postgres_url) as db_url:
            if target == "detlite":
                logs, stored = _load_detlite(db_url, work, args.workers, args.seconds)
            elif target.startswith("detlite x"):
                processes = int(target.removeprefix("detlite x"))
                logs, stored = _load_detlite(db_url, work, args.workers, args.seconds, processes)
            else:
                logs, stored = _load_mlflow(
                    db_url, work, args.workers, args.seconds, args.mlflow_workers
                )
            return summarize(target, kind, args.seconds, logs, stored)


def _ratio(ours: float, theirs: float) -> float:
    return round(ours / theirs, 2) if theirs else float("inf")


def _line(r: LoadResult) -> str:
    return (
        f"{r.database} {r.target}: {r.workers} workers x {r.seconds:g} s: sent {r.sent}, "
        f"acknowledged {r.acknowledged}, stored {r.stored}, missing {r.missing}, "
        f"errors {r.errors}; p50 {r.p50_ms} ms, p99 {r.p99_ms} ms, {r.reports_per_s} reports/s"
    )


def choose_peers(parser: argparse.ArgumentParser, peers: str | None) -> str:
    """``--peers``: MLflow's server where it is installed unless ``none`` was asked for."""
    has_mlflow = importlib.util.find_spec("mlflow") is not None
    if peers == "mlflow" and not has_mlflow:
        parser.error("--peers mlflow: mlflow is not installed (pip install 'detlite[bench]')")
    if peers is None:
        peers = "mlflow" if has_mlflow else "none"
        if not has_mlflow:
            print("mlflow is not installed: measuring detlite alone", file=sys.stderr)
    return peers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=100, help="concurrent workers (100)")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long they report (60)")
    parser.add_argument("--databases", default="sqlite,postgres", help="sqlite,postgres")
    parser.add_argument("--postgres-url", default=DEFAULT_PG_URL)
    parser.add_argument(
        "--peers", choices=("mlflow", "none"), help="mlflow where it is installed, else none"
    )
    parser.add_argument("--rounds", type=int, default=1, help="turns per database (1)")
    parser.add_argument("--mlflow-workers", type=int, default=1, help="MLflow's server (1)")
    parser.add_argument(
        "--master-workers",
        type=int,
        default=1,
        help="on PostgreSQL, also a master of this many API processes (detlite master "
        "--workers), in the same rounds (1: none)",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    args.peers = choose_peers(parser, args.peers)
    kinds = [d.strip() for d in args.databases.split(",") if d.strip()]
    for kind in kinds:
        if kind not in ("sqlite", "postgres"):
            parser.error(f"--databases: expected sqlite and/or postgres, got {kind!r}")
    if "postgres" in kinds and (problem := _postgres_problem(args.postgres_url)):
        print(f"skipping postgres: {problem}", file=sys.stderr)
        kinds.remove("postgres")
    results: list[LoadResult] = []
    for kind in kinds:
        targets = ["detlite"] + (["mlflow"] if args.peers == "mlflow" else [])
        if kind == "postgres" and args.master_workers > 1:
            targets.insert(1, f"detlite x{args.master_workers}")
        for round_ in range(args.rounds):
            # Reversed every other round, so that neither server always goes first.
            order = targets if round_ % 2 == 0 else targets[::-1]
            measured = {target: measure(target, kind, args) for target in order}
            for target, other in measured.items():
                if target.startswith("detlite x"):
                    results.append(other)
            ours = measured["detlite"]
            if (peer := measured.get("mlflow")) is not None:
                ours.peer = peer
                ours.vs_peer = {
                    "reports_per_s": _ratio(ours.reports_per_s, peer.reports_per_s),
                    "p99_ms": _ratio(ours.p99_ms, peer.p99_ms),
                }
            results.append(ours)
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=2))
    else:
        for r in results:
            for one in filter(None, (r, r.peer)):
                print(_line(one))
                for error in one.first_errors:
                    print(f"  error: {error}")
            if r.vs_peer:
                print(
                    f"{r.database} detlite / MLflow: reports/s {r.vs_peer['reports_per_s']}x "
                    f"(above 1: detlite serves more), p99 {r.vs_peer['p99_ms']}x "
                    "(below 1: detlite's is shorter)"
                )
    lost = any(r.missing or r.errors or (r.peer and r.peer.missing) for r in results)
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
