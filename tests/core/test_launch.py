"""``launch_local``: a trial as N real worker processes, and what happens when one fails.

The fake framework does no collectives, so with two ranks each trains its own copy; these
tests are about processes, results, failures and cleanup.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from detlite.harness import build_trial
from detlite.launch import (
    LaunchError,
    LaunchSpec,
    LaunchTimeout,
    free_port,
    launch_local,
    process_running,
)
from detlite.plugins import Plugins
from detlite.testing.fake import LinearTrial, linear_config, linear_hparams
from detlite.worker import main as worker_main
from detlite.workloads import TrialRunner

FAKE_PLUGIN = "detlite.testing:FakeFrameworkPlugin"

MODEL_DEF = """
import subprocess
import sys
import time
from pathlib import Path

from detlite.testing.fake import LinearTrial


class FailsOnRank1(LinearTrial):
    def __init__(self, context):
        super().__init__(context)
        self.rank = context.distributed.get_rank()
        if self.rank == 0:
            # Something the worker started, which must die with it.
            child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
            Path("child.pid").write_text(str(child.pid))

    def train_batch(self, batch, epoch_idx, batch_idx):
        if self.rank == 0:
            time.sleep(0.05)  # rank 0 would go on for minutes
        elif batch_idx == 2:
            while not Path("child.pid").exists():
                time.sleep(0.02)
            raise RuntimeError("rank 1 exploded at batch 2")
        return super().train_batch(batch, epoch_idx, batch_idx)


class Sleeper(LinearTrial):
    def train_batch(self, batch, epoch_idx, batch_idx):
        time.sleep(60)


class StopsAtBatch5(LinearTrial):
    def train_batch(self, batch, epoch_idx, batch_idx):
        if batch_idx == 5:
            self.context.set_stop_requested(True)
        return super().train_batch(batch, epoch_idx, batch_idx)
