"""The ``Model`` client against a live master (SQLite and PostgreSQL) through ``Session``."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from detlite.api import Session
from detlite.api.enums import CheckpointState
from detlite.errors import Conflict, Forbidden, NotFound
from detlite.experimental._checkpoint import Checkpoint as CheckpointClient
from detlite.experimental._model import (
    Model,
    ModelOrderBy,
    ModelSortBy,
    ModelVersion,
    create_model,
    get_model,
    get_models,
)
from detlite.master.orm import Checkpoint
from tests.master.conftest import LiveMaster
from tests.master.factories import make_checkpoint, make_experiment, make_trial


def test_enums_match_the_reference() -> None:
    assert [(m.name, m.value) for m in ModelSortBy] == [
        ("UNSPECIFIED", 0),
        ("NAME", 1),
        ("DESCRIPTION", 2),
        ("CREATION_TIME", 4),
        ("LAST_UPDATED_TIME", 5),
    ]
    assert ModelOrderBy.ASC is ModelOrderBy.ASCENDING and ModelOrderBy.ASCENDING.value == 1
    assert ModelOrderBy.DESC is ModelOrderBy.DESCENDING and ModelOrderBy.DESC.value == 2


def test_local_model_objects() -> None:
    model = Model("m", "desc", "2021-01-01T00:00:00Z", None, {"a": 1})
    assert repr(model) == 'Model(name=m, metadata={"a": 1})'
    assert model.to_json() == {
        "name": "m",
        "description": "desc",
        "creation_time": "2021-01-01T00:00:00Z",
        "last_updated_time": None,
        "metadata": {"a": 1},
        "labels": [],
        "notes": "",
    }
    again = Model.from_json(model.to_json())
    assert again.to_json() == model.to_json()
    with pytest.raises(ValueError, match="not bound to a master"):
        model.get_version()
    with pytest.raises(ValueError, match="not bound to a master"):
        model.add_metadata({"b": 2})


def test_model_client(master: LiveMaster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with master.db() as db:
        trial = make_trial(db, make_experiment(db, "determined"))
        done = [make_checkpoint(db, trial, b).uuid for b in (10, 20)]
        active = make_checkpoint(db, trial, 30, CheckpointState.ACTIVE).uuid
    session = Session(master.url, token=master.login("determined"), user="determined")

    model = create_model(session, "mnist cnn", "Digits", {"team": "a"})
    assert (model.name, model.description, model.metadata) == ("mnist cnn", "Digits", {"team": "a"})
    assert model.creation_time and model.creation_time == model.last_updated_time
    create_model(session, "other", "second model")
    with pytest.raises(Conflict, match="already exists"):
        create_model(session, "other")
    with pytest.raises(NotFound, match="model 'ghost' not found"):
        get_model(session, "ghost")
    with pytest.raises(ValueError, match="without '/'"):
        create_model(session, "a/b")

    assert [m.name for m in get_models(session)] == ["mnist cnn", "other"]
    by_desc = get_models(session, ModelSortBy.DESCRIPTION, ModelOrderBy.DESC)
    assert [m.name for m in by_desc] == ["other", "mnist cnn"]
    assert [m.name for m in get_models(session, name="MNIST")] == ["mnist cnn"]
    assert [m.name for m in get_models(session, description="second")] == ["other"]
    assert get_models(session, name="mnist", description="second") == []

    # Metadata: merged locally, saved whole, read back by another client object.
    model.add_metadata({"acc": 0.9, "team": "b"})
    model.remove_metadata(["team", "absent"])
    assert model.metadata == {"acc": 0.9}
    fetched = get_model(session, "mnist cnn")
    assert fetched.metadata == {"acc": 0.9} and fetched.description == "Digits"
    assert fetched.last_updated_time == model.last_updated_time
    assert fetched.last_updated_time and fetched.creation_time
    updated = dt.datetime.fromisoformat(fetched.last_updated_time)
    assert updated > dt.datetime.fromisoformat(fetched.creation_time)
    model.set_labels(["cv", "prod"])
    model.set_notes("trained on 60k digits")
    model.set_description("Handwritten digits")
    fetched = get_model(session, "mnist cnn")
    assert fetched.labels == ["cv", "prod"] and fetched.notes == "trained on 60k digits"
    assert fetched.description == "Handwritten digits" and fetched.metadata == {"acc": 0.9}
    assert [m.name for m in get_models(session, labels=["prod"])] == ["mnist cnn"]

    # Versions.
    assert model.get_version() is None and model.get_versions() == []
    first = model.register_version(done[0])
    assert isinstance(first, CheckpointClient) and first.uuid == done[0]
    assert (first.model_name, first.model_version) == ("mnist cnn", 1)
    second = model.register_version(done[1], comment="better", metadata={"epochs": 3})
    assert second.model_version == 2
    with pytest.raises(Conflict, match="is in state STATE_ACTIVE"):
        model.register_version(active)
    with pytest.raises(NotFound, match="not found"):
        model.register_version("no-such-checkpoint")

    latest = model.get_version()
    assert latest is not None and (latest.uuid, latest.model_version) == (done[1], 2)
    assert latest.model_name == "mnist cnn"
    one = model.get_version(1)
    assert one is not None and one.uuid == done[0] and one.model_version == 1
    assert [c.model_version for c in model.get_versions()] == [2, 1]
    assert [c.uuid for c in model.get_versions(ModelOrderBy.ASC)] == done
    with pytest.raises(NotFound, match="has no version 7"):
        model.get_version(7)
    with pytest.raises(ValueError):
        model.get_version(-1)

    # Improvement 5: the latest version's checkpoint is bound, so its metadata edits persist.
    latest.add_metadata({"deployed": True})
    with master.db() as db:
        row = db.get(Checkpoint, done[1])
        assert row is not None and row.metadata_ == {"deployed": True}

    # Improvement 14: a version's own annotations.
    version = model.get_model_version(2)
    assert isinstance(version, ModelVersion) and version.comment == "better"
    assert version.metadata == {"epochs": 3} and version.checkpoint.uuid == done[1]
    version.add_metadata({"f1": 0.8})
    version.remove_metadata("epochs")
    version.set_labels(["candidate"])
    version.set_name("v2")
    again = model.get_model_version(0)
    assert again is not None and again.version == 2
    assert again.metadata == {"f1": 0.8} and again.labels == ["candidate"]
    assert again.name == "v2" and again.comment == "better"
    assert [v.version for v in model.get_model_versions(ModelOrderBy.ASC)] == [1, 2]

    model.delete_version(2)
    latest = model.get_version()
    assert latest is not None and latest.model_version == 1
    with pytest.raises(NotFound):
        model.delete_version(2)

    # Another user reads but may not change; the owner deletes.
    other = Session(master.url, token=master.login("admin"), user="admin")
    assert get_model(other, "mnist cnn").labels == ["cv", "prod"]
    with master.client(master.login("admin")) as client:
        client.post("/api/v1/users", json={"user": {"username": "eve"}, "password": ""})
    eve = Session(master.url, token=master.login("eve"), user="eve")
    as_eve = get_model(eve, "mnist cnn")
    with pytest.raises(Forbidden, match="only its owner or an admin"):
        as_eve.set_notes("mine now")
    with pytest.raises(Forbidden):
        as_eve.delete()
    model.delete()
    with pytest.raises(NotFound):
        get_model(session, "mnist cnn")
    assert [m.name for m in get_models(session)] == ["other"]

    # A URL instead of a session: logged in on first use (the default user, empty password).
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    for name in ("DETLITE_USER", "DETLITE_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    by_url = Model("other", master=master.url)
    assert by_url.get_version() is None
