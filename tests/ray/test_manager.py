"""The ``ray`` resource manager on its own, against the tests' Ray head.

Worker groups here are small Python commands (no master): they show the environment each
rank gets (torchrun's names, rank 0's address, the master's ``DETLITE_*`` variables), where
Ray placed them, how a failed rank ends its group, and that killing the group -- by
``terminate`` or by killing a Ray worker process by hand -- takes the worker processes with
it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from detlite.errors import PluginError
from detlite.interfaces import WorkerSpec
from detlite.launch import process_running
from detlite.master import Settings
from detlite.master.scheduler.scheduler import build_resource_manager
from tests.ray.conftest import HEAD_CPUS, RayHead
from tests.resources.test_local import CHIEF_LEAVES

ENV_DUMP = """
import json, os, sys
keys = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
        "GLOO_SOCKET_IFNAME", "DETLITE_NUM_AGENTS", "DETLITE_TEST_MARK", "CUDA_VISIBLE_DEVICES",
        "DETLITE_PASSWORD")
print(json.dumps({k: os.environ.get(k) for k in keys}))
"""
# Rank 1 fails; rank 0 would run on.
FAIL_RANK_1 = """
import os, sys, time
if os.environ["RANK"] == "1":
    print("rank 1 gives up", file=sys.stderr)
    sys.exit(3)
time.sleep(120)
"""
# Writes its pid where the test finds it, then sleeps.
SLEEPER = """
import os, pathlib, sys, time
pathlib.Path(sys.argv[1], "rank" + os.environ["RANK"] + ".pid").write_text(str(os.getpid()))
time.sleep(120)
"""


def wait_for(what: str, check: Callable[[], Any], timeout: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture(autouse=True)
def _groups_give_back_their_resources(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a test that used Ray, every CPU of the head is free again: ended groups leave
    no actor and no placement group behind."""
    yield
    if "ray_rm" not in request.fixturenames:
        return
    import ray

    wait_for(
        "Ray's CPUs to be free",
        lambda: ray.available_resources().get("CPU", 0) == HEAD_CPUS,
        timeout=30,
    )


def spec(script: str, *args: str, slots: int = 2) -> WorkerSpec:
    return WorkerSpec(trial_id=7, slots=slots, command=[sys.executable, "-c", script, *args])


