"""Real ``optuna`` searches: trial workers on the local resource manager, the master's database
holding the study, the fake framework's LinearTrial as the (fast) trial.

- ``create(..., local=True)`` runs a TPE + ASHA search and a TPE + median search on the
  embedded master to COMPLETED; every trial reached the study with its validations;
- a ``detlite master`` killed (SIGKILL) mid-search and started again on its database
  continues the same study: no trial is repeated or lost.
"""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from detlite.api import ExperimentState
from detlite.experimental import create
from detlite.experimental._embedded import current_embedded_master, stop_embedded_master
from detlite.launch import free_port
from detlite.master import db as master_db
from detlite.master.orm import Experiment
from detlite.testing import LinearTrial, linear_config
from tests.e2e import test_search_local as e2e


@pytest.fixture(autouse=True)
def _fake_framework_in_workers(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("DETLITE_EXTRA_PLUGINS", "detlite.testing:FakeFrameworkPlugin")
    monkeypatch.setenv("DETLITE_MASTER_RETRY_S", "30")
    yield
    stop_embedded_master()


def hyperparameters() -> dict[str, Any]:
    hparams = linear_config()["hyperparameters"]
    hparams["lr"] = {"type": "log", "minval": -2.5, "maxval": -0.5}
    hparams["momentum"] = {"type": "double", "minval": 0.0, "maxval": 0.9}
    return hparams


def run_to_the_end(tmp_path: Path, cfg: dict[str, Any]) -> tuple[Any, Any]:
    """An experiment of ``cfg`` run to COMPLETED on the embedded master, and that master."""
    ctx = tmp_path / "ctx"
    ctx.mkdir(exist_ok=True)
    ref = create(LinearTrial, cfg, local=True, context_dir=str(ctx))
    assert ref.get_state() is ExperimentState.COMPLETED
    embedded = current_embedded_master()
    assert embedded is not None
    return ref, embedded


@contextmanager
def signed_in(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url) as api:
        login = api.post("/api/v1/auth/login", json={"username": "determined"})
        api.headers["Authorization"] = f"Bearer {login.json()['token']}"
        yield api


def searcher_state(db_url: str, exp_id: int) -> dict[str, Any]:
    engine = master_db.create_engine(db_url)
    try:
        with master_db.make_sessionmaker(engine)() as session:
            state = session.scalar(
                sa.select(Experiment.searcher_state).where(Experiment.id == exp_id)
            )
            assert isinstance(state, dict)
            return state
    finally:
        engine.dispose()


def validation_losses(api: httpx.Client, trial_id: int) -> list[list[float]]:
    return [[n, m["validation_loss"]] for n, m in e2e.metrics(api, trial_id, "validation")]


def check_study(state: dict[str, Any], validations: dict[str, list[list[float]]]) -> None:
    """The study holds one finished trial per detlite trial, with its validations."""
    method = state["method"]
    records = method["study"]["trials"]
    assert len(records) == len(validations)
    assert {r["state"] for r in records} <= {"COMPLETE", "PRUNED"}
    for rid, number in method["numbers"]:
        assert records[number]["intermediate"] == validations[str(rid)]


@pytest.mark.parametrize("early_stopping", ["asha", "median"])
def test_search_on_the_embedded_master(tmp_path: Path, early_stopping: str) -> None:
    cfg = linear_config()
    cfg["hyperparameters"] = hyperparameters()
    cfg["searcher"] = {
        "name": "optuna",
        "metric": "validation_loss",
        "max_trials": 6,
        "max_length": {"batches": 8},
        "max_concurrent_trials": 2,
        "early_stopping": early_stopping,
        "divisor": 2,
        "sampler_options": {"n_startup_trials": 2},
    }
    ref, embedded = run_to_the_end(tmp_path, cfg)
    with signed_in(embedded.url) as api:
        trials = e2e.trials_of(api, ref.id)
        validations = {t["requestId"]: validation_losses(api, t["id"]) for t in trials}
    assert len(trials) == 6
    assert len({json.dumps(t["hparams"], sort_keys=True) for t in trials}) == 6
    check_study(searcher_state(embedded.settings.db_url, ref.id), validations)
    lengths = {v[-1][0] for v in validations.values()}
    assert 8 in lengths  # someone trained to max_length
    if early_stopping == "asha":
        assert min(lengths) < 8 and lengths <= {2, 4, 8}  # the others stopped at rungs


def test_a_two_objective_search_and_its_pareto_front(tmp_path: Path) -> None:
    # validation_loss down and abs_error up pull apart: the front has more than one trial.
    cfg = linear_config()
    cfg["hyperparameters"] = hyperparameters()
    cfg["searcher"] = {
        "name": "optuna",
        "sampler": "nsga2",
        "sampler_options": {"population_size": 2},
        "metric": "validation_loss",
        "more_objectives": [{"metric": "abs_error", "smaller_is_better": False}],
        "max_trials": 6,
        "max_length": {"batches": 4},
        "max_concurrent_trials": 2,
    }
    ref, embedded = run_to_the_end(tmp_path, cfg)
    single, _ = run_to_the_end(tmp_path, linear_config())
    with signed_in(embedded.url) as api:
        finals = {
            t["requestId"]: e2e.metrics(api, t["id"], "validation")[-1][1]
            for t in e2e.trials_of(api, ref.id)
        }
        ids = {t["requestId"]: t["id"] for t in e2e.trials_of(api, ref.id)}
        pareto = api.get(f"/api/v1/ui/experiments/{ref.id}/pareto").json()
        assert api.get(f"/api/v1/ui/experiments/{single.id}/pareto").json() == {
            "objectives": [],
            "points": [],
        }
    method = searcher_state(embedded.settings.db_url, ref.id)["method"]
    records = method["study"]["trials"]
    assert len(records) == len(finals) == 6
    for rid, number in method["numbers"]:
        values = [finals[str(rid)]["validation_loss"], finals[str(rid)]["abs_error"]]
        assert records[number]["state"] == "COMPLETE"
        assert records[number]["values"] == values
    assert pareto["objectives"] == [
        {"metric": "validation_loss", "smallerIsBetter": True},
        {"metric": "abs_error", "smallerIsBetter": False},
    ]
    by_trial = {ids[rid]: [m["validation_loss"], m["abs_error"]] for rid, m in finals.items()}
    assert {p["trialId"]: p["values"] for p in pareto["points"]} == by_trial

    def dominated(v: list[float]) -> bool:
        return any(w != v and w[0] <= v[0] and w[1] >= v[1] for w in by_trial.values())

    front = {p["trialId"] for p in pareto["points"] if p["onFront"]}
    assert front == {t for t, v in by_trial.items() if not dominated(v)}
    assert front


def test_a_killed_master_continues_the_same_study(tmp_path: Path) -> None:
    port = free_port()
    db_url = f"sqlite:///{tmp_path / 'master.db'}"
    searcher = {
        "name": "optuna",
        "max_trials": 6,
        "max_length": {"batches": 12},
        "max_concurrent_trials": 2,
        "early_stopping": "asha",
        "divisor": 2,
        "sampler_options": {"n_startup_trials": 2},
    }
    hparams = {**hyperparameters(), "sleep": 0.1}
    first = e2e._start_master(tmp_path, port)
    second = None
    url = f"http://127.0.0.1:{port}"
    try:
        login = httpx.post(f"{url}/api/v1/auth/login", json={"username": "determined"})
        headers = {"Authorization": f"Bearer {login.json()['token']}"}
        with httpx.Client(base_url=url, headers=headers) as api:
            exp_id = e2e.create(api, e2e.config(tmp_path, searcher, hyperparameters=hparams))

            def validated() -> int:
                found = e2e.trials_of(api, exp_id)
                return sum(bool(e2e.metrics(api, t["id"], "validation")) for t in found)

            e2e.wait_for("three trials with a validation", lambda: validated() >= 3)
        first.send_signal(signal.SIGKILL)
        first.wait()
        before = searcher_state(db_url, exp_id)["method"]["study"]["trials"]
        # Killed mid-search: the study has results, and trials it still waits for.
        assert len(before) >= 3
        assert any(r["state"] == "RUNNING" for r in before) or len(before) < 6
        second = e2e._start_master(tmp_path, port)
        with httpx.Client(base_url=url, headers=headers) as api:
            e2e.wait_for("the search to end", lambda: e2e.exp_state(api, exp_id) in e2e.ENDED)
            assert e2e.exp_state(api, exp_id) == "STATE_COMPLETED"
            trials = e2e.trials_of(api, exp_id)
            validations = {t["requestId"]: validation_losses(api, t["id"]) for t in trials}
        assert len(trials) == 6
        assert len({json.dumps(t["hparams"], sort_keys=True) for t in trials}) == 6
        state = searcher_state(db_url, exp_id)
        check_study(state, validations)
        after = state["method"]["study"]["trials"]
        # The trials the first master had asked for are the first ones of the same study.
        assert [r["params"] for r in after[: len(before)]] == [r["params"] for r in before]
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
