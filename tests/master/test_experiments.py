"""Experiments over HTTP: create (config and context checks), list, get, patch, the state
machine with its 409s and 403s, archive and delete; plus the context archive checks."""

from __future__ import annotations

import base64
import io
import random
import tarfile
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from detlite.api.enums import ExperimentState
from detlite.errors import InvalidExperiment
from detlite.master import context_archive
from detlite.master.orm import Experiment, TrainingMetrics, Trial
from detlite.master.queries.experiments import trial_ends
from detlite.master.queries.trials import create_trial
from detlite.master.routers.experiments import CONTEXT_CHUNK
from detlite.testing.fake import linear_config
from tests.master.conftest import LiveMaster, assert_error

S = "STATE_"


# -- helpers shared with the trial, metrics and log tests --------------------------------------


def post_experiment(client: httpx.Client, config: Any = None, **body: Any) -> dict[str, Any]:
    response = client.post(
        "/api/v1/experiments", json={"config": config or linear_config(), **body}
    )
    assert response.status_code == 200, response.text
    created: dict[str, Any] = response.json()
    return created


def make_user(master: LiveMaster, username: str) -> str:
    """A new non-admin user (made by the admin); returns its token."""
    with master.client(master.login("admin")) as client:
        body = {"user": {"username": username}, "password": ""}
        assert client.post("/api/v1/users", json=body).status_code == 200
    return master.login(username)


def add_trial(
    master: LiveMaster, experiment_id: int, request_id: str, hparams: dict[str, Any] | None = None
) -> int:
    """A trial made the way the scheduler will make them (queries.trials.create_trial)."""
    with master.db() as db:
        experiment = db.get(Experiment, experiment_id)
        assert experiment is not None
        trial = create_trial(db, experiment, request_id, hparams or {"lr": 0.1}, seed=3)
        db.commit()
        return trial.id


