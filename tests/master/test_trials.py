"""Trials over HTTP: get one (with its best and latest validation and best checkpoint), list
an experiment's with filters, sorts and pages, kill one; and create_trial's rules."""

from __future__ import annotations

import json
from typing import Any

import pytest

from detlite.api.enums import CheckpointState, ExperimentState
from detlite.errors import Conflict
from detlite.master.orm import Experiment, Trial
from detlite.master.queries.trials import create_trial
from tests.master.conftest import LiveMaster, assert_error
from tests.master.factories import make_checkpoint
from tests.master.test_experiments import add_trial, make_user, post_experiment


def report(client: Any, trial_id: int, kind: str, batches: int, **metrics: Any) -> None:
    body = {f"{kind}Metrics": {"stepsCompleted": batches, "metrics": metrics}}
    # json.dumps writes NaN as the bare token NaN (httpx's json= refuses it), as Python
    # workers' JSON encoders do.
    response = client.post(
        f"/api/v1/trials/{trial_id}/{kind}_metrics",
        content=json.dumps(body),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text


def test_get_trial_with_validations_and_best_checkpoint(master: LiveMaster) -> None:
    with master.client(master.login("determined")) as client:
        exp_id = post_experiment(client)["experiment"]["id"]  # validation_loss, smaller better
        trial_id = add_trial(master, exp_id, "r1", {"lr": 0.5})
        trial = client.get(f"/api/v1/trials/{trial_id}").json()["trial"]
        assert trial["experimentId"] == exp_id and trial["hparams"] == {"lr": 0.5}
        assert trial["state"] == "STATE_ACTIVE" and trial["requestId"] == "r1"
        assert trial["seed"] == 3 and trial["restarts"] == 0
        assert trial["totalBatchesProcessed"] == 0 and trial["endTime"] is None
        assert trial["bestValidation"] is None and trial["latestValidation"] is None
        assert trial["bestCheckpoint"] is None

        report(client, trial_id, "training", 30, loss=1.0)
        report(client, trial_id, "validation", 10, validation_loss=0.7)
        report(client, trial_id, "validation", 20, validation_loss=0.3)
        report(client, trial_id, "validation", 30, validation_loss=float("nan"))
        with master.db() as db:
            row = db.get(Trial, trial_id)
            assert row is not None
            for batches, state in [(10, CheckpointState.COMPLETED), (20, CheckpointState.ERROR)]:
                make_checkpoint(
                    db, row, batches, state, uuid=f"00000000-0000-0000-0000-0000000000{batches}"
                )
        # A validation reported after its checkpoint links it (and copies the metric).
        report(client, trial_id, "validation", 10, validation_loss=0.6)
        trial = client.get(f"/api/v1/trials/{trial_id}").json()["trial"]
        assert trial["totalBatchesProcessed"] == 30
        assert trial["bestValidation"]["stepsCompleted"] == 20  # NaN never wins
        assert trial["bestValidation"]["metrics"] == {"validation_loss": 0.3}
        assert trial["latestValidation"]["stepsCompleted"] == 30
        assert trial["latestValidation"]["metrics"] == {"validation_loss": "NaN"}
        # The better checkpoint (batch 20) is in ERROR: only COMPLETED ones count.
        assert trial["bestCheckpoint"]["uuid"].endswith("10")
        assert trial["bestCheckpoint"]["searcherMetric"] == 0.6
        assert trial["bestCheckpoint"]["totalBatches"] == 10
        assert_error(client.get("/api/v1/trials/987654"), 404, "trial 987654 not found")


def test_list_trials_filters_sorts_and_pages(master: LiveMaster) -> None:
    with master.client(master.login("determined")) as client:
        exp_id = post_experiment(client)["experiment"]["id"]
        ids = [add_trial(master, exp_id, f"r{i}", {"i": i}) for i in range(4)]
        for trial_id, batches, loss in zip(
            ids, [40, 10, 30, 20], [0.4, 0.1, None, 0.2], strict=True
        ):
            report(client, trial_id, "training", batches, loss=1.0)
            if loss is not None:
                report(client, trial_id, "validation", batches, validation_loss=loss)
        assert client.post(f"/api/v1/trials/{ids[3]}/kill").status_code == 200
        url = f"/api/v1/experiments/{exp_id}/trials"

        def listed(**params: Any) -> list[int]:
            response = client.get(url, params=params)
            assert response.status_code == 200, response.text
            return [t["id"] for t in response.json()["trials"]]

        assert listed() == ids
        assert listed(order_by="DESC") == ids[::-1]
        assert listed(sort_by="SORT_BY_BATCHES_PROCESSED") == [ids[1], ids[3], ids[2], ids[0]]
        assert listed(sort_by=9, order_by=2) == [ids[0], ids[2], ids[3], ids[1]]
        assert listed(sort_by="BEST_VALIDATION_METRIC") == [ids[1], ids[3], ids[0], ids[2]]
        assert listed(sort_by=8, order_by="DESC") == [ids[0], ids[3], ids[1], ids[2]]
        assert listed(sort_by="STATE") == [ids[0], ids[1], ids[2], ids[3]]
        assert listed(states="STATE_STOPPING_KILLED") == [ids[3]]
        assert listed(states=["ACTIVE"]) == ids[:3]
        page = client.get(url, params={"offset": 1, "limit": 2, "sort_by": 7}).json()
        assert [t["id"] for t in page["trials"]] == [ids[3], ids[0]]
        assert page["pagination"]["total"] == 4 and page["pagination"]["endIndex"] == 3
        assert len(listed(sort_by="DURATION", offset=-1, limit=1)) == 1
        assert_error(client.get(url, params={"sort_by": "SORT_BY_LUCK"}), 400, "sort_by")
        assert_error(client.get("/api/v1/experiments/5555/trials"), 404)


def test_kill_trial_and_permissions(master: LiveMaster) -> None:
    stranger = make_user(master, "carol")
    with master.client(master.login("determined")) as client:
        exp_id = post_experiment(client)["experiment"]["id"]
        running = add_trial(master, exp_id, "r1")
        paused = add_trial(master, exp_id, "r2")
        with master.db() as db:
            row = db.get(Trial, paused)
            assert row is not None
            row.state = ExperimentState.PAUSED
            db.commit()
    with master.client(stranger) as client:
        assert_error(client.post(f"/api/v1/trials/{running}/kill"), 403, "another user")
        assert client.get(f"/api/v1/trials/{running}").status_code == 200  # reading is open
    with master.client(master.login("determined")) as client:
        killed = client.post(f"/api/v1/trials/{running}/kill").json()["trial"]
        assert killed["state"] == "STATE_STOPPING_KILLED"  # the scheduler stops its workers
        killed = client.post(f"/api/v1/trials/{paused}/kill").json()["trial"]
        assert killed["state"] == "STATE_CANCELED" and killed["endTime"] is not None
        again = client.post(f"/api/v1/trials/{paused}/kill").json()["trial"]
        assert again["state"] == "STATE_CANCELED"
        # Killing trials alone does not end the experiment (the searcher may go on).
        state = client.get(f"/api/v1/experiments/{exp_id}").json()["experiment"]["state"]
        assert state == "STATE_ACTIVE"
        assert_error(client.post("/api/v1/trials/777777/kill"), 404)


def test_create_trial_rules(master: LiveMaster) -> None:
    with master.client(master.login("determined")) as client:
        paused_id = post_experiment(client, activate=False)["experiment"]["id"]
        ended_id = post_experiment(client)["experiment"]["id"]
        client.post(f"/api/v1/experiments/{ended_id}/cancel")
    with master.db() as db:
        paused = db.get(Experiment, paused_id)
        ended = db.get(Experiment, ended_id)
        assert paused is not None and ended is not None
        trial = create_trial(db, paused, "a", {"x": 1}, seed=9)
        assert trial.state == ExperimentState.PAUSED and trial.seed == 9
        with pytest.raises(Conflict, match="already has trial"):
            create_trial(db, paused, "a", {"x": 2}, seed=9)
        with pytest.raises(Conflict, match="gets new trials"):
            create_trial(db, ended, "b", {}, seed=1)
        db.commit()
