"""How long health waits while the master checks one large report.

A JSON body within its cap can hold millions of values, and the master checks every one
(``detlite.master.schemas._values``). FastAPI did that in the event loop, so one 15 MiB
report of eight million zeros kept health from answering for seconds; the master now
parses and validates bodies on a worker thread (``detlite.master._bodies``). The test
suite checks where that work runs, never how long it takes
(``tests/robustness/test_redteam.py``); this script shows the times.

It runs a master on SQLite in a temporary directory (``create_app`` under uvicorn in a
thread of this process, as ``bench/login_timing.py`` does), makes a trial, then sends
one training report of ``--values`` zeros while a second thread asks for
``/api/v1/health`` every 50 ms, and prints the report's time and the longest health
answer.

    python bench/loop_block.py [--values 8000000]
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import httpx

from tests.master.conftest import live_master, make_settings
from tests.master.factories import make_experiment, make_trial


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--values", type=int, default=8_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="detlite-bench-") as tmp:
        settings = make_settings(f"sqlite:///{Path(tmp) / 'master.db'}", Path(tmp))
        with live_master(settings) as master:
            with master.db() as db:
                trial_id = make_trial(db, make_experiment(db, owner="determined")).id
            zeros = ",".join(["0"] * args.values)
            body = f'{{"trainingMetrics": {{"stepsCompleted": 1, "metrics": {{"x": [{zeros}]}}}}}}'
            waits: list[float] = []
            done = threading.Event()

            def poll() -> None:
                with httpx.Client(base_url=master.url, timeout=120) as client:
                    while not done.is_set():
                        started = time.monotonic()
                        client.get("/api/v1/health")
                        waits.append(time.monotonic() - started)
                        time.sleep(0.05)

            poller = threading.Thread(target=poll)
            poller.start()
            time.sleep(0.5)
            started = time.monotonic()
            with master.client(master.login("determined")) as client:
                client.timeout = httpx.Timeout(300)
                answer = client.post(
                    f"/api/v1/trials/{trial_id}/training_metrics",
                    content=body,
                    headers={"Content-Type": "application/json"},
                )
            took = time.monotonic() - started
            time.sleep(0.5)
            done.set()
            poller.join()
    print(f"report of {len(body) / 2**20:.1f} MiB: {answer.status_code} in {took:.2f} s")
    print(f"health: {len(waits)} answers, the longest in {max(waits):.2f} s")


if __name__ == "__main__":
    main()
