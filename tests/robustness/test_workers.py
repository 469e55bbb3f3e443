"""``detlite master --workers 2`` on PostgreSQL: two API processes, one scheduler leader
elected through an advisory lock, and a SIGKILLed leader replaced while an experiment runs.

The experiment and its acknowledgement log are the fault suite's (``test_faults``): two
trials of the fake framework's LinearTrial, each worker logging every report the master
acknowledged. The leader is the process whose log line says it leads; it is SIGKILLed once
a worker runs. Another process must then lead, the supervisor must start a third, and the
experiment must complete with every acknowledged report stored.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.master.conftest import _require_postgres, postgres_database
from tests.robustness import test_faults as faults
from tests.robustness.test_faults import MasterProcess, wait_for

_workers_load_the_fake_framework = faults._workers_load_the_fake_framework
LEADS = re.compile(r"this process \(pid (\d+)\) leads the scheduler")


def leaders(master: MasterProcess) -> list[int]:
    """The pids that have led the scheduler, in order, from the master's log."""
    log = (master.work / f"master-{master.starts}.log").read_text(errors="replace")
    return [int(pid) for pid in LEADS.findall(log)]


def test_a_killed_leader_is_replaced_and_the_experiment_loses_nothing(
    tmp_path: Path, postgres_problem: str | None
) -> None:
    _require_postgres(postgres_problem)
    with postgres_database() as url:
        master = MasterProcess(url, tmp_path, extra=("--workers", "2"))
        master.start()
        try:
            (first,) = wait_for("a leader", lambda: leaders(master), timeout=60)
            with master.client() as api:
                answer = api.post("/api/v1/experiments", json=faults._experiment(tmp_path, 0))
                assert answer.status_code == 200, answer.text
                experiment_id = int(answer.json()["experiment"]["id"])
            wait_for("a worker to start", lambda: faults._worker_pids(url, experiment_id))
            os.kill(first, signal.SIGKILL)
            killed = time.monotonic()
            second = wait_for("another leader", lambda: leaders(master)[1:2], timeout=60)[0]
            print(f"pid {second} led {time.monotonic() - killed:.1f} s after pid {first} died")
            assert second != first
            state = wait_for(
                f"experiment {experiment_id} to end",
                lambda: (s := faults._state(master, experiment_id)) in faults.ENDED and s,
                timeout=300,
            )
            assert state == "STATE_COMPLETED"
            acked_metrics, acked_checkpoints = faults._acknowledged(tmp_path / "acks-0.jsonl")
            stored_metrics, stored_checkpoints = faults._stored(url, experiment_id)
            assert acked_metrics and acked_checkpoints
            assert acked_metrics <= stored_metrics, sorted(acked_metrics - stored_metrics)
            assert acked_checkpoints <= stored_checkpoints
            log = (tmp_path / f"master-{master.starts}.log").read_text(errors="replace")
            assert f"API process {first} ended" in log  # and the supervisor started another
            assert "Traceback" not in log, log
        finally:
            master.stop()


def test_several_workers_need_postgresql(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "detlite", "master", "--workers", "2"]
    command += ["--db", f"sqlite:///{tmp_path / 'master.db'}", "--port", "0"]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "2 API processes need PostgreSQL" in proc.stderr


pytestmark = pytest.mark.usefixtures("_workers_load_the_fake_framework")
