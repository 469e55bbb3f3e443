"""Metrics over HTTP: single and batched reports, idempotent repeats, restarts (the latest
trialRunId wins per batch), batches trained, value rules, ended trials, permissions."""

from __future__ import annotations

import json
from typing import Any

import httpx

from detlite.api.enums import ExperimentState
from detlite.master.orm import Checkpoint, TrainingMetrics, Trial
from tests.master.conftest import LiveMaster, assert_error
from tests.master.factories import make_checkpoint
from tests.master.test_experiments import add_trial, make_user, post_experiment


def post_json(client: httpx.Client, url: str, body: Any) -> httpx.Response:
    # json.dumps keeps NaN and Infinity as bare tokens, as a Python worker would send them.
    return client.post(url, content=json.dumps(body), headers={"Content-Type": "application/json"})


def read(client: httpx.Client, url: str, **params: Any) -> list[tuple[int, int, Any]]:
    response = client.get(url, params=params)
    assert response.status_code == 200, response.text
    return [
        (row["trialRunId"], row["stepsCompleted"], row["metrics"])
        for row in response.json()["metrics"]
    ]


def test_reports_are_idempotent_and_restarts_win(master: LiveMaster) -> None:
    with master.client(master.login("determined")) as client:
        exp_id = post_experiment(client)["experiment"]["id"]
        trial_id = add_trial(master, exp_id, "r1")
        base = f"/api/v1/trials/{trial_id}"

        def train(batches: int, loss: float, run: int | None = None) -> None:
            report: dict[str, Any] = {"stepsCompleted": batches, "metrics": {"loss": loss}}
            if run is not None:
                report["trialRunId"] = run
            response = post_json(client, f"{base}/training_metrics", {"trainingMetrics": report})
            assert response.status_code == 200, response.text
            assert response.json() == {}

        train(10, 1.0)
        train(20, 0.9)
        train(20, 0.8)  # a retry after a crash: replaces, never duplicates
        assert read(client, f"{base}/metrics") == [
            (0, 10, {"loss": 1.0}),
            (0, 20, {"loss": 0.8}),
        ]
        # The worker restarts from the checkpoint at batch 10 (trialRunId 1).
        with master.db() as db:
            row = db.get(Trial, trial_id)
            assert row is not None
            row.restarts = 1
            db.commit()
        train(20, 0.7)  # trialRunId defaults to the trial's restarts
        train(30, 0.6, run=1)
        train(20, 0.75, run=0)  # a late straggler of the old run loses to the new run
        assert read(client, f"{base}/metrics") == [
            (0, 10, {"loss": 1.0}),
            (1, 20, {"loss": 0.7}),
            (1, 30, {"loss": 0.6}),
        ]
        with master.db() as db:
            assert db.query(TrainingMetrics).filter_by(trial_id=trial_id).count() == 4
            row = db.get(Trial, trial_id)
            assert row is not None and row.batches_trained == 30
        train(5, 2.0)  # batches trained only ever rises
        got = client.get(f"/api/v1/trials/{trial_id}").json()["trial"]
        assert got["totalBatchesProcessed"] == 30
        assert read(client, f"{base}/metrics", offset=1, limit=2) == [
            (0, 10, {"loss": 1.0}),
            (1, 20, {"loss": 0.7}),
        ]
        assert read(client, f"{base}/metrics", kind="validation") == []
        assert_error(client.get(f"{base}/metrics", params={"kind": "testing"}), 400, "kind")


