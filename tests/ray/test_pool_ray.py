"""Pooled trials on Ray: an experiment's single-slot trials reuse its Ray actor, and each
trial is a fresh process forked from the actor's warm pool parent (``detlite.ray._rank``,
``detlite.ray._driver``).

The trials (``model_def:PoolTrial``, the fake framework) print what their process sees as one
``POOLTEST {json}`` log line: pid, parent and grandparent, process group, the module global
and the environment variable an earlier trial may have left (the global on
``detlite.testing``, which the pool parent keeps imported), and their experiment's version.
One trial at a time, so each launch finds the actor the one before left.
"""

from __future__ import annotations

import base64
import signal
import textwrap
from pathlib import Path
from typing import Any

import httpx
import pytest

from detlite.master.context_archive import pack_directory
from detlite.testing.fake import linear_config
from tests.exec.test_pool import _seen
from tests.exec.test_worker_e2e import _logs, _trials
from tests.ray.test_search_ray import ray_master, wait_ended

MODEL_DEF = """
import json
import os
import signal
from pathlib import Path

import ctxhelper
import detlite.testing as shared
from detlite.testing import LinearTrial

VERSION = {version!r}


def _parent(pid):
    return int(Path(f"/proc/{{pid}}/stat").read_text().rsplit(")", 1)[1].split()[1])


class PoolTrial(LinearTrial):
    def __init__(self, context):
        mode = context.get_hparam("mode")
        run = int(os.environ.get("DETLITE_TRIAL_RUN_ID", "0"))
        seen = {{
            "mode": mode,
            "run": run,
            "pid": os.getpid(),
            "ppid": os.getppid(),
            "grandparent": _parent(os.getppid()),
            "pgid": os.getpgid(0),
            "leak": getattr(shared, "POOLTEST_LEAK", None),
            "env_leak": os.environ.get("POOLTEST_LEAK"),
            "version": VERSION,
            "helper": ctxhelper.VALUE,
        }}
        print("POOLTEST " + json.dumps(seen), flush=True)
        if mode == "leak":
            shared.POOLTEST_LEAK = "set by a trial"
            os.environ["POOLTEST_LEAK"] = "1"
        elif mode == "segfault" and run == 0:
            os.kill(os.getpid(), signal.SIGSEGV)
        super().__init__(context)
"""


@pytest.fixture(autouse=True)
def _workers_load_the_fake_framework(monkeypatch: pytest.MonkeyPatch) -> None:
    # The ray manager hands the master's DETLITE_* variables to every worker.
    monkeypatch.setenv("DETLITE_EXTRA_PLUGINS", "detlite.testing:FakeFrameworkPlugin")
    monkeypatch.setenv("DETLITE_MASTER_RETRY_S", "30")
    monkeypatch.delenv("DETLITE_WORKER_POOL", raising=False)


@pytest.fixture(autouse=True)
def _idle_actors_go_back(ray_rm: Any) -> Any:
    yield
    ray_rm.release_idle()


def _create(api: httpx.Client, tmp_path: Path, modes: list[str], version: str) -> int:
    context = tmp_path / f"context-{version}"
    context.mkdir()
    (context / "model_def.py").write_text(textwrap.dedent(MODEL_DEF.format(version=version)))
    (context / "ctxhelper.py").write_text(f"VALUE = {version!r}\n")
    config = linear_config()
    config["entrypoint"] = "model_def:PoolTrial"
    config["hyperparameters"]["mode"] = {"type": "categorical", "vals": modes}
    config["searcher"] = {
        "name": "grid",
        "metric": "validation_loss",
        "max_length": {"batches": 2},
        "max_concurrent_trials": 1,
    }
    (tmp_path / "ckpt").mkdir(exist_ok=True)
    config["checkpoint_storage"] = {"type": "shared_fs", "host_path": str(tmp_path / "ckpt")}
    config["max_restarts"] = 1
    body = {"config": config, "contextArchive": base64.b64encode(pack_directory(context)).decode()}
    response = api.post("/api/v1/experiments", json=body)
    assert response.status_code == 200, response.text
    return int(response.json()["experiment"]["id"])


def test_trials_reuse_their_experiments_actor_and_are_forked_apart(
    ray_rm: Any, tmp_path: Path
) -> None:
    modes = ["first", "second", "leak", "check", "segfault", "last"]
    with ray_master(tmp_path, ray_rm) as (_, api):
        exp_a = _create(api, tmp_path, modes, "a")
        wait_ended(api, exp_a)
        exp_b = _create(api, tmp_path, ["first", "second", "check"], "b")
        wait_ended(api, exp_b)
        trials = {t["hparams"]["mode"]: t for t in _trials(api, exp_a)}
        others = {t["hparams"]["mode"]: t for t in _trials(api, exp_b)}

        for trial in [*trials.values(), *others.values()]:
            assert trial["state"] == "STATE_COMPLETED", trial
        actor = trials["first"]["placement"][0]["pid"]
        # Every trial of the experiment ran on the one actor its first trial got.
        assert {t["placement"][0]["pid"] for t in trials.values()} == {actor}

        # The first run on an actor is a plain process: the actor's own child.
        [first] = _seen(api, trials["first"]["id"])
        assert first["ppid"] == actor
        # The second started the actor's pool parent; it and every run after it are forked
        # from that parent (the actor's child), each a process group of its own.
        runs = [seen for mode in modes[1:] for seen in _seen(api, trials[mode]["id"])]
        parents = {seen["ppid"] for seen in runs}
        assert len(parents) == 1 and parents != {actor}
        assert {seen["grandparent"] for seen in runs} == {actor}
        assert all(seen["pgid"] == seen["pid"] for seen in runs)
        assert len({seen["pid"] for seen in runs}) == len(runs)
        for seen in runs:
            assert seen["version"] == seen["helper"] == "a"
            if seen["mode"] != "leak":
                # Nothing the leak trial set reached the trials forked after it.
                assert seen["leak"] is None and seen["env_leak"] is None, seen

        # A crash is a failure like any other: restarted (on the same actor), then it runs.
        segfault = trials["segfault"]
        assert segfault["restarts"] == 1
        messages = [log["message"] for log in _logs(api, segfault["id"])]
        assert f"trial {segfault['id']}'s workers exited with code {-signal.SIGSEGV}" in messages
        assert [seen["run"] for seen in _seen(api, segfault["id"])][-1] == 1

        # The next experiment, with the same module names and other code, gets an actor of
        # its own, and its workers run its own files.
        assert {t["placement"][0]["pid"] for t in others.values()}.isdisjoint({actor})
        for trial in others.values():
            for seen in _seen(api, trial["id"]):
                assert seen["version"] == seen["helper"] == "b", seen
                assert seen["leak"] is None and seen["env_leak"] is None


def test_pool_off_starts_each_trial_plainly_on_the_reused_actor(
    ray_rm: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DETLITE_WORKER_POOL", "0")  # forwarded to the workers, as DETLITE_*
    with ray_master(tmp_path, ray_rm) as (_, api):
        exp = _create(api, tmp_path, ["first", "second", "third"], "a")
        wait_ended(api, exp)
        trials = _trials(api, exp)
        assert all(t["state"] == "STATE_COMPLETED" for t in trials)
        [actor] = {t["placement"][0]["pid"] for t in trials}
        for trial in trials:
            [seen] = _seen(api, trial["id"])
            assert seen["ppid"] == actor
