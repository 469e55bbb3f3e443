"""How long a login takes, per kind of user: the time must not tell who exists.

Issue 13 found that users with an empty password answered ``POST /api/v1/auth/login`` in
15 ms and others in 200 ms, so those users could be enumerated. Every login now does one
scrypt verification of the same cost (``detlite.master.security``); the test suite checks
that by counting derivations, never by timing (``tests/robustness/
test_accounts_and_ids.py``). This script shows the times.

It runs a master on SQLite in a temporary directory (``create_app`` under uvicorn in a
thread of this process, on a free loopback port), creates a user with a password, one with
the empty password and an inactive one, and logs in over HTTP, rounds of one login per
kind in turn (so that the machine's noise hits every kind alike):

- ``password ok`` / ``password wrong``: the user with a password;
- ``empty ok`` / ``empty wrong``: the user with the empty password;
- ``unknown``: a username that does not exist;
- ``inactive``: the inactive user with its right password (403).

It prints, per kind, the minimum and the median of ``--rounds`` logins (the minimum is the
cost without the noise) and their ratios to ``password ok``'s; every ratio should be close
to 1 (the answers' own work, such as issuing a token, differs by well under a millisecond).
``--json`` prints everything instead.

    python bench/login_timing.py [--rounds 30] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from master_api import serve  # bench/ is on sys.path when this script runs

from detlite.master import Settings, create_app

KINDS: dict[str, tuple[str, str, int]] = {
    "password ok": ("with-password", "correct horse", 200),
    "password wrong": ("with-password", "wrong", 401),
    "empty ok": ("empty-password", "", 200),
    "empty wrong": ("empty-password", "wrong", 401),
    "unknown": ("nobody-by-this-name", "wrong", 401),
    "inactive": ("inactive", "pw", 403),
}


def login(client: httpx.Client, username: str, password: str) -> int:
    body = {"username": username, "password": password}
    return client.post("/api/v1/auth/login", json=body).status_code


def setup_users(client: httpx.Client) -> None:
    token = client.post("/api/v1/auth/login", json={"username": "admin", "password": ""})
    headers = {"Authorization": f"Bearer {token.json()['token']}"}
    for username, password in (
        ("with-password", "correct horse"),
        ("empty-password", ""),
        ("inactive", "pw"),
    ):
        body = {"user": {"username": username}, "password": password}
        client.post("/api/v1/users", json=body, headers=headers).raise_for_status()
    client.patch("/api/v1/users/inactive", json={"active": False}, headers=headers)


def measure(rounds: int) -> dict[str, list[float]]:
    """Seconds per login, per kind, over ``rounds`` rounds (after one untimed round)."""
    times: dict[str, list[float]] = {kind: [] for kind in KINDS}
    with tempfile.TemporaryDirectory(prefix="detlite-bench-") as tmp_dir:
        tmp = Path(tmp_dir)
        settings = Settings(
            db_url=f"sqlite:///{tmp / 'master.db'}",
            storage_path=tmp / "checkpoints",
            port=0,
            scheduler=False,
        )
        with serve(create_app(settings)) as url, httpx.Client(base_url=url, timeout=60) as client:
            setup_users(client)
            for round_number in range(rounds + 1):
                for kind, (username, password, status) in KINDS.items():
                    start = time.perf_counter()
                    got = login(client, username, password)
                    elapsed = time.perf_counter() - start
                    if got != status:
                        raise RuntimeError(f"{kind}: expected {status}, got {got}")
                    if round_number:  # the first round warms up connections and caches
                        times[kind].append(elapsed)
    return times


def summary(times: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    base_min = min(times["password ok"])
    base_median = statistics.median(times["password ok"])
    return {
        kind: {
            "min_ms": 1000 * min(values),
            "median_ms": 1000 * statistics.median(values),
            "min_ratio": min(values) / base_min,
            "median_ratio": statistics.median(values) / base_median,
        }
        for kind, values in times.items()
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30, help="logins per kind (timed)")
    parser.add_argument("--json", action="store_true", help="print everything as JSON")
    args = parser.parse_args(argv)
    times = measure(args.rounds)
    table = summary(times)
    if args.json:
        result: dict[str, Any] = {"rounds": args.rounds, "summary": table, "seconds": times}
        print(json.dumps(result, indent=2))
        return
    print(f"{'kind':<16} {'min ms':>8} {'median ms':>10} {'min ratio':>10} {'median ratio':>13}")
    for kind, row in table.items():
        print(
            f"{kind:<16} {row['min_ms']:>8.1f} {row['median_ms']:>10.1f} "
            f"{row['min_ratio']:>10.2f} {row['median_ratio']:>13.2f}"
        )


if __name__ == "__main__":
    main()
