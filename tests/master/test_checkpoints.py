"""The checkpoints API over real HTTP, on SQLite and PostgreSQL.

Rows are arranged with ``tests.master.factories`` (straight through the ORM), then read and
changed through the routes: the v1 shape, listings with every sort, filter and page option,
metadata edits and who may make them, the trial worker's reports and their state rules,
and file access through the master.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import httpx

from detlite.api.enums import CheckpointState
from detlite.master.orm import Checkpoint
from detlite.testing.fake import STATE_FILE
from tests.master.conftest import LiveMaster, assert_error
from tests.master.factories import (
    file_records,
    make_checkpoint,
    make_experiment,
    make_trial,
    make_validation,
)

CHECKPOINT_KEYS = {
    "uuid",
    "experimentConfig",
    "experimentId",
    "trialId",
    "hparams",
    "batchNumber",
    "startTime",
    "endTime",
    "resources",
    "metadata",
    "framework",
    "format",
    "determinedVersion",
    "metrics",
    "validationState",
    "state",
    "searcherMetric",
    "files",
    "storageId",
}


def _uuids(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [c["uuid"] for c in response.json()["checkpoints"]]


def _arrange(master: LiveMaster, storage: Path) -> dict[str, Any]:
    """Two trials; checkpoints in every state, some with validations."""
    with master.db() as db:
        exp = make_experiment(db, storage_path=storage)
        t1 = make_trial(db, exp, {"lr": 0.1, "global_batch_size": 4})
        t2 = make_trial(db, exp)
        v1 = make_validation(db, t1, 10, {"validation_loss": 0.9, "accuracy": 0.5})
        v2 = make_validation(db, t1, 20, {"validation_loss": 0.3})
        v3 = make_validation(db, t2, 10, {"validation_loss": 0.6})
        rows = {
            "a": make_checkpoint(
                db,
                t1,
                10,
                validation=v1,
                uuid="aaaaaaaa-0000-4000-8000-000000000010",
                metadata={"k": 1},
            ),
            "b": make_checkpoint(
                db, t1, 20, validation=v2, uuid="bbbbbbbb-0000-4000-8000-000000000020"
            ),
            "c": make_checkpoint(db, t1, 30, uuid="cccccccc-0000-4000-8000-000000000030"),
            "d": make_checkpoint(
                db, t2, 10, validation=v3, uuid="dddddddd-0000-4000-8000-000000000010"
            ),
            "e": make_checkpoint(
                db,
                t2,
                20,
                state=CheckpointState.ACTIVE,
                uuid="eeeeeeee-0000-4000-8000-000000000020",
            ),
            "f": make_checkpoint(
                db,
                t2,
                5,
                state=CheckpointState.DELETED,
                uuid="ffffffff-0000-4000-8000-000000000005",
            ),
        }
        # Distinct start times, oldest first in uuid order, for the time sorts.
        base = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
        for i, key in enumerate(sorted(rows)):
            row = db.get(Checkpoint, rows[key].uuid)
            assert row is not None
            row.start_time = base + dt.timedelta(minutes=i)
            if row.end_time is not None:
                row.end_time = base + dt.timedelta(minutes=10 - i)
        db.commit()
        return {"exp": exp.id, "t1": t1.id, "t2": t2.id, "v1": v1.id}


def test_get_and_list_checkpoints(master: LiveMaster, tmp_path: Path) -> None:
    ids = _arrange(master, tmp_path / "ckpts")
    exp, t1, t2 = ids["exp"], ids["t1"], ids["t2"]
    token = master.login("determined")
    with master.client(token) as client:
        # One checkpoint, in the v1 shape plus files and storageId.
        body = client.get("/api/v1/checkpoints/aaaaaaaa-0000-4000-8000-000000000010").json()
        ckpt = body["checkpoint"]
        assert set(ckpt) == CHECKPOINT_KEYS
        assert ckpt["experimentId"] == exp and ckpt["trialId"] == t1
        assert ckpt["hparams"] == {"lr": 0.1, "global_batch_size": 4}
        assert ckpt["batchNumber"] == 10
        assert ckpt["state"] == "STATE_COMPLETED"
        assert ckpt["validationState"] == "STATE_COMPLETED"
        assert ckpt["metrics"] == {
            "numInputs": 12,
            "validationMetrics": {"validation_loss": 0.9, "accuracy": 0.5},
        }
        assert ckpt["searcherMetric"] == 0.9
        assert ckpt["metadata"] == {"k": 1}
        assert ckpt["experimentConfig"]["searcher"]["metric"] == "validation_loss"
        assert ckpt["experimentConfig"]["checkpoint_storage"]["type"] == "shared_fs"
        assert ckpt["framework"] == "fake-1.0" and ckpt["format"] == "fake-json"
        assert ckpt["determinedVersion"] == "0.0.0"
        assert set(ckpt["files"]) == {STATE_FILE, "code/model_def.py", "metadata.json"}
        for path, record in ckpt["files"].items():
            assert ckpt["resources"][path] == str(record["size"])
            assert len(record["sha256"]) == 64
        assert ckpt["startTime"].startswith("2024-01-01T00:00:00")
        unvalidated = client.get("/api/v1/checkpoints/cccccccc-0000-4000-8000-000000000030").json()[
            "checkpoint"
        ]
        assert unvalidated["metrics"] is None
        assert unvalidated["validationState"] == "STATE_UNSPECIFIED"
        assert unvalidated["searcherMetric"] is None
        assert_error(client.get("/api/v1/checkpoints/nope"), 404, "'nope'")

        # Experiment listing: default sort TRIAL_ID (then batches), ascending.
        listing = client.get(f"/api/v1/experiments/{exp}/checkpoints")
        assert _uuids(listing) == [
            "aaaaaaaa-0000-4000-8000-000000000010",
            "bbbbbbbb-0000-4000-8000-000000000020",
            "cccccccc-0000-4000-8000-000000000030",
            "ffffffff-0000-4000-8000-000000000005",
            "dddddddd-0000-4000-8000-000000000010",
            "eeeeeeee-0000-4000-8000-000000000020",
        ]
        assert listing.json()["pagination"] == {
            "offset": 0,
            "limit": 0,
            "startIndex": 0,
            "endIndex": 6,
            "total": 6,
        }
        url = f"/api/v1/experiments/{exp}/checkpoints"
        # What top_n_checkpoints sends: COMPLETED checkpoints with a COMPLETED validation.
        top = client.get(url, params={"states": 2, "validation_states": 2})
        assert _uuids(top) == [
            "aaaaaaaa-0000-4000-8000-000000000010",
            "bbbbbbbb-0000-4000-8000-000000000020",
            "dddddddd-0000-4000-8000-000000000010",
        ]
        best = client.get(url, params={"sort_by": 17, "validation_states": "STATE_COMPLETED"})
        assert _uuids(best) == [
            "bbbbbbbb-0000-4000-8000-000000000020",
            "dddddddd-0000-4000-8000-000000000010",
            "aaaaaaaa-0000-4000-8000-000000000010",
        ]
        by_metric = client.get(url, params={"sort_by": "SORT_BY_SEARCHER_METRIC", "order_by": 2})
        # NULLs last in either direction.
        assert _uuids(by_metric)[:3] == [
            "aaaaaaaa-0000-4000-8000-000000000010",
            "dddddddd-0000-4000-8000-000000000010",
            "bbbbbbbb-0000-4000-8000-000000000020",
        ]
        assert set(_uuids(by_metric)[3:]) == {
            "cccccccc-0000-4000-8000-000000000030",
            "eeeeeeee-0000-4000-8000-000000000020",
            "ffffffff-0000-4000-8000-000000000005",
        }
        assert _uuids(client.get(url, params={"sort_by": "UUID", "order_by": "DESC"})) == [
            "ffffffff-0000-4000-8000-000000000005",
            "eeeeeeee-0000-4000-8000-000000000020",
            "dddddddd-0000-4000-8000-000000000010",
            "cccccccc-0000-4000-8000-000000000030",
            "bbbbbbbb-0000-4000-8000-000000000020",
            "aaaaaaaa-0000-4000-8000-000000000010",
        ]
        by_start = client.get(url, params={"sort_by": 7, "order_by": "ORDER_BY_DESC"})
        assert _uuids(by_start) == [
            "ffffffff-0000-4000-8000-000000000005",
            "eeeeeeee-0000-4000-8000-000000000020",
            "dddddddd-0000-4000-8000-000000000010",
            "cccccccc-0000-4000-8000-000000000030",
            "bbbbbbbb-0000-4000-8000-000000000020",
            "aaaaaaaa-0000-4000-8000-000000000010",
        ]
        by_end = _uuids(client.get(url, params={"sort_by": "END_TIME"}))
        assert by_end == [
            "ffffffff-0000-4000-8000-000000000005",
            "dddddddd-0000-4000-8000-000000000010",
            "cccccccc-0000-4000-8000-000000000030",
            "bbbbbbbb-0000-4000-8000-000000000020",
            "aaaaaaaa-0000-4000-8000-000000000010",
            "eeeeeeee-0000-4000-8000-000000000020",
        ]  # ACTIVE: no end
        by_state = _uuids(client.get(url, params={"sort_by": 16}))
        assert (
            by_state[0] == "eeeeeeee-0000-4000-8000-000000000020"
            and by_state[-1] == "ffffffff-0000-4000-8000-000000000005"
        )  # ACTIVE=1 ... DELETED=4
        by_vstate = _uuids(client.get(url, params={"sort_by": 15, "order_by": 2}))
        assert set(by_vstate[:3]) == {
            "aaaaaaaa-0000-4000-8000-000000000010",
            "bbbbbbbb-0000-4000-8000-000000000020",
            "dddddddd-0000-4000-8000-000000000010",
        }
        several = client.get(url, params=[("states", "ACTIVE"), ("states", "4")])
        assert _uuids(several) == [
            "ffffffff-0000-4000-8000-000000000005",
            "eeeeeeee-0000-4000-8000-000000000020",
        ]
        unvalidated_only = client.get(url, params={"validation_states": 0, "states": 2})
        assert _uuids(unvalidated_only) == ["cccccccc-0000-4000-8000-000000000030"]
        assert _uuids(client.get(url, params={"validation_states": "STATE_ERROR"})) == []
        page = client.get(url, params={"offset": 2, "limit": 3})
        assert _uuids(page) == [
            "cccccccc-0000-4000-8000-000000000030",
            "ffffffff-0000-4000-8000-000000000005",
            "dddddddd-0000-4000-8000-000000000010",
        ]
        assert page.json()["pagination"]["total"] == 6
        assert page.json()["pagination"]["endIndex"] == 5

        assert_error(client.get(url, params={"sort_by": 5}), 400, "sort_by")
        assert_error(client.get(url, params={"sort_by": "SIZE"}), 400, "SORT_BY_UUID")
        assert_error(client.get(url, params={"order_by": 7}), 400, "order_by")
        assert_error(client.get(url, params={"states": "DONE"}), 400, "STATE_COMPLETED")
        assert_error(client.get(url, params={"validation_states": 9}), 400, "validation_states")
        assert_error(client.get(url, params={"limit": -1}), 400)
        assert_error(client.get("/api/v1/experiments/9999/checkpoints"), 404, "experiment 9999")

        # Trial listing: default BATCH_NUMBER; order_by=2 puts the newest first.
        turl = f"/api/v1/trials/{t1}/checkpoints"
        assert _uuids(client.get(turl)) == [
            "aaaaaaaa-0000-4000-8000-000000000010",
            "bbbbbbbb-0000-4000-8000-000000000020",
            "cccccccc-0000-4000-8000-000000000030",
        ]
        assert _uuids(client.get(turl, params={"order_by": 2})) == [
            "cccccccc-0000-4000-8000-000000000030",
            "bbbbbbbb-0000-4000-8000-000000000020",
            "aaaaaaaa-0000-4000-8000-000000000010",
        ]
        t2_url = f"/api/v1/trials/{t2}/checkpoints"
        assert _uuids(client.get(t2_url, params={"order_by": 2})) == [
            "eeeeeeee-0000-4000-8000-000000000020",
            "dddddddd-0000-4000-8000-000000000010",
            "ffffffff-0000-4000-8000-000000000005",
        ]
        assert _uuids(client.get(t2_url, params={"states": "COMPLETED"})) == [
            "dddddddd-0000-4000-8000-000000000010"
        ]
        assert_error(client.get(turl, params={"sort_by": 4}), 400, "TrialCheckpointSortBy")
        assert_error(client.get(turl, params={"sort_by": 17}), 400)
        assert_error(client.get("/api/v1/trials/9999/checkpoints"), 404, "trial 9999")

    with master.client() as anonymous:
        assert_error(anonymous.get("/api/v1/checkpoints/aaaaaaaa-0000-4000-8000-000000000010"), 401)


def _report(trial_id: int, uuid: str, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "uuid": uuid,
        "trialId": trial_id,
        "batchNumber": 10,
        "state": "STATE_COMPLETED",
        "files": file_records({"metadata.json": b"{}", "state.json": b"[1]"}),
        "metadata": {"note": "x"},
        "framework": "fake-1.0",
        "format": "fake-json",
        "detliteVersion": "1.2.3",
    }
    body.update(fields)
    return body


def test_metadata_and_worker_reports(master: LiveMaster, tmp_path: Path) -> None:
    admin = master.login("admin")
    with master.client(admin) as client:
        created = client.post("/api/v1/users", json={"user": {"username": "eve"}})
        assert created.status_code == 200, created.text
    with master.db() as db:
        exp = make_experiment(db, storage_path=tmp_path)
        trial = make_trial(db, exp)
        make_validation(db, trial, 10, {"validation_loss": 0.25})
        make_checkpoint(
            db, trial, 5, uuid="3e7a0000-0000-4000-8000-000000000001", metadata={"a": 1}
        )
        trial_id = trial.id
    owner = master.login("determined")
    eve = master.login("eve")

    # Metadata: the owner or an admin replaces it; anyone else is refused.
    url = "/api/v1/checkpoints/3e7a0000-0000-4000-8000-000000000001/metadata"
    with master.client(owner) as client:
        answer = client.post(url, json={"checkpoint": {"metadata": {"b": [1, 2]}}})
        assert answer.status_code == 200, answer.text
        assert answer.json()["checkpoint"]["metadata"] == {"b": [1, 2]}
        assert client.get("/api/v1/checkpoints/3e7a0000-0000-4000-8000-000000000001").json()[
            "checkpoint"
        ]["metadata"] == {"b": [1, 2]}
        assert_error(client.post(url, json={"checkpoint": {"metadata": [1]}}), 400)
        assert_error(client.post(url, json={"metadata": {}}), 400, "checkpoint")
        missing = client.post(
            "/api/v1/checkpoints/nope/metadata", json={"checkpoint": {"metadata": {}}}
        )
        assert_error(missing, 400, "'nope'")  # not a uuid in canonical form
    with master.client(eve) as client:
        assert_error(client.post(url, json={"checkpoint": {"metadata": {}}}), 403, "eve")
        assert_error(
            client.post(
                "/api/v1/checkpoints",
                json=_report(trial_id, "00000000-0000-4000-8000-00000000e001"),
            ),
            403,
        )
    with master.client(admin) as client:
        answer = client.post(url, json={"checkpoint": {"metadata": {"by": "admin"}}})
        assert answer.json()["checkpoint"]["metadata"] == {"by": "admin"}

    with master.client(owner) as client:
        # A COMPLETED report at a validated batch is linked to that validation.
        first = client.post(
            "/api/v1/checkpoints", json=_report(trial_id, "00000000-0000-4000-8000-00000000a001")
        )
        assert first.status_code == 200, first.text
        ckpt = first.json()["checkpoint"]
        assert ckpt["state"] == "STATE_COMPLETED"
        assert ckpt["searcherMetric"] == 0.25
        assert ckpt["metrics"]["validationMetrics"] == {"validation_loss": 0.25}
        assert ckpt["determinedVersion"] == "1.2.3" and ckpt["metadata"] == {"note": "x"}
        assert ckpt["endTime"] is not None
        # Sending it again is a no-op; sending something else under the uuid is a conflict.
        again = client.post(
            "/api/v1/checkpoints", json=_report(trial_id, "00000000-0000-4000-8000-00000000a001")
        )
        assert again.status_code == 200 and again.json() == first.json()
        other = client.post(
            "/api/v1/checkpoints",
            json=_report(trial_id, "00000000-0000-4000-8000-00000000a001", batchNumber=11),
        )
        assert_error(other, 409, "batch_number")

        # ACTIVE, then finished through PATCH.
        started = client.post(
            "/api/v1/checkpoints",
            json=_report(
                trial_id, "00000000-0000-4000-8000-00000000a002", state="ACTIVE", files={}
            ),
        )
        assert started.json()["checkpoint"]["state"] == "STATE_ACTIVE"
        assert started.json()["checkpoint"]["endTime"] is None
        files = file_records({"metadata.json": b"{}", "weights.json": b"[2]"})
        done = client.patch(
            "/api/v1/checkpoints/00000000-0000-4000-8000-00000000a002",
            json={"state": 2, "files": files},
        )
        assert done.status_code == 200, done.text
        assert done.json()["checkpoint"]["state"] == "STATE_COMPLETED"
        assert set(done.json()["checkpoint"]["files"]) == {"metadata.json", "weights.json"}
        assert done.json()["checkpoint"]["searcherMetric"] == 0.25
        repeat = client.patch(
            "/api/v1/checkpoints/00000000-0000-4000-8000-00000000a002", json={"state": "COMPLETED"}
        )
        assert repeat.status_code == 200
        assert_error(
            client.patch(
                "/api/v1/checkpoints/00000000-0000-4000-8000-00000000a002", json={"state": "ERROR"}
            ),
            409,
        )
        assert_error(
            client.patch(
                "/api/v1/checkpoints/00000000-0000-4000-8000-00000000a002", json={"state": "ACTIVE"}
            ),
            409,
        )
        changed = client.patch(
            "/api/v1/checkpoints/00000000-0000-4000-8000-00000000a002",
            json={"state": "COMPLETED", "files": {}},
        )
        assert_error(changed, 409, "different")

        failing = _report(
            trial_id, "00000000-0000-4000-8000-00000000a003", state=1, files={}, batchNumber=20
        )
        assert client.post("/api/v1/checkpoints", json=failing).status_code == 200
        no_files = client.patch(
            "/api/v1/checkpoints/00000000-0000-4000-8000-00000000a003", json={"state": "COMPLETED"}
        )
        assert_error(no_files, 400, "files")
        errored = client.patch(
            "/api/v1/checkpoints/00000000-0000-4000-8000-00000000a003",
            json={"state": "STATE_ERROR"},
        )
        assert errored.json()["checkpoint"]["state"] == "STATE_ERROR"
        assert_error(
            client.patch(
                "/api/v1/checkpoints/00000000-0000-4000-8000-00000000a003",
                json={"state": "COMPLETED"},
            ),
            409,
        )
        unknown = "00000000-0000-4000-8000-0000000f0f0f"
        assert_error(client.patch(f"/api/v1/checkpoints/{unknown}", json={"state": "ERROR"}), 404)
        # A uuid not in canonical form is refused before anything is looked up.
        not_uuid = client.patch("/api/v1/checkpoints/nope", json={"state": "ERROR"})
        assert_error(not_uuid, 400, "canonical form")

        # Bad reports are 400 or 404 and record nothing.
        bad_path = _report(
            trial_id,
            "00000000-0000-4000-8000-00000000a004",
            files=file_records({"../escape": b"x"}),
        )
        assert_error(client.post("/api/v1/checkpoints", json=bad_path), 400, "../escape")
        bad_sha = _report(
            trial_id,
            "00000000-0000-4000-8000-00000000a004",
            files={"a": {"size": 1, "sha256": "zz"}},
        )
        assert_error(client.post("/api/v1/checkpoints", json=bad_sha), 400, "sha256")
        deleted = _report(trial_id, "00000000-0000-4000-8000-00000000a004", state="DELETED")
        assert_error(client.post("/api/v1/checkpoints", json=deleted), 400, "STATE_DELETED")
        assert_error(
            client.post(
                "/api/v1/checkpoints",
                json=_report(trial_id, "00000000-0000-4000-8000-00000000a004", state="x"),
            ),
            400,
        )
        empty = _report(trial_id, "00000000-0000-4000-8000-00000000a004", files={})
        assert_error(client.post("/api/v1/checkpoints", json=empty), 400, "files")
        assert_error(client.post("/api/v1/checkpoints", json=_report(trial_id, "a/b")), 400)
        assert_error(
            client.post(
                "/api/v1/checkpoints", json=_report(9999, "00000000-0000-4000-8000-00000000a004")
            ),
            404,
            "9999",
        )
        assert_error(client.get("/api/v1/checkpoints/00000000-0000-4000-8000-00000000a004"), 404)


def test_files_through_the_master(master: LiveMaster, tmp_path: Path) -> None:
    storage = tmp_path / "ckpts"
    storage.mkdir()
    big = bytes(range(256)) * 9000  # over one read chunk
    with master.db() as db:
        exp = make_experiment(db, storage_path=storage)
        trial = make_trial(db, exp)
        files = {"metadata.json": b"{}", "sub/dir/big.bin": big, "gone.txt": b"bye"}
        ckpt = make_checkpoint(
            db,
            trial,
            10,
            files=files,
            write_to=storage,
            uuid="f11e0000-0000-4000-8000-000000000001",
        )
        make_checkpoint(
            db, trial, 20, state=CheckpointState.ACTIVE, uuid="f11e0000-0000-4000-8000-000000000002"
        )
        assert ckpt.uuid == "f11e0000-0000-4000-8000-000000000001"
    (storage / "f11e0000-0000-4000-8000-000000000001" / "gone.txt").unlink()
    (tmp_path / "secret").write_text("not yours")
    token = master.login("determined")
    with master.client(token) as client:
        answer = client.get(
            "/api/v1/checkpoints/f11e0000-0000-4000-8000-000000000001/files/sub/dir/big.bin"
        )
        assert answer.status_code == 200
        assert answer.content == big
        assert answer.headers["content-type"] == "application/octet-stream"
        small = client.get(
            "/api/v1/checkpoints/f11e0000-0000-4000-8000-000000000001/files/metadata.json"
        )
        assert small.content == b"{}"
        # Only recorded paths are served: no listing, no traversal, no absolute paths.
        for path in ("sub/dir", "sub/dir/", "nothere", "../secret", "%2E%2E/secret", "/etc/passwd"):
            response = client.get(
                f"/api/v1/checkpoints/f11e0000-0000-4000-8000-000000000001/files/{path}"
            )
            assert_error(response, 404)
            assert b"not yours" not in response.content
        assert_error(
            client.get("/api/v1/checkpoints/f11e0000-0000-4000-8000-000000000001/files/gone.txt"),
            404,
            "missing",
        )
        assert_error(
            client.get(
                f"/api/v1/checkpoints/f11e0000-0000-4000-8000-000000000002/files/{STATE_FILE}"
            ),
            409,
            "ACTIVE",
        )
        assert_error(client.get("/api/v1/checkpoints/nope/files/a"), 404, "'nope'")
    with master.client() as anonymous:
        assert_error(
            anonymous.get(
                "/api/v1/checkpoints/f11e0000-0000-4000-8000-000000000001/files/metadata.json"
            ),
            401,
        )