def tgz(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# -- the context archive, without a master -----------------------------------------------------


def test_safe_extract_round_trip_and_links_inside(tmp_path: Path) -> None:
    data = tgz(
        [
            (member("pkg", tarfile.DIRTYPE), None),
            (member("pkg/model_def.py"), b"x = 1\n"),
            (member("alias.py", tarfile.SYMTYPE, "pkg/model_def.py"), None),
            (member("copy.py", tarfile.LNKTYPE, "pkg/model_def.py"), None),
            (member("pkg/up", tarfile.SYMTYPE, ".."), None),
        ]
    )
    entries = context_archive.safe_extract(data, tmp_path / "out")
    assert [e.kind for e in entries] == ["dir", "file", "symlink", "hardlink", "symlink"]
    out = tmp_path / "out"
    assert (out / "pkg/model_def.py").read_bytes() == b"x = 1\n"
    assert (out / "alias.py").read_bytes() == b"x = 1\n" and (out / "alias.py").is_symlink()
    assert (out / "copy.py").read_bytes() == b"x = 1\n"
    packed = context_archive.pack_files([("a/b.txt", "file", b"hi", None), ("d", "dir", b"", 0)])
    assert [e.path for e in context_archive.validate_archive(packed)] == ["a/b.txt", "d"]
    assert context_archive.validate_archive(context_archive.empty_archive()) == []


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([(member("../evil.py"), b"x")], "'..' component"),
        ([(member("a/../../evil.py"), b"x")], "'..' component"),
        ([(member("/etc/evil.py"), b"x")], "absolute path"),
        ([(member("out", tarfile.SYMTYPE, "../../etc"), None)], "points outside"),
        ([(member("out", tarfile.SYMTYPE, "/etc"), None)], "absolute or empty"),
        (
            [
                (member("d", tarfile.DIRTYPE), None),
                (member("d/l1", tarfile.SYMTYPE, ".."), None),
                (member("d/l2", tarfile.SYMTYPE, "l1/.."), None),
            ],
            "passes through another link",
        ),
        (
            [(member("l", tarfile.SYMTYPE, "."), None), (member("l/x.py"), b"x")],
            "written through a link",
        ),
        ([(member("h", tarfile.LNKTYPE, "/etc/passwd"), None)], "absolute path"),
        ([(member("h", tarfile.LNKTYPE, "missing"), None)], "no earlier regular file"),
        ([(member("fifo", tarfile.FIFOTYPE), None)], "not a file, directory or link"),
    ],
)
def test_unsafe_archives_are_refused(
    tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], message: str
) -> None:
    with pytest.raises(InvalidExperiment, match=message):
        context_archive.safe_extract(tgz(members), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_context_size_limits(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(context_archive, "MAX_CONTEXT_SIZE", 1000)
    # Zeros compress to almost nothing: the limit counts what the archive unpacks to.
    with pytest.raises(InvalidExperiment, match="over the limit of 1,000 bytes"):
        context_archive.validate_archive(tgz([(member("big.bin"), bytes(5000))]))
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / "big.bin").write_bytes(bytes(2000))
    with pytest.raises(InvalidExperiment, match="detignore"):
        context_archive.pack_directory(tmp_path / "ctx")
    with pytest.raises(InvalidExperiment, match="not a gzip-compressed tar"):
        context_archive.validate_archive(b"plain text, not gzip")


# -- creating ----------------------------------------------------------------------------------


def test_create_get_and_model_def(master: LiveMaster, tmp_path: Path) -> None:
    with master.client(master.login("determined")) as client:
        files = [
            {"path": "pkg", "type": 53, "content": ""},
            {"path": "pkg/model_def.py", "type": 48, "content": b64(b"print('hi')\n")},
            {"path": "README.md", "type": "file", "content": b64(b"# hello\n"), "mode": 0o600},
        ]
        created = post_experiment(client, modelDefinition=files)
        exp = created["experiment"]
        assert exp["state"] == S + "ACTIVE" and exp["archived"] is False
        assert exp["username"] == "determined" and exp["description"] == "fake-linear"
        assert exp["numTrials"] == 0 and exp["trialIds"] == [] and exp["searcherType"] == "single"
        config = created["config"]
        assert config["searcher"]["metric"] == "validation_loss"
        assert isinstance(config["reproducibility"]["experiment_seed"], int)  # fixed at creation

        got = client.get(f"/api/v1/experiments/{exp['id']}").json()
        assert got == {"experiment": exp, "config": config}
        blob = client.get(f"/api/v1/experiments/{exp['id']}/model_def").json()["b64Tgz"]
        context_archive.safe_extract(base64.b64decode(blob), tmp_path / "ctx")
        assert (tmp_path / "ctx/pkg/model_def.py").read_text() == "print('hi')\n"
        assert (tmp_path / "ctx/README.md").stat().st_mode & 0o777 == 0o600

        # YAML text, a context archive, not activated, archived.
        archive = tgz([(member("train.py"), b"pass\n")])
        text = yaml.safe_dump(linear_config())
        second = post_experiment(
            client, text, contextArchive=b64(archive), activate=False, archived=True
        )["experiment"]
        assert second["state"] == S + "PAUSED" and second["archived"] is True
        blob = client.get(f"/api/v1/experiments/{second['id']}/model_def").json()["b64Tgz"]
        assert base64.b64decode(blob) == archive

        # A context of several streamed pieces, the last one short, comes back whole.
        size = CONTEXT_CHUNK * 2 + 7
        big = tgz([(member("blob.bin"), random.Random(5).randbytes(size))])
        third = post_experiment(client, contextArchive=b64(big), activate=False)["experiment"]
        answer = client.get(f"/api/v1/experiments/{third['id']}/model_def")
        assert int(answer.headers["content-length"]) == len(answer.content)
        assert base64.b64decode(answer.json()["b64Tgz"]) == big

        # validateOnly stores nothing and answers the config it would store.
        checked = post_experiment(client, validateOnly=True)
        assert checked["experiment"] is None and checked["config"]["description"] == "fake-linear"
        listed = client.get("/api/v1/experiments").json()
        assert [e["id"] for e in listed["experiments"]] == [exp["id"], second["id"], third["id"]]
        assert_error(client.get("/api/v1/experiments/999999"), 404, "experiment 999999 not found")
        assert_error(client.get("/api/v1/experiments/99999999999"), 400)


def test_create_rejects_bad_configs_and_contexts(
    master: LiveMaster, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with master.client(master.login("determined")) as client:

        def create(**body: Any) -> httpx.Response:
            return client.post("/api/v1/experiments", json={"config": linear_config(), **body})

        bad = linear_config()
        bad["searcher"]["max_length"] = {"lightyears": 3}
        bad["max_restarts"] = -1
        bad["no_such_field"] = True
        error = assert_error(create(config=bad), 400, "invalid experiment config")
        fields = {d["field"] for d in error["details"]}
        assert {"max_restarts", "no_such_field"} <= fields
        assert any(f.startswith("searcher.max_length") for f in fields), fields
        assert_error(create(config="searcher: [unclosed"), 400, "invalid experiment config")
        # A config string naming a file on the master is YAML text, never read as a path.
        assert_error(create(config="/etc/passwd"), 400, "invalid experiment config")
        assert_error(create(config=42), 400)
        unmounted = linear_config()
        # Inside the allowed root (tmp_path), but missing: as a share not mounted here.
        missing = tmp_path / "unmounted"
        unmounted["checkpoint_storage"] = {"type": "shared_fs", "host_path": str(missing)}
        error = assert_error(create(config=unmounted), 400, f"'{missing}' is not a dir")
        assert "mount the shared filesystem" in error["message"]

        def archive(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> httpx.Response:
            return create(contextArchive=b64(tgz(members)))

        assert_error(archive([(member("../x.py"), b"x")]), 400, "'..' component")
        assert_error(archive([(member("/abs.py"), b"x")]), 400, "absolute path")
        link_out = [(member("l", tarfile.SYMTYPE, "../.."), None)]
        assert_error(archive(link_out), 400, "outside")
        assert_error(create(contextArchive=b64(b"not gzip at all")), 400, "not a gzip")
        assert_error(create(contextArchive="%%% not base64"), 400, "not valid base64")
        files = [{"path": "../x.py", "type": 48, "content": b64(b"x")}]
        assert_error(create(modelDefinition=files), 400, "'..' component")
        files = [{"path": "x.py", "type": 50, "content": ""}]
        assert_error(create(modelDefinition=files), 400, "neither a file")
        both = {"modelDefinition": [], "contextArchive": b64(tgz([]))}
        assert_error(create(**both), 400, "not both")

        monkeypatch.setattr(context_archive, "MAX_CONTEXT_SIZE", 1000)
        big = [{"path": "big.bin", "type": 48, "content": b64(bytes(1500))}]
        assert_error(create(modelDefinition=big), 400, "96 MB")
        assert_error(archive([(member("big.bin"), bytes(1500))]), 400, "96 MB")
        assert client.get("/api/v1/experiments").json()["pagination"]["total"] == 0


# -- listing -----------------------------------------------------------------------------------


def test_list_filters_sorts_and_paginates(master: LiveMaster) -> None:
    alice = make_user(master, "alice")
    ids: dict[str, int] = {}
    with master.client(master.login("determined")) as client:
        for name, labels in [("mnist conv", ["a", "b"]), ("cifar 50%_off", ["b"])]:
            config = linear_config() | {"description": name, "labels": labels}
            ids[name] = post_experiment(client, config)["experiment"]["id"]
    with master.client(alice) as client:
        config = linear_config() | {"description": "alice's MNIST", "labels": ["a"]}
        ids["alice"] = post_experiment(client, config, activate=False)["experiment"]["id"]
        assert client.post(f"/api/v1/experiments/{ids['alice']}/kill").status_code == 200
        assert client.post(f"/api/v1/experiments/{ids['alice']}/archive").status_code == 200
    add_trial(master, ids["mnist conv"], "r1")
    add_trial(master, ids["mnist conv"], "r2")
    add_trial(master, ids["cifar 50%_off"], "r1")

    with master.client(master.login("determined")) as client:

        def listed(**params: Any) -> list[int]:
            response = client.get("/api/v1/experiments", params=params)
            assert response.status_code == 200, response.text
            return [e["id"] for e in response.json()["experiments"]]

        mnist, cifar, theirs = ids["mnist conv"], ids["cifar 50%_off"], ids["alice"]
        assert listed() == [mnist, cifar, theirs]
        assert listed(description="mnist") == [mnist, theirs]
        assert listed(name="50%_") == [cifar]  # LIKE wildcards are literal
        assert listed(description="0%x") == []
        assert listed(labels=["a"]) == [mnist, theirs]
        assert listed(labels=["a", "b"]) == [mnist]
        assert listed(users=["alice"]) == [theirs]
        assert listed(users=["alice", "determined"]) == [mnist, cifar, theirs]
        assert listed(archived="true") == [theirs]
        assert listed(archived="false") == [mnist, cifar]
        assert listed(states=["STATE_CANCELED"]) == [theirs]
        assert listed(states=["active", "7"]) == [mnist, cifar, theirs]
        assert listed(sort_by="SORT_BY_NUM_TRIALS", order_by="ORDER_BY_DESC") == [
            mnist,
            cifar,
            theirs,
        ]
        assert listed(sort_by=8) == [theirs, cifar, mnist]
        assert listed(sort_by="USER", order_by=2) == [cifar, mnist, theirs]
        assert listed(sort_by="DESCRIPTION") == [theirs, cifar, mnist]
        assert listed(sort_by="END_TIME", order_by="DESC") == [theirs, cifar, mnist]
        assert listed(sort_by="END_TIME") == [theirs, mnist, cifar]
        assert listed(sort_by="STATE") == [mnist, cifar, theirs]  # ACTIVE=1 < CANCELED=7
        assert listed(sort_by="ID", order_by="DESC") == [theirs, cifar, mnist]

        page = client.get("/api/v1/experiments", params={"offset": 1, "limit": 1}).json()
        assert [e["id"] for e in page["experiments"]] == [cifar]
        assert page["pagination"] == {
            "offset": 1,
            "limit": 1,
            "startIndex": 1,
            "endIndex": 2,
            "total": 3,
        }
        assert listed(offset=-1) == [theirs]
        for params, field in [
            ({"sort_by": "SORT_BY_COLOR"}, "sort_by"),
            ({"order_by": "SIDEWAYS"}, "order_by"),
            ({"states": "STATE_BORED"}, "states"),
        ]:
            assert_error(client.get("/api/v1/experiments", params=params), 400, field)
        assert_error(client.get("/api/v1/experiments", params={"archived": "maybe"}), 400)


# -- patch, state machine, archive, delete -----------------------------------------------------


def test_patch_by_owner_or_admin_only(master: LiveMaster) -> None:
    other = make_user(master, "bob")
    with master.client(master.login("determined")) as client:
        exp_id = post_experiment(client)["experiment"]["id"]
        body = {"description": "renamed", "labels": ["x", "y", "x"], "notes": "# notes"}
        patched = client.patch(f"/api/v1/experiments/{exp_id}", json=body).json()
        assert patched["experiment"]["description"] == "renamed"
        assert patched["experiment"]["name"] == "renamed"
        assert patched["experiment"]["labels"] == ["x", "y"]
        assert patched["experiment"]["notes"] == "# notes"
        assert patched["config"]["description"] == "renamed"
        assert patched["config"]["labels"] == ["x", "y"]
        wrapped = {"experiment": {"name": "again"}}
        again = client.patch(f"/api/v1/experiments/{exp_id}", json=wrapped).json()
        assert again["experiment"]["description"] == "again"
        assert again["experiment"]["labels"] == ["x", "y"]  # untouched
        conflict = {"name": "a", "description": "b"}
        assert_error(client.patch(f"/api/v1/experiments/{exp_id}", json=conflict), 400)
        assert_error(client.patch(f"/api/v1/experiments/{exp_id}", json={"labels": [""]}), 400)
    with master.client(other) as client:
        response = client.patch(f"/api/v1/experiments/{exp_id}", json={"notes": "mine"})
        assert_error(response, 403, "only its owner or an admin")
        for action in ("activate", "pause", "cancel", "kill", "archive", "unarchive"):
            assert_error(client.post(f"/api/v1/experiments/{exp_id}/{action}"), 403)
        assert_error(client.delete(f"/api/v1/experiments/{exp_id}"), 403)
    with master.client(master.login("admin")) as client:
        response = client.patch(f"/api/v1/experiments/{exp_id}", json={"notes": "admin's"})
        assert response.json()["experiment"]["notes"] == "admin's"


def state_of(client: httpx.Client, exp_id: int) -> str:
    state: str = client.get(f"/api/v1/experiments/{exp_id}").json()["experiment"]["state"]
    return state.removeprefix(S)


def test_state_machine(master: LiveMaster) -> None:
    with master.client(master.login("determined")) as client:

        def act(exp_id: int, action: str, status: int = 200, contains: str = "") -> str:
            response = client.post(f"/api/v1/experiments/{exp_id}/{action}")
            if status != 200:
                assert_error(response, status, contains)
            else:
                assert response.status_code == 200, response.text
            return state_of(client, exp_id)

        # No trials running: cancel ends at once.
        plain = post_experiment(client)["experiment"]["id"]
        assert act(plain, "pause") == "PAUSED"
        assert act(plain, "pause") == "PAUSED"  # idempotent
        assert act(plain, "activate") == "ACTIVE"
        assert act(plain, "archive", 409, "only an ended experiment") == "ACTIVE"
        assert_error(client.delete(f"/api/v1/experiments/{plain}"), 409, "kill it")
        assert act(plain, "cancel") == "CANCELED"
        got = client.get(f"/api/v1/experiments/{plain}").json()["experiment"]
        assert got["endTime"] is not None
        assert act(plain, "cancel") == "CANCELED"  # ended: a no-op, as in Determined
        assert act(plain, "kill") == "CANCELED"
        assert act(plain, "activate", 409, "cannot be activated") == "CANCELED"
        assert act(plain, "pause", 409, "cannot be paused") == "CANCELED"
        assert act(plain, "archive") == "CANCELED"
        assert client.get(f"/api/v1/experiments/{plain}").json()["experiment"]["archived"]
        act(plain, "unarchive")
        assert not client.get(f"/api/v1/experiments/{plain}").json()["experiment"]["archived"]

        # With trials: pause and activate carry them; cancel waits for the running one.
        busy = post_experiment(client)["experiment"]["id"]
        running = add_trial(master, busy, "r1")
        idle = add_trial(master, busy, "r2")
        assert act(busy, "pause") == "PAUSED"
        trial_states = {
            t["id"]: t["state"].removeprefix(S)
            for t in client.get(f"/api/v1/experiments/{busy}/trials").json()["trials"]
        }
        assert trial_states == {running: "PAUSED", idle: "PAUSED"}
        assert act(busy, "activate") == "ACTIVE"
        with master.db() as db:  # the idle trial is paused on its own (as a scheduler might)
            row = db.get(Trial, idle)
            assert row is not None
            row.state = ExperimentState.PAUSED
            db.commit()
        assert act(busy, "cancel") == "STOPPING_CANCELED"
        trials = client.get(f"/api/v1/experiments/{busy}/trials").json()["trials"]
        assert {t["id"]: t["state"] for t in trials} == {
            running: S + "STOPPING_CANCELED",
            idle: S + "CANCELED",
        }
        assert act(busy, "activate", 409, "STATE_STOPPING_CANCELED") == "STOPPING_CANCELED"
        assert act(busy, "kill") == "STOPPING_KILLED"  # escalates
        assert act(busy, "cancel") == "STOPPING_KILLED"  # never softens
        trial = client.get(f"/api/v1/trials/{running}").json()["trial"]
        assert trial["state"] == S + "STOPPING_KILLED"
        assert_error(client.delete(f"/api/v1/experiments/{busy}"), 409)
        with master.db() as db:  # what the scheduler does once the workers are gone
            row = db.get(Trial, running)
            assert row is not None
            trial_ends(db, row, ExperimentState.CANCELED)
            db.add(TrainingMetrics(trial_id=running, batches_trained=1, metrics={"loss": 1.0}))
            db.commit()
        assert state_of(client, busy) == "CANCELED"

        # Delete removes the experiment and everything under it.
        assert client.delete(f"/api/v1/experiments/{busy}").json() == {}
        assert_error(client.get(f"/api/v1/experiments/{busy}"), 404)
        assert_error(client.get(f"/api/v1/trials/{running}"), 404)
        with master.db() as db:
            assert db.query(TrainingMetrics).count() == 0
            assert db.query(Trial).filter_by(experiment_id=busy).count() == 0
        assert_error(client.delete(f"/api/v1/experiments/{busy}"), 404)
        assert_error(client.post("/api/v1/experiments/424242/kill"), 404)
    with master.client(master.login("admin")) as client:  # an admin may act on anyone's
        assert client.post(f"/api/v1/experiments/{plain}/archive").status_code == 200
        assert client.delete(f"/api/v1/experiments/{plain}").status_code == 200


def test_create_refuses_a_context_without_the_entrypoint_module(master: LiveMaster) -> None:
    """``detlite experiment create adaptive.yaml examples`` (the parent folder) is refused
    at creation, naming the entrypoint and what the context holds, instead of every trial
    failing its restarts with ``No module named 'model_def'``."""
    config = {**linear_config(), "entrypoint": "model_def:MNistTrial"}

    def files(*paths: str) -> list[dict[str, Any]]:
        return [{"path": p, "type": "file", "content": b64(b"pass\n")} for p in paths]

    with master.client(master.login("determined")) as client:

        def create(**body: Any) -> httpx.Response:
            return client.post("/api/v1/experiments", json={"config": config, **body})

        parent = files("mnist_pytorch/model_def.py", "mnist_pytorch/train.py", "README.md")
        error = assert_error(create(modelDefinition=parent), 400, "'model_def:MNistTrial'")
        assert "model_def.py" in error["message"], error
        assert "mnist_pytorch/model_def.py" in error["message"], error
        archive = tgz([(member("mnist_pytorch/model_def.py"), b"pass\n")])
        assert_error(create(contextArchive=b64(archive)), 400, "model_def:MNistTrial")
        assert_error(create(), 400, "the context is empty")
        assert_error(create(modelDefinition=parent, validateOnly=True), 400, "model_def")
        many = files(*(f"f{i:02}.txt" for i in range(30)))
        error = assert_error(create(modelDefinition=many), 400, "(30 in all)")
        assert "f07.txt" in error["message"] and "f08.txt" not in error["message"], error
        assert client.get("/api/v1/experiments").json()["pagination"]["total"] == 0

        # The module as a file, as a package, in a package; an installed module; a native
        # command (the worker re-runs it); validateOnly with no context checks the config only.
        assert create(modelDefinition=files("model_def.py")).status_code == 200
        assert create(modelDefinition=files("model_def/__init__.py")).status_code == 200
        nested = {**config, "entrypoint": "pkg.model_def:MNistTrial"}
        body = {"config": nested, "modelDefinition": files("pkg/model_def.py")}
        assert client.post("/api/v1/experiments", json=body).status_code == 200
        installed = {**config, "entrypoint": "detlite.testing.fake:LinearTrial"}
        assert client.post("/api/v1/experiments", json={"config": installed}).status_code == 200
        native = {**config, "internal": {"native": {"command": ["train.py"]}}}
        body = {"config": native, "modelDefinition": files("train.py")}
        assert client.post("/api/v1/experiments", json=body).status_code == 200
        assert create(validateOnly=True).status_code == 200
