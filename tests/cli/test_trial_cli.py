"""``detlite trial describe``'s placement line, against a live master (SQLite and PostgreSQL).

The placement is written into the trial's row as a resource manager reports it (per rank:
``node`` the host name, ``devices``, and Ray's ``nodeId`` and ``nodeIp``). Nodes are named
by host name; where two nodes share one (a Ray cluster simulated on one machine), each also
shows the first 8 characters of its node id. ``Created`` and ``Launched`` are the trial's
``startTime`` and ``launchTime``.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from detlite.api.enums import ExperimentState
from detlite.master.orm import Trial
from tests.master.conftest import LiveMaster
from tests.master.factories import make_experiment, make_trial
from tests.master.test_cli_models import CLI

LAUNCHED = dt.datetime(2026, 5, 4, 3, 2, 1, tzinfo=dt.timezone.utc)
NODE_A = "a1b2c3d4" + "0" * 48
NODE_B = "e5f6a7b8" + "1" * 48


def rank(host: str, node_id: str, device: str = "cpu") -> dict[str, Any]:
    return {"node": host, "nodeId": node_id, "nodeIp": "127.0.0.1", "devices": [device]}


def placed_trial(master: LiveMaster, placement: list[dict[str, Any]], manager: str) -> int:
    with master.db() as db:
        trial = make_trial(db, make_experiment(db), state=ExperimentState.COMPLETED)
        row = db.get_one(Trial, trial.id)
        row.start_time = LAUNCHED - dt.timedelta(minutes=5)
        row.launch_time = LAUNCHED
        row.placement = placement
        row.resource_manager = manager
        row.node = ",".join(dict.fromkeys(p["node"] for p in placement))
        row.devices = [d for p in placement for d in p["devices"]]
        db.commit()
        return trial.id


def field(cli: CLI, trial_id: int, name: str) -> str:
    text = cli.ok("trial", "describe", str(trial_id))
    (line,) = [line for line in text.splitlines() if line.startswith(f"{name}:")]
    return line.split(":", 1)[1].strip()


CASES = [
    # Two nodes on one host: their ids tell them apart.
    (
        [rank("vm", NODE_A), rank("vm", NODE_B)],
        "ray",
        "vm [node a1b2c3d4]: cpu; vm [node e5f6a7b8]: cpu (ray)",
    ),
    # Two ranks on one node: one entry, no id needed.
    ([rank("vm", NODE_A), rank("vm", NODE_A)], "ray", "vm: cpu, cpu (ray)"),
    # Host names that differ are enough.
    (
        [rank("gpu-1", NODE_A, "gpu:0"), rank("gpu-2", NODE_B, "gpu:0")],
        "ray",
        "gpu-1: gpu:0; gpu-2: gpu:0 (ray)",
    ),
    # The local manager tells no node id.
    (
        [{"node": "vm", "devices": ["gpu:0"]}, {"node": "vm", "devices": ["gpu:1"]}],
        "local",
        "vm: gpu:0, gpu:1 (local)",
    ),
]


def test_describe_names_nodes_that_share_a_host_name_by_id(
    master: LiveMaster, cli: CLI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DETLITE_MASTER", master.url)
    for placement, manager, expected in CASES:
        trial_id = placed_trial(master, placement, manager)
        assert field(cli, trial_id, "Placement") == expected, placement
        # --json keeps the placement as the master sent it.
        described = json.loads(cli.ok("trial", "describe", str(trial_id), "--json"))
        assert described["trial"]["placement"] == placement
    # When the searcher made the trial, and when its workers were first started.
    assert field(cli, trial_id, "Created") == "2026-05-04 02:57:01"
    assert field(cli, trial_id, "Launched") == "2026-05-04 03:02:01"
