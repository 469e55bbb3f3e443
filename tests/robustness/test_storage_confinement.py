"""The master touches only the storage its operator allows, and never through a link.

Each test runs a live master on SQLite and PostgreSQL whose settings allow one shared_fs root,
``<tmp>/allowed`` (besides its own ``<tmp>/checkpoints``); everything a regression could
damage is a decoy under ``<tmp>/decoy``, and every decoy is checked afterwards. The cases are
issue 13's: storage outside the allowed roots (directly, through a link, or by climbing out
with ``..``), checkpoint uuids that name something else (``etc``, ``tensorboard``), links
inside and in place of checkpoint directories (serving, GC, delete), S3 endpoints the
operator did not list (a loopback listener must see no connection), a storage failure on
delete (503, then a retry finishes), and a master restarted with a smaller allow list.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from detlite.api.enums import CheckpointState, ExperimentState
from detlite.master.orm import Checkpoint, Experiment
from detlite.storage.locations import S3Location
from detlite.testing.fake import linear_config
from tests.master.conftest import LiveMaster, assert_error, live_master, make_settings
from tests.master.factories import (
    DEFAULT_FILES,
    ckpt_uuid,
    experiment_config,
    make_checkpoint,
    make_experiment,
    make_trial,
)

SECRET = b"the decoy's bytes: never served, never deleted"
LISTED_ENDPOINT = "http://127.0.0.1:9"  # the discard port: listed, and never contacted here


@pytest.fixture
def places(tmp_path: Path) -> dict[str, Path]:
    """``allowed`` (the operator's root) and ``decoy`` (outside it, holding a secret)."""
    allowed = tmp_path / "allowed"
    decoy = tmp_path / "decoy"
    allowed.mkdir()
    decoy.mkdir()
    (decoy / "secret.txt").write_bytes(SECRET)
    return {"allowed": allowed, "decoy": decoy}


def _settings(db_url: str, tmp_path: Path, *roots: Path, **overrides: Any) -> Any:
    allowed = roots or (tmp_path / "allowed",)
    s3 = (S3Location(bucket="listed-bucket", endpoint_url=LISTED_ENDPOINT),)
    return make_settings(db_url, tmp_path, storage_roots=allowed, s3_locations=s3, **overrides)


@pytest.fixture
def confined(
    migrated_database_url: str, tmp_path: Path, places: dict[str, Path]
) -> Iterator[LiveMaster]:
    """A live master (each database) allowing only ``<tmp>/allowed`` and its own storage."""
    with live_master(_settings(migrated_database_url, tmp_path)) as running:
        yield running


def _tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def _create(client: httpx.Client, storage: dict[str, Any], **body: Any) -> httpx.Response:
    config = {**linear_config(), "checkpoint_storage": storage}
    return client.post("/api/v1/experiments", json={"config": config, "activate": False, **body})


def _experiments(master: LiveMaster) -> int:
    with master.db() as db:
        return int(db.scalar(sa.select(sa.func.count()).select_from(Experiment)) or 0)


def _shared(host_path: Path | str, **extra: Any) -> dict[str, Any]:
    return {"type": "shared_fs", "host_path": str(host_path), **extra}


# -- creation ---------------------------------------------------------------------------------


def test_only_storage_inside_an_allowed_root_is_accepted(
    confined: LiveMaster, places: dict[str, Path]
) -> None:
    allowed, decoy = places["allowed"], places["decoy"]
    (allowed / "escape").symlink_to(decoy, target_is_directory=True)
    (allowed / "sub").mkdir()
    refused = [
        _shared(decoy),  # plainly outside
        _shared(allowed / "escape"),  # a link inside the root that points out
        _shared(allowed, storage_path="escape"),  # the same link as storage_path
        _shared(allowed / "sub", storage_path="../../decoy"),  # climbing out with ..
        _shared(f"{allowed}/../decoy"),  # host_path itself climbing out
    ]
    with confined.client(confined.login("determined")) as client:
        for storage in refused:
            for validate_only in (False, True):
                answer = _create(client, storage, validateOnly=validate_only)
                assert answer.status_code == 400, (storage, answer.text)
        # The message names the allowed locations and how the operator adds one.
        error = assert_error(_create(client, _shared(decoy)), 400, str(allowed))
        assert "--allow-shared-fs" in error["message"]
        assert str(confined.settings.storage_path) in error["message"]
    assert _experiments(confined) == 0
    assert _tree(decoy) == {"secret.txt": SECRET}

    # Inside the root, a Determined config works unchanged (and so does a link that stays
    # inside, or no checkpoint_storage at all: the master's own storage).
    (allowed / "real").mkdir()
    (allowed / "alias").symlink_to(allowed / "real", target_is_directory=True)
    accepted = [
        _shared(allowed, storage_path="determined-checkpoints", save_trial_best=2),
        _shared(allowed / "alias"),
        None,
    ]
    with confined.client(confined.login("determined")) as client:
        for storage in accepted:
            config = {**linear_config()}
            if storage is not None:
                config["checkpoint_storage"] = storage
            answer = client.post("/api/v1/experiments", json={"config": config, "activate": False})
            assert answer.status_code == 200, answer.text
            stored = answer.json()["config"]["checkpoint_storage"]
            if storage is not None:  # stored as written, not rewritten
                assert stored["host_path"] == storage["host_path"]
                assert stored.get("storage_path") == storage.get("storage_path")
    assert _experiments(confined) == len(accepted)


def test_an_s3_endpoint_the_operator_did_not_list_is_never_contacted(
    confined: LiveMaster, places: dict[str, Path]
) -> None:
    with _listener() as (endpoint, connections):
        with confined.client(confined.login("determined")) as client:
            for storage in (
                {"type": "s3", "bucket": "any-bucket", "endpoint_url": endpoint},
                # A listed bucket at another endpoint is another location.
                {"type": "s3", "bucket": "listed-bucket", "endpoint_url": endpoint},
                {"type": "s3", "bucket": "listed-bucket"},  # AWS's endpoint is not listed
            ):
                answer = _create(client, storage)
                assert_error(answer, 400, "--allow-s3")
            # An experiment stored before the list changed: serving and deleting refuse it.
            s3 = {"type": "s3", "bucket": "listed-bucket", "endpoint_url": endpoint}
            exp_id, uuid = _experiment_with_checkpoint(confined, s3, write_to=None)
            answer = client.get(f"/api/v1/checkpoints/{uuid}/files/metadata.json")
            assert_error(answer, 503, "not among the storage locations")
            # Ending it runs GC, deleting it removes its checkpoints: both refuse it.
            assert client.post(f"/api/v1/experiments/{exp_id}/cancel").status_code == 200
            assert_error(client.delete(f"/api/v1/experiments/{exp_id}"), 503, "--allow-s3")
        assert connections() == 0
    assert _experiments(confined) == 1


# -- checkpoint uuids -------------------------------------------------------------------------


BAD_UUIDS = ["etc", "tensorboard", "../x", "ABC", "7F0C1D9E-2A51-4E8F-9C61-0D5B7A9E2F10"]


def test_checkpoint_uuids_that_are_not_canonical_are_refused(
    confined: LiveMaster, places: dict[str, Path]
) -> None:
    storage = places["allowed"] / "ckpts"
    storage.mkdir()
    with confined.db() as db:
        exp = make_experiment(db, config=experiment_config(checkpoint_storage=_shared(storage)))
        trial_id = make_trial(db, exp).id
    with confined.client(confined.login("determined")) as client:
        for bad in BAD_UUIDS:
            _refuse_uuid(client, trial_id, bad)
    with confined.db() as db:
        assert db.scalar(sa.select(sa.func.count()).select_from(Checkpoint)) == 0
    assert list(storage.iterdir()) == []


def _refuse_uuid(client: httpx.Client, trial_id: int, bad: str) -> None:
    report = {
        "uuid": bad,
        "trialId": trial_id,
        "batchNumber": 1,
        "state": "STATE_COMPLETED",
        "files": {"metadata.json": {"size": 2, "sha256": "0" * 64}},
    }
    assert_error(client.post("/api/v1/checkpoints", json=report), 400)
    active = {**report, "state": "STATE_ACTIVE", "files": {}}
    assert_error(client.post("/api/v1/checkpoints", json=active), 400)
    if "/" not in bad:
        assert_error(client.get(f"/api/v1/checkpoints/{bad}"), 404)
        assert_error(client.get(f"/api/v1/checkpoints/{bad}/files/metadata.json"), 404)
        assert_error(client.patch(f"/api/v1/checkpoints/{bad}", json={"state": 2}), 400)


# -- links ------------------------------------------------------------------------------------


def _experiment_with_checkpoint(
    master: LiveMaster, storage: dict[str, Any], write_to: Path | None, label: str = "c"
) -> tuple[int, str]:
    """An experiment (inserted as an older master stored it) with one COMPLETED checkpoint
    of DEFAULT_FILES plus metadata.json, written under ``write_to`` when given."""
    with master.db() as db:
        exp = make_experiment(
            db, config=experiment_config(checkpoint_storage=storage), state=ExperimentState.PAUSED
        )
        trial = make_trial(db, exp, state=ExperimentState.PAUSED)
        row = make_checkpoint(db, trial, 10, uuid=ckpt_uuid(label), write_to=write_to)
        return exp.id, row.uuid


def test_a_link_inside_a_checkpoint_is_never_served(
    confined: LiveMaster, places: dict[str, Path]
) -> None:
    storage = places["allowed"] / "ckpts"
    storage.mkdir()
    _, uuid = _experiment_with_checkpoint(confined, _shared(storage), storage)
    (storage / uuid / "metadata.json").unlink()
    (storage / uuid / "metadata.json").symlink_to(places["decoy"] / "secret.txt")
    _, other = _experiment_with_checkpoint(confined, _shared(storage), storage, label="d")
    (storage / other / "code").rename(storage / "moved-code")
    (storage / other / "code").symlink_to(places["decoy"], target_is_directory=True)
    (places["decoy"] / "model_def.py").write_bytes(SECRET)
    with confined.client(confined.login("determined")) as client:
        for url in (
            f"/api/v1/checkpoints/{uuid}/files/metadata.json",
            f"/api/v1/checkpoints/{other}/files/code/model_def.py",
        ):
            answer = client.get(url)
            assert answer.status_code == 503, answer.text
            assert SECRET not in answer.content
            assert "link" in answer.json()["error"]["message"]
        # The files that are what they should be are still served.
        fine = client.get(f"/api/v1/checkpoints/{other}/files/metadata.json")
        assert fine.status_code == 200 and fine.content.startswith(b"{")


def test_gc_and_delete_never_go_through_a_replaced_checkpoint_directory(
    confined: LiveMaster, places: dict[str, Path]
) -> None:
    decoy = places["decoy"]
    for name, data in DEFAULT_FILES.items():  # the decoy holds files by the recorded names
        (decoy / name).parent.mkdir(parents=True, exist_ok=True)
        (decoy / name).write_bytes(data)
    storage = places["allowed"] / "ckpts"
    storage.mkdir()
    zero = {"save_experiment_best": 0, "save_trial_best": 0, "save_trial_latest": 0}
    exp_id, uuid = _experiment_with_checkpoint(confined, _shared(storage, **zero), storage)
    real = storage / "kept-aside"
    (storage / uuid).rename(real)
    (storage / uuid).symlink_to(decoy, target_is_directory=True)
    before = _tree(decoy)
    with confined.client(confined.login("determined")) as client:
        # Canceling ends the experiment and runs GC (every count 0): it refuses the link.
        ended = client.post(f"/api/v1/experiments/{exp_id}/cancel")
        assert ended.status_code == 200, ended.text
        assert _tree(decoy) == before and (storage / uuid).is_symlink()
        with confined.db() as db:
            row = db.get(Checkpoint, uuid)
            assert row is not None and row.files  # still listed: a later run finishes it
        refused = client.delete(f"/api/v1/experiments/{exp_id}")
        assert_error(refused, 503, "symbolic link")
        assert _tree(decoy) == before and (storage / uuid).is_symlink()
        assert client.get(f"/api/v1/experiments/{exp_id}").status_code == 200

        # The administrator puts the real directory back: deleting now finishes the job.
        (storage / uuid).unlink()
        real.rename(storage / uuid)
        deleted = client.delete(f"/api/v1/experiments/{exp_id}")
        assert deleted.status_code == 200, deleted.text
    assert list(storage.iterdir()) == []
    assert _tree(decoy) == before


def test_a_tensorboard_folder_that_is_a_link_is_never_deleted_through(
    confined: LiveMaster, places: dict[str, Path]
) -> None:
    storage = places["allowed"] / "ckpts"
    storage.mkdir()
    exp_id, _ = _experiment_with_checkpoint(confined, _shared(storage), storage)
    events = places["decoy"] / f"experiment_{exp_id}" / "trial_1"
    events.mkdir(parents=True)
    (events / "events.out.tfevents.1.host").write_bytes(SECRET)
    (storage / "tensorboard").symlink_to(places["decoy"], target_is_directory=True)
    before = _tree(places["decoy"])
    with confined.client(confined.login("determined")) as client:
        assert client.post(f"/api/v1/experiments/{exp_id}/cancel").status_code == 200
        assert_error(client.delete(f"/api/v1/experiments/{exp_id}"), 503, "tensorboard")
    assert _tree(places["decoy"]) == before


# -- storage failures and a smaller allow list ------------------------------------------------


def test_a_delete_that_hits_a_storage_error_answers_503_and_a_retry_finishes(
    confined: LiveMaster, places: dict[str, Path]
) -> None:
    storage = places["allowed"] / "ckpts"
    storage.mkdir()
    exp_id, uuid = _experiment_with_checkpoint(confined, _shared(storage), storage)
    # The storage directory is replaced by a file (as a failed mount might leave it): no
    # checkpoint file can be reached to delete it. (chmod would not stop root.)
    aside = places["allowed"] / "ckpts-aside"
    storage.rename(aside)
    storage.write_bytes(b"not a directory")
    with confined.client(confined.login("determined")) as client:
        assert client.post(f"/api/v1/experiments/{exp_id}/cancel").status_code == 200
        failed = client.delete(f"/api/v1/experiments/{exp_id}")
        assert_error(failed, 503, str(storage))
        assert client.get(f"/api/v1/experiments/{exp_id}").status_code == 200
        with confined.db() as db:
            assert db.get(Checkpoint, uuid) is not None  # the rows stay for the retry

        storage.unlink()
        aside.rename(storage)
        retried = client.delete(f"/api/v1/experiments/{exp_id}")
        assert retried.status_code == 200, retried.text
        assert_error(client.get(f"/api/v1/experiments/{exp_id}"), 404)
    assert list(storage.iterdir()) == []
    with confined.db() as db:
        assert db.get(Checkpoint, uuid) is None


def test_a_master_restarted_with_a_smaller_allow_list_touches_nothing_outside_it(
    migrated_database_url: str, tmp_path: Path, places: dict[str, Path]
) -> None:
    allowed, extra = places["allowed"], tmp_path / "extra"
    storage = extra / "ckpts"
    storage.mkdir(parents=True)
    zero = {"save_experiment_best": 0, "save_trial_best": 0, "save_trial_latest": 0}
    wide = _settings(migrated_database_url, tmp_path, allowed, extra)
    with live_master(wide) as first:
        with first.client(first.login("determined")) as client:
            answer = _create(client, _shared(storage, **zero))
            assert answer.status_code == 200, answer.text
            exp_id = answer.json()["experiment"]["id"]
        with first.db() as db:
            trial = make_trial(db, db.get(Experiment, exp_id), state=ExperimentState.PAUSED)
            uuid = make_checkpoint(db, trial, 10, uuid=ckpt_uuid("old"), write_to=storage).uuid
    before = _tree(storage)
    assert before

    narrow = _settings(migrated_database_url, tmp_path, allowed)
    with live_master(narrow) as second:
        with second.client(second.login("determined")) as client:
            served = client.get(f"/api/v1/checkpoints/{uuid}/files/metadata.json")
            assert_error(served, 503, "not among the storage locations")
            assert client.post(f"/api/v1/experiments/{exp_id}/cancel").status_code == 200
            assert_error(client.delete(f"/api/v1/experiments/{exp_id}"), 503, str(allowed))
            # Creating there again is refused too.
            assert_error(_create(client, _shared(storage)), 400, "--allow-shared-fs")
        with second.db() as db:
            row = db.get(Checkpoint, uuid)
            assert row is not None and row.state == CheckpointState.COMPLETED
    assert _tree(storage) == before


# -- helpers ----------------------------------------------------------------------------------


@contextmanager
def _listener() -> Iterator[tuple[str, Any]]:
    """A loopback TCP listener; yields its URL and a function counting the connections it
    received (queued ones included, since nothing accepts them meanwhile)."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.setblocking(False)
    port = server.getsockname()[1]

    def connections() -> int:
        count = 0
        while True:
            try:
                conn, _ = server.accept()
            except BlockingIOError:
                return count
            conn.close()
            count += 1

    try:
        yield f"http://127.0.0.1:{port}", connections
    finally:
        server.close()
