"""Whole experiments through Ray: a master whose trials run as Ray actors on the tests' head.

- an adaptive ASHA search of 2-slot trials (the fake framework, both ranks reporting)
  completes, and the master shows where every trial ran (node, devices, per rank);
- a Ray worker process killed mid-trial is a failure like any other: the trial is launched
  again from its latest checkpoint and finishes with the metrics of an uninterrupted twin;
- a 2-slot PyTorch trial trains with torch.distributed (gloo) set up by its two Ray ranks.
"""

from __future__ import annotations

import base64
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from detlite.master import Settings, create_app
from detlite.master.context_archive import pack_files
from detlite.master.orm import Trial
from detlite.testing.fake import linear_config
from tests.e2e.test_search_local import (
    ENDED,
    completed_checkpoints,
    config,
    create,
    exp_state,
    metrics,
    trials_of,
    wait_for,
)
from tests.master.conftest import LiveMaster, serve_in_thread
from tests.master.test_cli_models import CLI

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _workers_load_the_fake_framework(monkeypatch: pytest.MonkeyPatch) -> None:
    # The ray manager hands the master's DETLITE_* variables to every worker.
    monkeypatch.setenv("DETLITE_EXTRA_PLUGINS", "detlite.testing:FakeFrameworkPlugin")
    monkeypatch.setenv("DETLITE_MASTER_RETRY_S", "30")


@contextmanager
def ray_master(tmp_path: Path, rm: Any) -> Iterator[tuple[LiveMaster, httpx.Client]]:
    settings = Settings(
        db_url=f"sqlite:///{tmp_path / 'master.db'}",
        storage_path=tmp_path / "checkpoints",
        storage_roots=(tmp_path,),  # the experiments keep checkpoints in tmp_path / "ckpt"
        port=0,
        scheduler_tick=0.1,
        stop_grace=5,
    )
    app = create_app(settings, resource_manager=rm)
    with serve_in_thread(app) as url:
        live = LiveMaster(app=app, settings=settings, url=url)
        with live.client(live.login("determined")) as api:
            yield live, api


def wait_ended(api: httpx.Client, exp_id: int) -> None:
    """Wait for the experiment to end; a hang shows its trials and Ray's free resources."""
    import ray

    try:
        wait_for("the experiment to end", lambda: exp_state(api, exp_id) in ENDED, timeout=300)
    except AssertionError:
        found = trials_of(api, exp_id)
        trials = [(t["id"], t["state"], t["restarts"]) for t in found]
        free = ray.available_resources()
        lines = [f"experiment {exp_id} did not end: {trials}; Ray has free: {free}"]
        for trial in found:
            if trial["state"] not in ENDED:
                logs = api.get(f"/api/v1/trials/{trial['id']}/logs").json()
                tail = [str(entry) for entry in _log_entries(logs)][-40:]
                lines += [f"trial {trial['id']}'s last log lines:", *tail]
        raise AssertionError("\n".join(lines)) from None


def _assert_placed_by_ray(trial: dict[str, Any], ranks: int) -> None:
    assert trial["resourceManager"] == "ray"
    assert trial["devices"] == ["cpu"] * ranks
    placement = trial["placement"]
    assert [p["devices"] for p in placement] == [["cpu"]] * ranks
    assert {p["nodeIp"] for p in placement} == {"127.0.0.1"}
    assert trial["node"] == placement[0]["node"]