def test_batched_reports_validation_links_and_experiment_metrics(master: LiveMaster) -> None:
    with master.client(master.login("determined")) as client:
        exp_id = post_experiment(client)["experiment"]["id"]
        first = add_trial(master, exp_id, "r1")
        second = add_trial(master, exp_id, "r2")
        with master.db() as db:
            row = db.get(Trial, first)
            assert row is not None
            uuid = make_checkpoint(db, row, 20).uuid
        body = {
            "trainingMetrics": [
                {"stepsCompleted": b, "metrics": {"loss": 1.0 / b, "per_batch": [1, 2]}}
                for b in (10, 20, 30)
            ]
            + [{"stepsCompleted": 10, "metrics": {"loss": 0.5}}],  # last of a key wins
            "validationMetrics": [
                {"stepsCompleted": 20, "metrics": {"validation_loss": 0.25}, "numInputs": 12},
                {"stepsCompleted": 30, "metrics": {"validation_loss": float("nan")}},
            ],
        }
        response = post_json(client, f"/api/v1/trials/{first}/metrics", body)
        assert response.json() == {"training": 3, "validation": 2}
        one = {"stepsCompleted": 5, "metrics": {"loss": 3.0}}
        bare = post_json(client, f"/api/v1/trials/{second}/training_metrics", one)
        assert bare.status_code == 200, bare.text  # Determined's unwrapped body
        assert read(client, f"/api/v1/trials/{first}/metrics") == [
            (0, 10, {"loss": 0.5}),
            (0, 20, {"loss": 0.05, "per_batch": [1, 2]}),
            (0, 30, {"loss": 1 / 30, "per_batch": [1, 2]}),
        ]
        validations = client.get(
            f"/api/v1/trials/{first}/metrics", params={"kind": "validation"}
        ).json()["metrics"]
        assert [v["numInputs"] for v in validations] == [12, None]
        assert validations[1]["metrics"] == {"validation_loss": "NaN"}  # stored by name
        with master.db() as db:  # the checkpoint at batch 20 got its validation
            ckpt = db.get(Checkpoint, uuid)
            assert ckpt is not None and ckpt.searcher_metric == 0.25
            assert ckpt.validation_id is not None
        everything = read(client, f"/api/v1/experiments/{exp_id}/metrics")
        assert [(run, b) for run, b, _ in everything] == [(0, 10), (0, 20), (0, 30), (0, 5)]
        page = client.get(
            f"/api/v1/experiments/{exp_id}/metrics", params={"kind": "validation", "limit": 1}
        ).json()
        assert page["pagination"]["total"] == 2 and len(page["metrics"]) == 1
        assert_error(client.get("/api/v1/experiments/31337/metrics"), 404)


def test_bad_reports_are_refused_and_nothing_is_half_written(master: LiveMaster) -> None:
    stranger = make_user(master, "dave")
    with master.client(master.login("determined")) as client:
        exp_id = post_experiment(client)["experiment"]["id"]
        trial_id = add_trial(master, exp_id, "r1")
        url = f"/api/v1/trials/{trial_id}/training_metrics"

        def bad(report: Any, status: int = 400, contains: str = "") -> None:
            assert_error(post_json(client, url, {"trainingMetrics": report}), status, contains)

        bad({"stepsCompleted": 1, "metrics": [1, 2]})
        bad({"stepsCompleted": 1, "metrics": "loss=1"})
        bad({"stepsCompleted": -1, "metrics": {}})
        bad({"stepsCompleted": 2**31, "metrics": {}})
        bad({"metrics": {}})
        # Infinities are stored by name (tests/robustness/test_poison_values.py); an integer
        # no double holds is refused, naming where it is.
        bad({"stepsCompleted": 1, "metrics": {"loss": 10**400}}, contains="metrics.loss")
        bad({"stepsCompleted": 1, "metrics": {"a": [0, {"b": -(10**400)}]}}, 400, "a.1.b")
        bad({"stepsCompleted": 1, "trialId": trial_id + 1, "metrics": {}}, contains="trialId")
        batch = {
            "trainingMetrics": [
                {"stepsCompleted": 1, "metrics": {"ok": 1}},
                {"stepsCompleted": 2, "metrics": {"loss": 10**400}},
            ]
        }
        assert_error(post_json(client, f"/api/v1/trials/{trial_id}/metrics", batch), 400)
        too_many = {"trainingMetrics": [{"stepsCompleted": 1, "metrics": {}}] * 10_001}
        assert_error(client.post(f"/api/v1/trials/{trial_id}/metrics", json=too_many), 400)
        assert read(client, f"/api/v1/trials/{trial_id}/metrics") == []
        good = {"trainingMetrics": {"stepsCompleted": 1, "metrics": {"loss": 1}}}
        assert_error(client.post("/api/v1/trials/999999/training_metrics", json=good), 404)
    with master.client(stranger) as client:
        assert_error(client.post(url, json=good), 403, "another user")
        assert read(client, f"/api/v1/trials/{trial_id}/metrics") == []  # reading is open
    with master.db() as db:
        row = db.get(Trial, trial_id)
        assert row is not None
        row.state = ExperimentState.COMPLETED
        db.commit()
    with master.client(master.login("admin")) as client:
        assert_error(client.post(url, json=good), 409, "ended trial")
        fine = {"trainingMetrics": [{"stepsCompleted": 1, "metrics": {"ok": 1}}]}
        assert_error(post_json(client, f"/api/v1/trials/{trial_id}/metrics", fine), 409)
