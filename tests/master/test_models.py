"""The model registry over HTTP on SQLite and PostgreSQL: models, versions, permissions."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

import httpx
import sqlalchemy as sa

from detlite.api.enums import CheckpointState
from detlite.master.orm import Checkpoint, ModelVersion
from tests.master.conftest import LiveMaster, assert_error
from tests.master.factories import make_checkpoint, make_experiment, make_trial

MODEL_KEYS = {
    "name",
    "description",
    "metadata",
    "labels",
    "notes",
    "creationTime",
    "lastUpdatedTime",
    "id",
    "username",
    "numVersions",
}
VERSION_KEYS = {
    "model",
    "checkpoint",
    "version",
    "creationTime",
    "lastUpdatedTime",
    "name",
    "comment",
    "notes",
    "labels",
    "metadata",
    "id",
}


def ok(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    return response.json()


def checkpoints(
    master: LiveMaster, *states: CheckpointState, owner: str = "determined"
) -> list[str]:
    """One checkpoint per state (of one trial), by uuid."""
    with master.db() as db:
        trial = make_trial(db, make_experiment(db, owner))
        return [make_checkpoint(db, trial, 10 * (i + 1), s).uuid for i, s in enumerate(states)]


def new_user(master: LiveMaster, admin: str, username: str) -> str:
    with master.client(admin) as client:
        ok(client.post("/api/v1/users", json={"user": {"username": username}, "password": ""}))
    return master.login(username)


def when(timestamp: str) -> dt.datetime:
    return dt.datetime.fromisoformat(timestamp)


def names(answer: dict[str, Any]) -> list[str]:
    return [m["name"] for m in answer["models"]]


def test_create_and_get_models(master: LiveMaster) -> None:
    with master.client(master.login("determined")) as client:
        body = {
            "description": "Digits",
            "metadata": {"a": {"b": 1}},
            "labels": ["cv", "prod", "cv"],
            "notes": "# notes",
        }
        model = ok(client.post("/api/v1/models/mnist", json=body))["model"]
        assert set(model) == MODEL_KEYS
        assert model["name"] == "mnist" and model["description"] == "Digits"
        assert model["metadata"] == {"a": {"b": 1}} and model["labels"] == ["cv", "prod"]
        assert model["notes"] == "# notes" and model["username"] == "determined"
        assert model["numVersions"] == 0
        assert model["creationTime"] == model["lastUpdatedTime"]
        assert model["creationTime"].endswith(("Z", "+00:00"))
        assert ok(client.get("/api/v1/models/mnist"))["model"] == model

        # The reference client's body: the name only in the path, metadata may be null.
        bare = ok(client.post("/api/v1/models/with space", json={"metadata": None}))["model"]
        assert bare["name"] == "with space" and bare["metadata"] == {} and bare["labels"] == []
        assert ok(client.get("/api/v1/models/with%20space"))["model"]["id"] == bare["id"]
        assert ok(client.post("/api/v1/models/no-body"))["model"]["description"] == ""

        assert_error(client.post("/api/v1/models/mnist", json={}), 409, "'mnist' already exists")
        assert_error(client.get("/api/v1/models/nope"), 404, "model 'nope' not found")
        assert_error(client.get("/api/v1/models/a%00b"), 400, "NUL")  # no name holds one
        for bad, why in [
            ("x" * 256, "at most 255"),
            ("%20lead", "whitespace"),
            ("tab%09in", "control characters"),
        ]:
            assert_error(client.post(f"/api/v1/models/{bad}", json={}), 400, why)
        assert_error(
            client.post("/api/v1/models/m2", json={"name": "other"}), 400, "path names 'm2'"
        )
        for body in (
            {"labels": [""]},
            {"labels": "cv"},
            {"metadata": [1]},
            {"description": "nul\u0000"},
        ):
            assert_error(client.post("/api/v1/models/m2", json=body), 400)
        assert_error(client.get("/api/v1/models/m2"), 404)  # nothing half-made
        assert ok(client.post(f"/api/v1/models/{'y' * 255}", json={}))["model"]["name"]


def test_list_sort_filter_and_paginate(master: LiveMaster) -> None:
    with master.client(master.login("determined")) as client:
        made = [
            ("beta", "Second model", ["a"]),
            ("Alpha", "first MODEL", ["a", "b"]),
            ("gamma", "100% third", []),
            ("delta_x", "a", ["b"]),
        ]
        for name, description, labels in made:
            body = {"description": description, "labels": labels}
            ok(client.post(f"/api/v1/models/{name}", json=body))

        def listing(**params: Any) -> dict[str, Any]:
            return dict(ok(client.get("/api/v1/models", params=params)))

        created = ["beta", "Alpha", "gamma", "delta_x"]
        assert names(listing()) == created  # last-updated time, ascending
        assert names(listing(sort_by=1)) == ["Alpha", "beta", "delta_x", "gamma"]
        assert names(listing(sort_by="SORT_BY_NAME", order_by=2)) == [
            "gamma",
            "delta_x",
            "beta",
            "Alpha",
        ]
        # Case-insensitive, by code point: "100% third" < "a" < "first MODEL" < "Second model"
        assert names(listing(sort_by=2)) == ["gamma", "delta_x", "Alpha", "beta"]
        assert names(listing(sort_by="CREATION_TIME", order_by="ORDER_BY_DESC")) == [
            *reversed(created)
        ]
        # Changing a model moves it to the end of the last-updated order (UNSPECIFIED too).
        ok(client.patch("/api/v1/models/beta", json={"model": {"notes": "touched"}}))
        touched = ["Alpha", "gamma", "delta_x", "beta"]
        assert names(listing(sort_by=5)) == touched
        assert names(listing(sort_by=0)) == touched
        assert names(listing(sort_by=4)) == created

        # Filters: case-insensitive substrings, all of them; wildcards are literal.
        assert names(listing(sort_by=1, name="A")) == ["Alpha", "beta", "delta_x", "gamma"]
        assert names(listing(sort_by=1, description="model")) == ["Alpha", "beta"]
        assert names(listing(sort_by=1, name="ALP", description="model")) == ["Alpha"]
        assert names(listing(name="beta", description="first")) == []
        assert names(listing(description="%")) == ["gamma"]
        assert names(listing(name="_")) == ["delta_x"]
        assert names(listing(sort_by=1, labels="a")) == ["Alpha", "beta"]
        assert names(listing(sort_by=1, labels=["a", "b"])) == ["Alpha"]
        assert names(listing(labels="zzz")) == []

        # Pagination, with and without the reference client's trailing slash.
        page = ok(client.get("/api/v1/models/", params={"sort_by": 1, "offset": 1, "limit": 2}))
        assert names(page) == ["beta", "delta_x"]
        assert page["pagination"] == {
            "offset": 1,
            "limit": 2,
            "startIndex": 1,
            "endIndex": 3,
            "total": 4,
        }
        filtered = listing(sort_by=1, name="a", offset=-1)
        assert names(filtered) == ["gamma"] and filtered["pagination"]["total"] == 4
        assert names(listing(offset=10)) == []

        for params in ({"sort_by": 3}, {"sort_by": "size"}, {"order_by": 7}, {"limit": -1}):
            assert_error(client.get("/api/v1/models", params=params), 400, "")
        error = assert_error(client.get("/api/v1/models", params={"sort_by": 3}), 400)
        assert "SORT_BY_LAST_UPDATED_TIME (5)" in error["message"]
        assert_error(client.get("/api/v1/models", params={"name": "a\x00"}), 400, "NUL")
        assert_error(client.get("/api/v1/models", params={"offset": 2**63}), 400)


def test_patch_and_delete_need_owner_or_admin(master: LiveMaster) -> None:
    admin = master.login("admin")
    eve = new_user(master, admin, "eve")
    owner = master.login("determined")
    (uuid,) = checkpoints(master, CheckpointState.COMPLETED)
    with master.client(owner) as client:
        body = {"description": "d", "metadata": {"k": 1}, "labels": ["x"], "notes": "n"}
        before = ok(client.post("/api/v1/models/owned", json=body))["model"]
        ok(client.post("/api/v1/models/owned/versions", json={"checkpointUuid": uuid}))

    with master.client(eve) as client:
        # Anyone logged in reads ...
        assert ok(client.get("/api/v1/models/owned"))["model"]["numVersions"] == 1
        ok(client.get("/api/v1/models/owned/versions/1"))
        # ... but only the owner or an admin changes.
        for response in (
            client.patch("/api/v1/models/owned", json={"model": {"notes": "eve"}}),
            client.delete("/api/v1/models/owned"),
            client.post("/api/v1/models/owned/versions", json={"checkpointUuid": uuid}),
            client.patch("/api/v1/models/owned/versions/1", json={"modelVersion": {}}),
            client.delete("/api/v1/models/owned/versions/1"),
        ):
            assert_error(response, 403, "user 'eve' may not change model 'owned'")
        assert_error(client.patch("/api/v1/models/ghost", json={"model": {}}), 404, "'ghost'")

    with master.client(owner) as client:
        patched = ok(
            client.patch(
                "/api/v1/models/owned",
                json={"model": {"metadata": {"new": True}, "description": "d2", "bogus": 1}},
            )
        )["model"]
        assert patched["metadata"] == {"new": True} and patched["description"] == "d2"
        assert patched["labels"] == ["x"] and patched["notes"] == "n"  # not given: kept
        assert when(patched["lastUpdatedTime"]) > when(before["lastUpdatedTime"])
        assert patched["creationTime"] == before["creationTime"]
        assert_error(
            client.patch("/api/v1/models/owned", json={"model": {"labels": [1]}}), 400, "labels"
        )
        assert_error(client.patch("/api/v1/models/owned", json={}), 400, "body.model")

    with master.client(admin) as client:
        patched = ok(
            client.patch("/api/v1/models/owned", json={"model": {"labels": ["y"], "notes": ""}})
        )["model"]
        assert patched["labels"] == ["y"] and patched["notes"] == ""
        assert patched["metadata"] == {"new": True} and patched["username"] == "determined"
        ok(client.delete("/api/v1/models/owned"))
        assert_error(client.get("/api/v1/models/owned"), 404)
        assert_error(client.delete("/api/v1/models/owned"), 404)
        # The name is free again, and the checkpoint outlives its versions.
        ok(client.post("/api/v1/models/owned", json={}))
    with master.db() as db:
        assert db.scalar(sa.select(sa.func.count()).select_from(ModelVersion)) == 0
        assert db.get(Checkpoint, uuid) is not None

    with master.client(owner) as client:
        ok(client.post("/api/v1/models/mine", json={}))
        ok(client.delete("/api/v1/models/mine"))
        assert_error(client.get("/api/v1/models/mine"), 404)


def test_versions(master: LiveMaster) -> None:
    done1, done2, active, error, deleted = checkpoints(
        master,
        CheckpointState.COMPLETED,
        CheckpointState.COMPLETED,
        CheckpointState.ACTIVE,
        CheckpointState.ERROR,
        CheckpointState.DELETED,
    )
    with master.client(master.login("determined")) as client:
        ok(client.post("/api/v1/models/m", json={}))
        empty = ok(client.get("/api/v1/models/m/versions"))
        assert empty["modelVersions"] == [] and empty["model"]["name"] == "m"
        assert empty["pagination"]["total"] == 0

        first = ok(client.post("/api/v1/models/m/versions", json={"checkpoint_uuid": done1}))
        v1 = first["modelVersion"]
        assert set(v1) == VERSION_KEYS and v1["version"] == 1
        assert v1["checkpoint"]["uuid"] == done1
        assert v1["checkpoint"]["state"] == "STATE_COMPLETED"
        assert v1["model"]["name"] == "m" and v1["model"]["numVersions"] == 1
        assert (v1["name"], v1["comment"], v1["labels"], v1["metadata"]) == ("", "", [], {})
        body = {
            "checkpointUuid": done2,
            "name": "second",
            "comment": "better",
            "labels": ["best"],
            "notes": "n",
            "metadata": {"acc": 0.9},
        }
        v2 = ok(client.post("/api/v1/models/m/versions/", json=body))["modelVersion"]
        assert v2["version"] == 2 and v2["checkpoint"]["uuid"] == done2
        assert (v2["name"], v2["comment"], v2["labels"], v2["notes"], v2["metadata"]) == (
            "second",
            "better",
            ["best"],
            "n",
            {"acc": 0.9},
        )
        # The same checkpoint may be registered again, as a new version.
        v3 = ok(client.post("/api/v1/models/m/versions", json={"checkpointUuid": done1}))
        assert v3["modelVersion"]["version"] == 3

        for uuid, state in ((active, "ACTIVE"), (error, "ERROR"), (deleted, "DELETED")):
            assert_error(
                client.post("/api/v1/models/m/versions", json={"checkpointUuid": uuid}),
                409,
                f"checkpoint {uuid} is in state STATE_{state}; "
                "only COMPLETED checkpoints can be registered",
            )
        missing = "0" * 8 + "-0000-0000-0000-" + "0" * 12
        assert_error(
            client.post("/api/v1/models/m/versions", json={"checkpointUuid": missing}),
            404,
            f"checkpoint {missing} not found",
        )
        assert_error(
            client.post("/api/v1/models/zz/versions", json={"checkpointUuid": done1}),
            404,
            "model 'zz' not found",
        )
        assert_error(client.post("/api/v1/models/m/versions", json={}), 400, "checkpointUuid")

        def versions(**params: Any) -> list[int]:
            answer = ok(client.get("/api/v1/models/m/versions", params=params))
            assert answer["model"]["numVersions"] == 3
            return [v["version"] for v in answer["modelVersions"]]

        assert versions() == [1, 2, 3]
        assert versions(order_by=2) == [3, 2, 1]
        assert versions(sort_by="SORT_BY_CREATION_TIME", order_by="DESC") == [3, 2, 1]
        assert versions(sort_by=3, limit=1, order_by=2) == [3]  # the client's "latest"
        assert versions(offset=1, limit=1) == [2]
        assert_error(client.get("/api/v1/models/m/versions", params={"sort_by": 1}), 400)
        assert_error(client.get("/api/v1/models/nope/versions"), 404, "'nope'")

        got = ok(client.get("/api/v1/models/m/versions/2"))["modelVersion"]
        assert got == v2 | {"model": got["model"]} and got["model"]["numVersions"] == 3
        assert_error(client.get("/api/v1/models/m/versions/9"), 404, "model 'm' has no version 9")
        assert_error(client.get("/api/v1/models/m/versions/x"), 400)
        assert_error(client.get("/api/v1/models/m/versions/99999999999"), 400)

        patch = {"modelVersion": {"metadata": {"acc": 0.95}, "comment": "", "labels": ["a"]}}
        patched = ok(client.patch("/api/v1/models/m/versions/2", json=patch))["modelVersion"]
        assert patched["metadata"] == {"acc": 0.95} and patched["comment"] == ""
        assert patched["labels"] == ["a"] and patched["name"] == "second"
        assert when(patched["lastUpdatedTime"]) > when(v2["lastUpdatedTime"])
        assert ok(client.get("/api/v1/models/m/versions/2"))["modelVersion"] == patched
        assert_error(client.patch("/api/v1/models/m/versions/8", json=patch), 404, "version 8")

        ok(client.delete("/api/v1/models/m/versions/2"))
        assert_error(client.get("/api/v1/models/m/versions/2"), 404)
        assert_error(client.delete("/api/v1/models/m/versions/2"), 404)
        assert [
            v["version"] for v in ok(client.get("/api/v1/models/m/versions"))["modelVersions"]
        ] == [1, 3]
        assert ok(client.get("/api/v1/models/m"))["model"]["numVersions"] == 2
        v4 = ok(client.post("/api/v1/models/m/versions", json={"checkpointUuid": done2}))
        assert v4["modelVersion"]["version"] == 4


def test_concurrent_registrations_get_distinct_versions(master: LiveMaster) -> None:
    token = master.login("determined")
    uuids = checkpoints(master, *[CheckpointState.COMPLETED] * 4)
    with master.client(token) as client:
        ok(client.post("/api/v1/models/race", json={}))
    results: list[int] = []
    failures: list[str] = []
    start = threading.Barrier(8)

    def register(uuid: str) -> None:
        with master.client(token) as client:
            start.wait()
            for _ in range(2):
                response = client.post(
                    "/api/v1/models/race/versions", json={"checkpointUuid": uuid}
                )
                if response.status_code == 200:
                    results.append(response.json()["modelVersion"]["version"])
                else:
                    failures.append(response.text)

    threads = [threading.Thread(target=register, args=(uuids[i % 4],)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert sorted(results) == list(range(1, 17))
    with master.client(token) as client:
        answer = ok(client.get("/api/v1/models/race/versions"))
        assert [v["version"] for v in answer["modelVersions"]] == list(range(1, 17))
        assert answer["model"]["numVersions"] == 16