def test_adaptive_search_of_two_slot_trials_and_a_killed_ray_worker(
    ray_rm: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asha = {
        "name": "adaptive_asha",
        "max_length": {"batches": 8},
        "max_trials": 2,
        "max_rungs": 2,
        "divisor": 2,
        "mode": "aggressive",
    }
    hparams = linear_config()["hyperparameters"]
    hparams["lr"] = {"type": "double", "minval": 0.01, "maxval": 0.2}
    two_slots = {"slots_per_trial": 2}
    single = {"name": "single", "max_length": {"batches": 20}}
    periods = {
        "min_validation_period": {"batches": 10},
        "min_checkpoint_period": {"batches": 10},
        "reproducibility": {"experiment_seed": 4242},
    }
    slow = {**linear_config()["hyperparameters"], "sleep": 0.1}
    with ray_master(tmp_path, ray_rm) as (live, api):
        search = create(api, config(tmp_path, asha, hyperparameters=hparams, resources=two_slots))
        wait_ended(api, search)
        assert exp_state(api, search) == "STATE_COMPLETED"
        found = trials_of(api, search)
        assert len(found) == 2
        lengths = []
        for trial in found:
            assert trial["state"] == "STATE_COMPLETED"
            _assert_placed_by_ray(trial, 2)
            validations = metrics(api, trial["id"], "validation")
            assert validations and "validation_loss" in validations[-1][1]
            lengths.append(validations[-1][0])
        assert max(lengths) == 8 and min(lengths) >= 4

        # `detlite trial describe` says where a trial ran.
        trial_id = found[0]["id"]
        monkeypatch.setenv("DETLITE_MASTER", live.url)
        described = CLI(capsys, monkeypatch).ok("trial", "describe", str(trial_id))
        assert f"{found[0]['node']}: cpu, cpu (ray)" in described, described

        # A Ray worker process killed mid-trial; its twin runs undisturbed.
        twin = create(api, config(tmp_path, single, hyperparameters=slow, **periods))
        victim = create(api, config(tmp_path, single, hyperparameters=slow, **periods))
        (trial,) = wait_for("the victim's trial", lambda: trials_of(api, victim))
        wait_for("a checkpoint", lambda: completed_checkpoints(api, trial["id"]))
        with live.db() as session:
            row = session.get(Trial, trial["id"])
            assert row is not None and row.placement
            ray_worker = int(row.placement[0]["pid"])
        os.kill(ray_worker, signal.SIGKILL)
        for exp_id in (twin, victim):
            wait_ended(api, exp_id)
            assert exp_state(api, exp_id) == "STATE_COMPLETED"
        (twin_trial,) = trials_of(api, twin)
        (victim_trial,) = trials_of(api, victim)
        assert victim_trial["restarts"] == 1 and twin_trial["restarts"] == 0
        _assert_placed_by_ray(victim_trial, 1)
        for kind in ("validation", "training"):
            expected = metrics(api, twin_trial["id"], kind)
            assert [b for b, _ in expected][-1] == 20
            assert metrics(api, victim_trial["id"], kind) == expected


def test_a_two_slot_pytorch_trial_trains_with_torch_distributed(
    ray_rm: Any, tmp_path: Path
) -> None:
    pytest.importorskip("torch")
    from tests.pytorch.trials import mlp_config

    source = (ROOT / "tests" / "pytorch" / "trials.py").read_bytes()
    archive = base64.b64encode(pack_files([("model_def.py", "file", source, None)])).decode()
    body = mlp_config(
        entrypoint="model_def:MLPTrial",
        resources={"slots_per_trial": 2},
        searcher={"max_length": {"batches": 6}},
        min_validation_period={"batches": 3},
        checkpoint_storage={"type": "shared_fs", "host_path": str(tmp_path / "ckpt")},
    )
    (tmp_path / "ckpt").mkdir()
    with ray_master(tmp_path, ray_rm) as (_, api):
        response = api.post("/api/v1/experiments", json={"config": body, "contextArchive": archive})
        assert response.status_code == 200, response.text
        exp_id = int(response.json()["experiment"]["id"])
        wait_ended(api, exp_id)
        (trial,) = trials_of(api, exp_id)
        logs = api.get(f"/api/v1/trials/{trial['id']}/logs").json()
        assert exp_state(api, exp_id) == "STATE_COMPLETED", logs
        _assert_placed_by_ray(trial, 2)
        assert [b for b, _ in metrics(api, trial["id"], "validation")] == [3, 6]
        assert completed_checkpoints(api, trial["id"])
        # Both ranks joined one gloo group (the PyTorch plugin logs its placement per rank).
        messages = " ".join(str(entry) for entry in _log_entries(logs))
        assert "rank 1/2" in messages and "gloo" in messages, messages[-2000:]


def _log_entries(body: Any) -> list[Any]:
    if isinstance(body, dict):
        for key in ("logs", "trialLogs", "items"):
            if isinstance(body.get(key), list):
                return list(body[key])
    return list(body) if isinstance(body, list) else [body]
