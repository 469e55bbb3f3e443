"""A master stopped and started again on the same database keeps everything it recorded.

One of each: an experiment created through the API with its context, a trial, training and
validation metrics, a trial log line, a checkpoint, a model with a version. The second
master (same database, same storage) must answer every read the same as the first did.
"""

from __future__ import annotations

import base64
import io
import tarfile
from pathlib import Path
from typing import Any

import httpx

from detlite.master.orm import Experiment
from detlite.master.queries import trials as trial_queries
from tests.master.conftest import live_master, make_settings
from tests.master.factories import experiment_config, make_checkpoint


def _archive() -> str:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        data = b"print('hello')\n"
        info = tarfile.TarInfo("model_def.py")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return base64.b64encode(buffer.getvalue()).decode()


def _reads(client: httpx.Client, exp_id: int, trial_id: int, uuid: str) -> dict[str, Any]:
    paths = [
        f"/api/v1/experiments/{exp_id}",
        f"/api/v1/experiments/{exp_id}/model_def",
        f"/api/v1/experiments/{exp_id}/trials",
        f"/api/v1/trials/{trial_id}",
        f"/api/v1/trials/{trial_id}/metrics?kind=training",
        f"/api/v1/trials/{trial_id}/metrics?kind=validation",
        f"/api/v1/trials/{trial_id}/logs",
        f"/api/v1/checkpoints/{uuid}",
        f"/api/v1/experiments/{exp_id}/checkpoints",
        "/api/v1/models/kept",
        "/api/v1/models/kept/versions",
    ]
    answers = {}
    for path in paths:
        response = client.get(path)
        assert response.status_code == 200, (path, response.text)
        answers[path] = response.json()
    return answers


def test_a_restarted_master_keeps_everything(database_url: str, tmp_path: Path) -> None:
    storage = tmp_path / "ckpts"
    storage.mkdir()
    settings = make_settings(database_url, tmp_path)
    with live_master(settings) as first:
        token = first.login("determined")
        with first.client(token) as client:
            created = client.post(
                "/api/v1/experiments",
                json={"config": experiment_config(storage), "contextArchive": _archive()},
            )
            assert created.status_code == 200, created.text
            exp_id = created.json()["experiment"]["id"]
            with first.db() as db:
                row = db.get(Experiment, exp_id)
                assert row is not None
                # As the scheduler will: trials are created by the master, not over HTTP.
                trial = trial_queries.create_trial(db, row, "req-1", {"lr": 0.1}, seed=7)
                db.commit()
                trial_id = trial.id
            reports = {
                "trainingMetrics": [
                    {"stepsCompleted": n, "metrics": {"loss": 1.0 / n}} for n in (10, 20)
                ],
                "validationMetrics": [{"stepsCompleted": 20, "metrics": {"validation_loss": 0.3}}],
            }
            response = client.post(f"/api/v1/trials/{trial_id}/metrics", json=reports)
            assert response.status_code == 200, response.text
            log = {"logs": [{"message": "step 20 done", "level": "INFO", "rank": 0}]}
            assert client.post(f"/api/v1/trials/{trial_id}/logs", json=log).status_code == 200
            with first.db() as db:
                trial_row = trial_queries.get_trial(db, trial_id)
                uuid = make_checkpoint(db, trial_row, 20, write_to=storage).uuid
            assert client.post("/api/v1/models/kept", json={"description": "d"}).is_success
            version = client.post("/api/v1/models/kept/versions", json={"checkpointUuid": uuid})
            assert version.status_code == 200, version.text
            before = _reads(client, exp_id, trial_id, uuid)

    with live_master(settings) as second, second.client(token) as client:
        after = _reads(client, exp_id, trial_id, uuid)
    assert after == before
    assert len(after[f"/api/v1/trials/{trial_id}/metrics?kind=training"]["metrics"]) == 2
    assert after["/api/v1/models/kept/versions"]["modelVersions"][0]["checkpoint"]["uuid"] == uuid
