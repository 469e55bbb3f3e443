"""``LocalResourceManager`` with real worker processes (small ``python -c`` scripts)."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from detlite.interfaces import WorkerSpec
from detlite.launch import process_running
from detlite.plugins import get_plugins
from detlite.resources.local import (
    InsufficientSlots,
    LocalResourceManager,
    detect_gpus,
    kill_process_groups,
)
from detlite.resources.stragglers import ChiefWatch

ENV_KEYS = [
    "RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "GLOO_SOCKET_IFNAME",
    "CUDA_VISIBLE_DEVICES",
    "DETLITE_TRIAL_ID",
    "OMP_NUM_THREADS",
]

# Prints the rank's environment as JSON, then exits.
PRINT_ENV = f"import json, os; print(json.dumps({{k: os.environ.get(k) for k in {ENV_KEYS!r}}}))"
SLEEP = "import time; time.sleep(120)"


def wait_for(predicate: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def finish(rm: LocalResourceManager, handle: str, timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    while (code := rm.poll(handle)) is None:
        assert time.monotonic() < deadline, f"group {handle} did not end"
        time.sleep(0.02)
    return code


def spec(code: str, slots: int = 1, trial_id: int = 1, **env: str) -> WorkerSpec:
    return WorkerSpec(trial_id=trial_id, slots=slots, command=[sys.executable, "-c", code], env=env)


@pytest.fixture
def rm(tmp_path: Path) -> Iterator[LocalResourceManager]:
    manager = LocalResourceManager(slots=3, work_dir=tmp_path / "work", gpus=[])
    yield manager
    manager.close()


def test_registered_as_local_plugin() -> None:
    assert get_plugins().resource_manager("local") is LocalResourceManager
    assert LocalResourceManager.type == "local"


def test_slots_from_gpus_or_cpus(tmp_path: Path) -> None:
    assert detect_gpus({"CUDA_VISIBLE_DEVICES": "2,5"}) == ["2", "5"]
    assert detect_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert detect_gpus({"CUDA_VISIBLE_DEVICES": "0,-1,3"}) == ["0"]
    with LocalResourceManager(work_dir=tmp_path, gpus=["0", "1"]) as two_gpus:
        assert two_gpus.total_slots() == 2 and two_gpus.gpus == ["0", "1"]
    with LocalResourceManager(slots=1, work_dir=tmp_path, gpus=["0", "1"]) as one_gpu:
        assert one_gpu.total_slots() == 1 and one_gpu.gpus == ["0"]
    with LocalResourceManager(slots=4, work_dir=tmp_path, gpus=["0"]) as cpu:
        assert cpu.total_slots() == 4 and cpu.gpus == []
    with LocalResourceManager(work_dir=tmp_path, gpus=[]) as default_cpu:
        assert default_cpu.total_slots() == (os.cpu_count() or 1)
    with pytest.raises(ValueError, match="slots must be >= 1"):
        LocalResourceManager(slots=0, gpus=[])
    # The default work directory is temporary and goes with close().
    temp = LocalResourceManager(slots=1, gpus=[])
    assert temp.work_dir.is_dir()
    temp.close()
    assert not temp.work_dir.exists()


def test_env_per_rank_logs_and_slot_accounting(
    rm: LocalResourceManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    handle = rm.launch(spec(PRINT_ENV, slots=2, trial_id=7, DETLITE_TRIAL_ID="7"))
    assert rm.free_slots() == 1  # held until poll sees the group end
    pids = rm.pids(handle)
    assert len(pids) == 2 and all(pid > 0 for pid in pids)
    assert finish(rm, handle) == 0
    assert rm.free_slots() == 3
    envs = [json.loads((rm.log_dir(handle) / f"rank{r}.out").read_text()) for r in range(2)]
    assert [e["RANK"] for e in envs] == ["0", "1"]
    assert [e["LOCAL_RANK"] for e in envs] == ["0", "1"]
    for env in envs:
        assert env["WORLD_SIZE"] == env["LOCAL_WORLD_SIZE"] == "2"
        assert env["MASTER_ADDR"] == "127.0.0.1"
        assert env["GLOO_SOCKET_IFNAME"] == "lo"
        assert env["DETLITE_TRIAL_ID"] == "7"  # the spec's env reaches every rank
        assert env["CUDA_VISIBLE_DEVICES"] == ""  # CPU slots hide GPUs
        # CPU slots share the cores instead of each taking all of them (unless set by the user).
        assert env["OMP_NUM_THREADS"] == str(rm.threads_per_slot())
    assert envs[0]["MASTER_PORT"] == envs[1]["MASTER_PORT"] and int(envs[0]["MASTER_PORT"]) > 0
    assert rm.poll(handle) == 0  # the result stays
    assert rm.log_dir(handle).parent == rm.work_dir

    # Slots: a group larger than the host, or than what is free, is refused.
    with pytest.raises(InsufficientSlots, match="only 3"):
        rm.launch(spec(SLEEP, slots=4))
    first = rm.launch(spec(SLEEP, slots=2))
    with pytest.raises(InsufficientSlots, match="1 of 3 are free"):
        rm.launch(spec(SLEEP, slots=2))
    second = rm.launch(spec(SLEEP, slots=1))
    assert rm.free_slots() == 0
    assert rm.poll(first) is None and rm.poll(second) is None
    rm.terminate(first, force=True)
    assert finish(rm, first) == -signal.SIGKILL
    assert rm.free_slots() == 2
    with pytest.raises(KeyError, match="no worker group"):
        rm.poll("nope")


def test_a_users_thread_count_is_kept(
    rm: LocalResourceManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 12)
    assert rm.threads_per_slot() == 4  # 12 cores over 3 slots
    handle = rm.launch(spec(PRINT_ENV, OMP_NUM_THREADS="7"))
    assert finish(rm, handle) == 0
    assert json.loads((rm.log_dir(handle) / "rank0.out").read_text())["OMP_NUM_THREADS"] == "7"


def test_gpu_slots_give_one_device_per_rank(tmp_path: Path) -> None:
    with LocalResourceManager(work_dir=tmp_path, gpus=["3", "5", "7"]) as rm:
        hold = rm.launch(spec(SLEEP, slots=1))  # takes GPU 3
        handle = rm.launch(spec(PRINT_ENV, slots=2))
        assert finish(rm, handle) == 0
        seen = [
            json.loads((rm.log_dir(handle) / f"rank{r}.out").read_text())["CUDA_VISIBLE_DEVICES"]
            for r in range(2)
        ]
        assert seen == ["5", "7"]
        rm.terminate(hold, force=True)
        assert finish(rm, hold) != 0


def test_one_failing_rank_kills_the_group(rm: LocalResourceManager, tmp_path: Path) -> None:
    # Rank 1 fails; rank 0 and the grandchild it started would sleep for two minutes.
    code = (
        "import os, subprocess, sys, time\n"
        "if os.environ['RANK'] == '1':\n"
        "    time.sleep(0.3); sys.stderr.write('boom\\n'); sys.exit(3)\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        f"open({str(tmp_path / 'grandchild')!r}, 'w').write(str(child.pid))\n"
        "time.sleep(120)\n"
    )
    handle = rm.launch(spec(code, slots=2))
    pid_file = tmp_path / "grandchild"
    wait_for(lambda: pid_file.exists() and pid_file.read_text())
    grandchild = int(pid_file.read_text())
    assert finish(rm, handle) == 3
    assert rm.failed_rank(handle) == 1
    assert (rm.log_dir(handle) / "rank1.err").read_text() == "boom\n"
    assert not any(process_running(pid) for pid in rm.pids(handle))
    wait_for(lambda: not process_running(grandchild))
    assert rm.free_slots() == 3


# Rank 0 (the chief) ends at once; the others write a line and sleep for two minutes.
CHIEF_LEAVES = (
    "import os, sys, time\n"
    "if os.environ['RANK'] == '0':\n"
    "    sys.exit(0)\n"
    "sys.stderr.write('waiting for the chief\\n'); sys.stderr.flush()\n"
    "time.sleep(120)\n"
)
# The other way round: rank 1 ends at once, the chief works on for 1.5 s (an upload).
CHIEF_LAST = "import os, sys, time\nif os.environ['RANK'] == '0':\n    time.sleep(1.5)\n"


def test_a_rank_that_outlives_its_chief_is_killed_as_stuck(tmp_path: Path) -> None:
    with LocalResourceManager(slots=3, work_dir=tmp_path, gpus=[], straggler_grace=0.5) as rm:
        handle = rm.launch(spec(CHIEF_LEAVES, slots=3))
        assert finish(rm, handle) == -signal.SIGKILL
        assert rm.failed_rank(handle) == 1  # the first rank still running
        assert not any(process_running(pid) for pid in rm.pids(handle))
        err = (rm.log_dir(handle) / "rank1.err").read_text()
        assert err.startswith("waiting for the chief\n")
        assert "rank 1 was still running 0.5 s after rank 0 (its chief) had exited 0" in err
        assert rm.free_slots() == 3

        # Ranks that end before their chief are no stragglers: the group ends with 0.
        handle = rm.launch(spec(CHIEF_LAST, slots=2))
        assert finish(rm, handle) == 0 and rm.failed_rank(handle) is None


def test_chief_watch() -> None:
    watch = ChiefWatch(grace=0.2)
    assert watch.stuck([None, None]) is None  # all running
    assert watch.stuck([None, 0]) is None  # rank 1 done first: the chief may be uploading
    assert watch.stuck([0, None, None]) is None  # the clock starts
    time.sleep(0.25)
    assert watch.stuck([0, None, None]) == 1
    assert watch.stuck([0, 0, None]) == 2
    assert watch.stuck([0, 0, 0]) is None  # all done: nothing stuck
    assert ChiefWatch(grace=0.2).stuck([3, None]) is None  # a failed chief ends groups anyway
    with pytest.raises(ValueError, match="must be > 0 s, got 0"):
        ChiefWatch(grace=0)
    with pytest.raises(ValueError, match="must be > 0 s"):
        LocalResourceManager(slots=1, gpus=[], straggler_grace=-1)


def test_terminate_reaches_the_process_group(rm: LocalResourceManager, tmp_path: Path) -> None:
    # SIGTERM: a worker that handles it exits on its own terms (exit 0 here).
    graceful = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\n"
        f"open({str(tmp_path / 'ready')!r}, 'w').close()\n"
        "time.sleep(120)\n"
    )
    handle = rm.launch(spec(graceful))
    wait_for((tmp_path / "ready").exists)
    rm.terminate(handle)
    assert finish(rm, handle) == 0

    # A worker that ignores SIGTERM survives terminate() and dies with force; so does the
    # grandchild it started (same process group).
    stubborn = (
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        f"open({str(tmp_path / 'child')!r}, 'w').write(str(child.pid))\n"
        "time.sleep(120)\n"
    )
    handle = rm.launch(spec(stubborn))
    pid_file = tmp_path / "child"
    wait_for(lambda: pid_file.exists() and pid_file.read_text())
    grandchild = int(pid_file.read_text())
    rm.terminate(handle)
    time.sleep(0.3)  # give SIGTERM the chance to (wrongly) end it
    assert rm.poll(handle) is None
    rm.terminate(handle, force=True)
    assert finish(rm, handle) == -signal.SIGKILL
    wait_for(lambda: not process_running(grandchild))
    rm.terminate(handle)  # an ended group: nothing to do


def test_close_kills_everything(tmp_path: Path) -> None:
    rm = LocalResourceManager(slots=2, work_dir=tmp_path, gpus=[])
    handles = [rm.launch(spec(SLEEP)), rm.launch(spec(SLEEP))]
    pids = [pid for h in handles for pid in rm.pids(h)]
    assert all(process_running(pid) for pid in pids)
    rm.close()
    assert not any(process_running(pid) for pid in pids)
    assert [rm.poll(h) for h in handles] == [-signal.SIGKILL, -signal.SIGKILL]
    with pytest.raises(InsufficientSlots, match="closed"):
        rm.launch(spec(SLEEP))
    assert tmp_path.is_dir()  # a given work directory stays, logs included


def test_kill_process_groups_by_pid(rm: LocalResourceManager) -> None:
    # What a restarted master does with the pids a crashed one recorded.
    handle = rm.launch(spec(SLEEP, slots=2))
    kill_process_groups(rm.pids(handle))
    assert finish(rm, handle) == -signal.SIGKILL
    kill_process_groups(rm.pids(handle))  # gone already: no error