"""


@pytest.fixture(autouse=True)
def _private_tempdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every launch cleans up the temporary directory it made, whatever the outcome."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    yield
    assert list(temp.iterdir()) == []


def all_dead(pids: list[int], wait: float = 5.0) -> bool:
    deadline = time.monotonic() + wait
    while any(process_running(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def spec_for(tmp_path: Path, entrypoint: str | None = None, **config: Any) -> LaunchSpec:
    cfg = linear_config()
    cfg.update(config)
    context_dir = None
    if entrypoint is not None:
        context_dir = tmp_path / "ctx"
        context_dir.mkdir(exist_ok=True)
        (context_dir / "model_def.py").write_text(MODEL_DEF)
        cfg["entrypoint"] = entrypoint
    return LaunchSpec(
        config=cfg,
        hparams=linear_hparams(),
        operations=[4, 8],
        checkpoint_root=str(tmp_path / "checkpoints"),
        context_dir=str(context_dir) if context_dir else None,
        plugins=[FAKE_PLUGIN],
    )


def test_one_process_matches_the_same_trial_in_this_process(
    fake_plugins: Plugins, tmp_path: Path
) -> None:
    spec = spec_for(tmp_path, scheduling_unit=3)
    launched = launch_local(spec, 1, timeout=60, log_dir=tmp_path / "logs")

    built = build_trial(LinearTrial, spec.config, spec.hparams, plugins=fake_plugins)
    runner = TrialRunner(built, tmp_path / "here")
    expected = [runner.train_to(total).metrics for total in spec.operations]

    assert launched.batches_trained == 8 and launched.result["stopped"] is False
    assert [v["batches_trained"] for v in launched.validations] == [4, 8]
    assert [v["metrics"] for v in launched.validations] == expected
    assert launched.result["workloads"] == [str(w) for w in runner.history]
    assert launched.result["training"]["batches_trained"] == 8
    assert len(launched.checkpoints) == 2
    assert all(Path(c).parent == tmp_path / "checkpoints" for c in launched.checkpoints)
    assert launched.result["latest_checkpoint"] == launched.checkpoints[-1]
    assert launched.result["workload_state"]["batches_since_checkpoint"] == 0
    log = (tmp_path / "logs" / "rank0.err").read_text()
    assert "[rank 0] INFO detlite.worker: trained 3 batches (3 in all)" in log
    assert all_dead(launched.pids, wait=0)


def test_two_processes_write_the_chiefs_result(tmp_path: Path) -> None:
    spec = spec_for(tmp_path, resources={"slots_per_trial": 2})
    assert spec.slots == 2
    launched = launch_local(spec, timeout=60)
    assert len(launched.pids) == 2 and all_dead(launched.pids, wait=0)
    assert launched.batches_trained == 8 and len(launched.validations) == 2
    # Only the chief checkpoints.
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == sorted(
        Path(c).name for c in launched.checkpoints
    )


def test_a_resumed_launch_continues_from_the_checkpoint(tmp_path: Path) -> None:
    first = launch_local(spec_for(tmp_path, scheduling_unit=3), 1, timeout=60)
    spec = spec_for(tmp_path, scheduling_unit=3)
    spec.operations = [8]
    spec.latest_checkpoint = first.checkpoints[0]  # saved at batch 4
    spec.workload_state = None
    resumed = launch_local(spec, 1, timeout=60)
    assert resumed.result["workloads"] == first.result["workloads"][-4:]
    assert resumed.validations[0]["metrics"] == first.validations[1]["metrics"]


def test_a_stop_request_ends_the_launch_with_a_checkpoint(tmp_path: Path) -> None:
    spec = spec_for(tmp_path, entrypoint="model_def:StopsAtBatch5")
    launched = launch_local(spec, 1, timeout=60)
    assert launched.result["stopped"] is True
    assert launched.batches_trained == 8  # the workload that saw the stop trained 4..8
    assert [v["batches_trained"] for v in launched.validations] == [4]
    assert launched.result["workloads"][-1] == "checkpoint @8"


def test_a_failing_rank_stops_every_process(tmp_path: Path) -> None:
    spec = spec_for(tmp_path, entrypoint="model_def:FailsOnRank1")
    spec.operations = [100_000]
    with pytest.raises(LaunchError) as info:
        launch_local(spec, 2, timeout=60)
    error = info.value
    assert error.rank == 1 and error.returncode == 1
    assert "rank 1 of 2 exited with code 1" in str(error)
    assert "RuntimeError: rank 1 exploded at batch 2" in str(error)
    assert "rank 1 exploded" in error.stderr_tail
    child = int((tmp_path / "ctx" / "child.pid").read_text())
    assert all_dead([*error.pids, child])


def test_a_timeout_kills_every_process(tmp_path: Path) -> None:
    spec = spec_for(tmp_path, entrypoint="model_def:Sleeper")
    start = time.monotonic()
    with pytest.raises(LaunchTimeout, match=r"ran past the 2\.0 s timeout") as info:
        launch_local(spec, 2, timeout=2.0)
    assert time.monotonic() - start < 10
    assert len(info.value.pids) == 2 and all_dead(info.value.pids)


def test_a_bad_spec_fails_with_the_workers_traceback(tmp_path: Path) -> None:
    spec = spec_for(tmp_path, entrypoint="model_def:Missing")
    with pytest.raises(LaunchError, match="cannot import entrypoint 'model_def:Missing'"):
        launch_local(spec, 1, timeout=60)


def test_spec_round_trip_and_checks(tmp_path: Path) -> None:
    spec = spec_for(tmp_path)
    spec.write(tmp_path / "spec.json")
    assert LaunchSpec.read(tmp_path / "spec.json") == spec
    with pytest.raises(ValueError, match="unknown launch spec keys: extra"):
        LaunchSpec.from_dict({**spec.to_dict(), "extra": 1})
    with pytest.raises(ValueError, match="version 9"):
        LaunchSpec.from_dict({**spec.to_dict(), "version": 9})
    with pytest.raises(ValueError, match="slots must be >= 1"):
        launch_local(spec, 0, timeout=1)
    assert 0 < free_port() < 65536


def test_worker_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert worker_main([]) == 2
    assert "usage: python -m detlite.worker <spec.json>" in capsys.readouterr().err
    assert worker_main([str(tmp_path / "missing.json")]) == 1
    assert "missing.json" in capsys.readouterr().err
