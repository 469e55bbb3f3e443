"""What placing trials on Ray costs: create -> first trained batch, Ray against local, in one run.

One run starts a Ray head of its own (``ray start --head --block`` on 127.0.0.1, its own
ports and temp directory; at the end exactly its process tree is stopped, never ``ray
stop``), then two masters one after the other, each ``detlite master`` in a subprocess on a
SQLite database in a temporary data directory (the user's own is never touched):

- ``--resource-manager local``: workers are process groups on this host;
- ``--resource-manager ray --ray-address <head>``: workers are Ray actors on the head.

Against each, experiments of one single-slot trial (the fake framework's ``LinearTrial``:
pure Python, so that what is timed is detlite and Ray, not a framework) are created over
HTTP one after the other; the figure is the seconds from the create request to the end of
the trial's first trained batch (the ``endTime`` of its first training-metrics report,
``scheduling_unit: 1``). The first experiment on each master is ``cold`` (on Ray it also
pays for starting Ray worker processes); the next ones are ``warm`` (median). Then one
search on each: ``--search-trials`` single-slot trials of 2 batches (16; a random search,
2 at a time), from the create request to the experiment's COMPLETED state. On Ray, a
trial's actor serves its experiment's next trial, forking it from a warm pool parent
(``detlite.ray._driver``); on the local manager, the warm pool forks them. The ratio
``ray / local`` is printed for each figure.

python bench/ray_launch.py             # 3 warm repeats, a search of 16 trials
python bench/ray_launch.py --repeats 1 --search-trials 4   # a smoke run
python bench/ray_launch.py --json      # everything as JSON
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    "DETLITE_EXTRA_PLUGINS": "detlite.testing:FakeFrameworkPlugin",
}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{log.name} did not come up:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)


def _tree(root: int) -> dict[int, str]:
    """Every process below ``root`` (from /proc): pid -> start time."""
    parents: dict[int, list[int]] = {}
    started: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            parents.setdefault(int(fields[1]), []).append(int(entry.name))
            started[int(entry.name)] = fields[19]
    found: dict[int, str] = {}
    queue = [root]
    while queue:
        for child in parents.get(queue.pop(), []):
            found[child] = started[child]
            queue.append(child)
    return found


def _end(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process, then SIGKILL what is left of the tree it had started (each pid
    only while its start time says it is the same process)."""
    tree = _tree(proc.pid)
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    time.sleep(2)
    for pid, start in tree.items():
        with contextlib.suppress(OSError, IndexError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            if fields[19] == start and fields[0] != "Z":
                os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def ray_head(base: Path, cpus: int) -> Iterator[str]:
    temp = Path(tempfile.mkdtemp(prefix="dlrayb-", dir="/tmp"))  # short: unix socket paths
    port = _free_port()
    flags = [
        f"--{name}={_free_port()}"
        for name in (
            "node-manager-port",
            "object-manager-port",
            "ray-client-server-port",
            "dashboard-agent-grpc-port",
            "dashboard-agent-listen-port",
            "metrics-export-port",
            "runtime-env-agent-port",
        )
    ]
    log = base / "ray-head.log"
    command = [
        str(Path(sys.executable).with_name("ray")),
        "start",
        "--head",
        "--block",
        f"--port={port}",
        "--node-ip-address=127.0.0.1",
        f"--temp-dir={temp}",
        f"--num-cpus={cpus}",
        "--num-gpus=0",
        "--include-dashboard=false",
        "--disable-usage-stats",
        *flags,
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command, env={**os.environ, **_ENV}, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        _wait_port(port, proc, log, 120)
        # The GCS port opens before the node takes drivers; `ray start` says when it does.
        deadline = time.monotonic() + 120
        while "Ray runtime started" not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the Ray head did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        _end(proc)
        shutil.rmtree(temp, ignore_errors=True)


@contextlib.contextmanager
def master(base: Path, name: str, *options: str) -> Iterator[str]:
    port = _free_port()
    data = base / name
    env = {
        **os.environ,
        **_ENV,
        "XDG_DATA_HOME": str(data / "data"),
        "XDG_CONFIG_HOME": str(data / "config"),
    }
    log = base / f"master-{name}.log"
    command = [sys.executable, "-m", "detlite", "master", f"--port={port}", "--slots=2", *options]
    with log.open("wb") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_port(port, proc, log, 120)
        yield f"http://127.0.0.1:{port}"
    finally:
        _end(proc)


def _config() -> dict[str, Any]:
    from detlite.testing import linear_config

    cfg = linear_config()
    cfg["scheduling_unit"] = 1
    cfg["searcher"] = {"name": "single", "metric": "validation_loss", "max_length": {"batches": 2}}
    return cfg


def _archive() -> str:
    from detlite.master.context_archive import pack_files

    data = pack_files([("README", "file", b"the context of bench/ray_launch.py\n", None)])
    return base64.b64encode(data).decode()


def _time_of(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def first_batches(url: str, count: int) -> list[float]:
    """Seconds from each create request to the end of its trial's first trained batch."""
    import httpx

    with httpx.Client(base_url=url, timeout=60) as api:
        token = api.post("/api/v1/auth/login", json={"username": "determined", "password": ""})
        api.headers["Authorization"] = f"Bearer {token.json()['token']}"
        figures = []
        for _ in range(count):
            started = time.time()
            created = api.post(
                "/api/v1/experiments", json={"config": _config(), "contextArchive": _archive()}
            )
            created.raise_for_status()
            exp_id = created.json()["experiment"]["id"]
            deadline = time.monotonic() + 300
            while True:
                trials = api.get(f"/api/v1/experiments/{exp_id}/trials").json()["trials"]
                rows = []
                if trials:
                    params = {"kind": "training", "limit": 1}
                    path = f"/api/v1/trials/{trials[0]['id']}/metrics"
                    rows = api.get(path, params=params).json()["metrics"]
                if rows:
                    figures.append(_time_of(rows[0]["endTime"]) - started)
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"experiment {exp_id} trained no batch in 300 s")
                time.sleep(0.02)
            # The next experiment starts on an idle master.
            while api.get(f"/api/v1/experiments/{exp_id}").json()["experiment"]["state"] not in (
                "STATE_COMPLETED",
                "STATE_ERROR",
            ):
                time.sleep(0.05)
    return figures


def search_seconds(url: str, trials: int) -> float:
    """Seconds from creating a search of ``trials`` single-slot trials to its end."""
    import httpx

    cfg = _config()
    cfg["hyperparameters"]["bench_x"] = {"type": "double", "minval": 0.0, "maxval": 1.0}
    cfg["searcher"] = {
        "name": "random",
        "metric": "validation_loss",
        "max_trials": trials,
        "max_concurrent_trials": 2,
        "max_length": {"batches": 2},
    }
    with httpx.Client(base_url=url, timeout=60) as api:
        token = api.post("/api/v1/auth/login", json={"username": "determined", "password": ""})
        api.headers["Authorization"] = f"Bearer {token.json()['token']}"
        started = time.monotonic()
        created = api.post(
            "/api/v1/experiments", json={"config": cfg, "contextArchive": _archive()}
        )
        created.raise_for_status()
        exp_id = created.json()["experiment"]["id"]
        deadline = started + 600
        while True:
            state = api.get(f"/api/v1/experiments/{exp_id}").json()["experiment"]["state"]
            if state == "STATE_COMPLETED":
                return time.monotonic() - started
            if state in ("STATE_ERROR", "STATE_CANCELED") or time.monotonic() > deadline:
                raise RuntimeError(f"the search (experiment {exp_id}) ended {state}")
            time.sleep(0.02)


def run(repeats: int, search_trials: int) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="detlite-bench-ray-"))
    results: dict[str, Any] = {}
    searches: dict[str, float] = {}
    try:
        with master(base, "local", "--resource-manager=local") as url:
            results["local"] = first_batches(url, 1 + repeats)
            searches["local"] = search_seconds(url, search_trials)
        with ray_head(base, cpus=2) as address:
            options = ("--resource-manager=ray", f"--ray-address={address}")
            with master(base, "ray", *options) as url:
                results["ray"] = first_batches(url, 1 + repeats)
                searches["ray"] = search_seconds(url, search_trials)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    summary: dict[str, Any] = {}
    for name in ("local", "ray"):
        figures = results[name]
        summary[name] = {
            "cold_s": figures[0],
            "warm_s": statistics.median(figures[1:]),
            "search_s": searches[name],
        }
    summary["ratio"] = {
        kind: summary["ray"][kind] / summary["local"][kind]
        for kind in ("cold_s", "warm_s", "search_s")
    }
    summary["search_trials"] = search_trials
    summary["raw"] = results
    summary["load_average"] = os.getloadavg()
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeats", type=int, default=3, help="warm experiments per master")
    parser.add_argument(
        "--search-trials", type=int, default=16, help="trials of the search on each master"
    )
    parser.add_argument("--json", action="store_true", help="print everything as JSON")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.search_trials < 1:
        parser.error("--search-trials must be at least 1")
    summary = run(args.repeats, args.search_trials)
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    print("create -> first trained batch, and a search's wall time (seconds)")
    print(f"{'':12}{'local':>10}{'ray':>10}{'ray/local':>12}")
    rows = (("cold_s", "cold"), ("warm_s", "warm"), ("search_s", f"search x{args.search_trials}"))
    for kind, label in rows:
        local, ray_s = summary["local"][kind], summary["ray"][kind]
        print(f"{label:12}{local:>10.2f}{ray_s:>10.2f}{summary['ratio'][kind]:>12.2f}")
    load = ", ".join(f"{x:.1f}" for x in summary["load_average"])
    print(f"load average at the end: {load}")


if __name__ == "__main__":
    main()