def test_importing_the_plugin_never_imports_ray() -> None:
    code = (
        "import sys\n"
        "from detlite.plugins import get_plugins\n"
        "registrations = get_plugins().registrations('resource_manager')\n"
        "assert 'ray' in registrations, sorted(registrations)\n"
        "import detlite.ray, detlite.ray.plugin\n"
        "assert 'ray' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_settings_take_the_config_file_table() -> None:
    settings = Settings.model_validate(
        {"resource_manager": {"type": "ray", "address": "10.0.0.5:6379", "namespace": "lab"}}
    )
    assert settings.resource_manager == "ray"
    assert settings.resource_manager_options == {"address": "10.0.0.5:6379", "namespace": "lab"}
    assert Settings().resource_manager == "local" and Settings().resource_manager_options == {}
    with pytest.raises(ValueError, match=r"resource_manager\.type is required"):
        Settings.model_validate({"resource_manager": {"address": "10.0.0.5:6379"}})


def test_an_unknown_option_is_a_plugin_error(tmp_path: Path) -> None:
    settings = Settings(
        storage_path=tmp_path / "ckpt",
        resource_manager="ray",
        resource_manager_options={"adress": "127.0.0.1:1"},
    )
    takes = r"address, connect_timeout, driver, namespace"
    with pytest.raises(PluginError, match=rf"no option 'adress'; it takes: {takes}"):
        build_resource_manager(settings)


def test_the_master_builds_the_ray_manager_from_its_settings(
    ray_rm: Any, ray_head: RayHead, tmp_path: Path
) -> None:
    # The session is connected already: the built manager shares that connection.
    settings = Settings(
        storage_path=tmp_path / "ckpt",
        resource_manager="ray",
        resource_manager_options={"address": ray_head.address},
    )
    rm = build_resource_manager(settings)
    try:
        assert type(rm).__name__ == "RayResourceManager" and rm.type == "ray"
        assert rm.total_slots() == HEAD_CPUS  # no GPUs on the head: CPU slots
        assert rm.work_dir == settings.worker_dir / "groups"  # type: ignore[attr-defined]
    finally:
        rm.close()
    assert ray_rm.total_slots() == HEAD_CPUS  # the session's connection is still up


def test_two_ranks_get_torchrun_env_placement_and_logs(
    ray_rm: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DETLITE_TEST_MARK", "from-the-master")
    monkeypatch.setenv("DETLITE_PASSWORD", "stays-on-the-master")
    handle = ray_rm.launch(spec(ENV_DUMP))
    assert wait_for("the group to end", lambda: ray_rm.poll(handle)) == 0
    assert ray_rm.failed_rank(handle) is None
    placement = ray_rm.placement(handle)
    assert [p["devices"] for p in placement] == [["cpu"], ["cpu"]]
    assert {p["nodeIp"] for p in placement} == {"127.0.0.1"}
    assert all(p["node"] and p["nodeId"] and p["pid"] > 0 for p in placement)
    envs = [json.loads((ray_rm.log_dir(handle) / f"rank{rank}.out").read_text()) for rank in (0, 1)]
    for rank, env in enumerate(envs):
        assert env["RANK"] == env["LOCAL_RANK"] == str(rank)
        assert env["WORLD_SIZE"] == env["LOCAL_WORLD_SIZE"] == "2"
        assert env["MASTER_ADDR"] == "127.0.0.1" and env["GLOO_SOCKET_IFNAME"] == "lo"
        assert env["DETLITE_NUM_AGENTS"] == "1"
        assert env["DETLITE_TEST_MARK"] == "from-the-master"
        assert env["DETLITE_PASSWORD"] is None
        assert env["CUDA_VISIBLE_DEVICES"] == ""
    assert envs[0]["MASTER_PORT"] == envs[1]["MASTER_PORT"]
    ray_rm.forget(handle)
    assert handle not in ray_rm.handles()


def test_a_failed_rank_ends_the_group_with_its_code(ray_rm: Any) -> None:
    handle = ray_rm.launch(spec(FAIL_RANK_1))
    code = wait_for("the group to end", lambda: ray_rm.poll(handle))
    assert code == 3 and ray_rm.failed_rank(handle) == 1
    err = (ray_rm.log_dir(handle) / "rank1.err").read_text()
    assert "rank 1 gives up" in err
    ray_rm.forget(handle)


def _sleeping_group(ray_rm: Any, tmp_path: Path) -> tuple[str, list[int]]:
    tmp_path.mkdir(exist_ok=True)
    handle = ray_rm.launch(spec(SLEEPER, str(tmp_path)))
    paths = [tmp_path / f"rank{rank}.pid" for rank in (0, 1)]

    def started() -> bool:
        assert ray_rm.poll(handle) is None  # polling is what starts placed ranks
        return all(p.exists() and p.read_text() for p in paths)

    wait_for("both ranks to start", started)
    pids = [int(p.read_text()) for p in paths]
    assert ray_rm.poll(handle) is None
    return handle, pids


def test_terminate_kills_the_workers(ray_rm: Any, tmp_path: Path) -> None:
    handle, pids = _sleeping_group(ray_rm, tmp_path / "force")
    ray_rm.terminate(handle, force=True)
    assert wait_for("the group to end", lambda: ray_rm.poll(handle)) == -signal.SIGKILL
    wait_for("the workers to be gone", lambda: not any(map(process_running, pids)), timeout=20)
    ray_rm.forget(handle)

    handle, pids = _sleeping_group(ray_rm, tmp_path / "term")
    ray_rm.terminate(handle)  # SIGTERM to each worker
    assert wait_for("the group to end", lambda: ray_rm.poll(handle)) == -signal.SIGTERM
    assert not any(map(process_running, pids))
    ray_rm.forget(handle)


def test_a_rank_that_outlives_its_chief_is_killed_as_stuck(
    ray_rm: Any, ray_head: RayHead, tmp_path: Path
) -> None:
    from detlite.ray.manager import RayResourceManager

    # A second manager on the session's connection, with a short grace.
    rm = RayResourceManager(address=ray_head.address, work_dir=tmp_path, straggler_grace=0.5)
    try:
        handle = rm.launch(spec(CHIEF_LEAVES))
        assert wait_for("the group to end", lambda: rm.poll(handle)) == -signal.SIGKILL
        assert rm.failed_rank(handle) == 1
        err = (rm.log_dir(handle) / "rank1.err").read_text()
        assert err.startswith("waiting for the chief\n")
        assert "rank 1 was still running 0.5 s after rank 0 (its chief) had exited 0" in err
        rm.forget(handle)
    finally:
        rm.close()


def test_a_killed_ray_worker_process_takes_its_worker_along(ray_rm: Any, tmp_path: Path) -> None:
    handle, pids = _sleeping_group(ray_rm, tmp_path)
    actor_pid = ray_rm.placement(handle)[1]["pid"]
    assert actor_pid not in pids and actor_pid != os.getpid()
    os.kill(actor_pid, signal.SIGKILL)  # the Ray worker process of rank 1
    assert wait_for("the group to end", lambda: ray_rm.poll(handle)) == -signal.SIGKILL
    assert ray_rm.failed_rank(handle) == 1
    wait_for("the workers to be gone", lambda: not any(map(process_running, pids)), timeout=20)
    ray_rm.forget(handle)
