"""``detlite experiment`` and ``detlite trial`` against a live master (SQLite and PostgreSQL).

Rows come from tests/master/factories.py (the master runs without its scheduler, see
conftest.py); logs are posted through the API as a worker would. Most commands run in this
process through ``detlite.cli.main.main``; the ones that block (``wait``, ``logs -f``,
``create --test``) run as real ``detlite`` processes while the test changes the experiment
under them.
"""

from __future__ import annotations

import base64
import io
import json
import subprocess
import tarfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
import yaml

from detlite.api.enums import ExperimentState
from detlite.master.orm import Experiment, Trial
from detlite.testing.fake import linear_config
from tests.master.conftest import LiveMaster
from tests.master.factories import make_checkpoint, make_experiment, make_trial, make_validation
from tests.master.test_cli_master import EXE, clean_env
from tests.master.test_cli_models import CLI

S = ExperimentState


def post_logs(master: LiveMaster, token: str, trial_id: int, messages: list[str]) -> None:
    body = {"logs": [{"message": m, "rank": 0} for m in messages]}
    with master.client(token) as client:
        response = client.post(f"/api/v1/trials/{trial_id}/logs", json=body)
    assert response.status_code == 200, response.text


def set_state(master: LiveMaster, experiment_id: int, state: S, *trials: tuple[int, S]) -> None:
    with master.db() as db:
        for trial_id, trial_state in trials:
            db.get_one(Trial, trial_id).state = trial_state
        db.get_one(Experiment, experiment_id).state = state
        db.commit()


def wait_for(
    predicate: Callable[[], bool],
    what: str,
    timeout: float = 60.0,
    procs: Mapping[str, subprocess.Popen[bytes]] | None = None,
) -> None:
    """Poll ``predicate``; a process of ``procs`` that ends first fails with its stderr."""
    deadline = time.monotonic() + timeout
    while not predicate():
        for name, proc in (procs or {}).items():
            if proc.poll() is not None and not predicate():
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                raise AssertionError(f"{name} exited {proc.returncode} before {what}: {err}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def ids_in(table: str) -> list[int]:
    return [int(line.split()[0]) for line in table.splitlines()[1:] if line.strip()]


def test_list_describe_and_logs(
    master: LiveMaster, cli: CLI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DETLITE_MASTER", master.url)
    with master.db() as db:
        exp = make_experiment(db, state=S.COMPLETED)
        t1 = make_trial(db, exp, state=S.COMPLETED)
        t2 = make_trial(db, exp, state=S.COMPLETED)
        make_validation(db, t1, 10, {"validation_loss": 0.5})
        best = make_validation(db, t1, 20, {"validation_loss": 0.3})
        make_validation(db, t2, 10, {"validation_loss": 0.2})
        ckpt = make_checkpoint(db, t1, 20, validation=best).uuid
        others = make_experiment(db, owner="admin", state=S.CANCELED).id
        archived = make_experiment(db, state=S.COMPLETED)
        archived.archived = True
        db.commit()
        exp_id, t1_id, t2_id, archived_id = exp.id, t1.id, t2.id, archived.id

    # list: mine and unarchived by default; --all: everything.
    assert ids_in(cli.ok("experiment", "list")) == [exp_id]
    everything = cli.ok("experiment", "list", "--all")
    assert ids_in(everything) == sorted([exp_id, others, archived_id])
    assert everything.splitlines()[0].split()[:4] == ["ID", "OWNER", "DESCRIPTION", "STATE"]
    listed = json.loads(cli.ok("experiment", "list", "--all", "--json"))
    assert sorted(e["id"] for e in listed) == sorted([exp_id, others, archived_id])

    # describe: the experiment, then one row per trial with its best searcher metric.
    text = cli.ok("experiment", "describe", str(exp_id))
    assert "State:        COMPLETED" in text
    assert "validation_loss (smaller is better)" in text
    table = text.split("\n\n", 1)[1]
    rows = {int(r.split()[0]): r.split() for r in table.splitlines()[1:]}
    assert rows[t1_id][1:4] == ["COMPLETED", "0", "0.3"] and rows[t1_id][5] == ckpt
    assert rows[t2_id][1:4] == ["COMPLETED", "0", "0.2"]
    described = json.loads(cli.ok("experiment", "describe", str(exp_id), "--json"))
    assert described["experiment"]["id"] == exp_id
    assert sorted(t["id"] for t in described["trials"]) == [t1_id, t2_id]

    # trial describe: validations and checkpoints.
    text = cli.ok("trial", "describe", str(t1_id))
    assert "Experiment:       " + str(exp_id) in text
    assert "validation_loss=0.5" in text and "validation_loss=0.3" in text
    assert ckpt in text and "COMPLETED" in text
    trial_json = json.loads(cli.ok("trial", "describe", str(t1_id), "--json"))
    assert [v["stepsCompleted"] for v in trial_json["validations"]] == [10, 20]
    assert [c["uuid"] for c in trial_json["checkpoints"]] == [ckpt]

    # logs: every trial's, trial by trial, more than one page of them for t2.
    token = master.login("determined")
    post_logs(master, token, t1_id, ["hello\n", "world"])
    many = [f"line {i}" for i in range(1205)]
    post_logs(master, token, t2_id, many)
    expected = [f"[trial {t1_id}] [rank 0] hello", f"[trial {t1_id}] [rank 0] world"]
    expected += [f"[trial {t2_id}] [rank 0] {m}" for m in many]
    assert cli.ok("experiment", "logs", str(exp_id)).splitlines() == expected
    # -f on an ended experiment prints everything once and returns.
    assert cli.ok("experiment", "logs", "-f", str(exp_id)).splitlines() == expected
    assert cli.ok("trial", "logs", str(t1_id)).splitlines() == ["[rank 0] hello", "[rank 0] world"]
    # A restarted trial's lines are marked where each later run begins.
    with master.db() as db:
        db.get_one(Trial, t1_id).restarts = 2
        db.commit()
    post_logs(master, token, t1_id, ["again"])
    assert cli.ok("trial", "logs", str(t1_id)).splitlines() == [
        "[rank 0] hello",
        "[rank 0] world",
        "--- run 2 (after 2 restarts) ---",
        "[rank 0] again",
    ]
    assert cli.ok("experiment", "logs", str(exp_id)).splitlines()[2:4] == [
        f"[trial {t1_id}] --- run 2 (after 2 restarts) ---",
        f"[trial {t1_id}] [rank 0] again",
    ]

    # Unknown ids are one-line errors.
    for args in (("experiment", "describe", "999999"), ("trial", "logs", "999999")):
        code, out, err = cli(*args)
        assert code != 0 and "error:" in err and "not found" in err, (out, err)


def test_describe_says_why_failed_trials_failed(
    master: LiveMaster, cli: CLI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DETLITE_MASTER", master.url)
    with master.db() as db:
        exp = make_experiment(db, state=S.ERROR)
        failed = make_trial(db, exp, state=S.ERROR)
        fine = make_trial(db, exp, state=S.COMPLETED)
        exp_id, failed_id, fine_id = exp.id, failed.id, fine.id
    token = master.login("determined")
    lines = [
        {
            "message": "the trial failed:\nTraceback (most recent call last):\nKeyError: 'x'",
            "level": "ERROR",
        },
        {"message": f"trial {failed_id}'s workers exited with code 1", "level": "ERROR"},
        {
            "message": "[rank 0 stderr] ModuleNotFoundError: No module named 'model_def'",
            "level": "ERROR",
        },
        {"message": "an INFO line after it", "level": "INFO"},
    ]
    with master.client(token) as client:
        for trial_id in (failed_id, fine_id):
            answer = client.post(f"/api/v1/trials/{trial_id}/logs", json={"logs": lines})
            assert answer.status_code == 200, answer.text
    text = cli.ok("experiment", "describe", str(exp_id))
    why = "ModuleNotFoundError: No module named 'model_def'"
    assert f"trial {failed_id} failed: [rank 0 stderr] {why}" in text
    assert f"trial {fine_id} failed" not in text  # only trials in ERROR say why
    described = json.loads(cli.ok("experiment", "describe", str(exp_id), "--json"))
    errors = {t["id"]: t.get("lastError") for t in described["trials"]}
    assert errors == {failed_id: f"[rank 0 stderr] {why}", fine_id: None}


def test_state_commands_and_wait(
    master: LiveMaster, cli: CLI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DETLITE_MASTER", master.url)
    with master.db() as db:
        paused = make_experiment(db, state=S.PAUSED)
        paused_trial = make_trial(db, paused, state=S.PAUSED)
        admins = make_experiment(db, owner="admin", state=S.PAUSED).id
        done = make_experiment(db, state=S.COMPLETED).id
        exp_id, trial_id = paused.id, paused_trial.id

    def state(experiment_id: int) -> str:
        answer = json.loads(cli.ok("experiment", "describe", str(experiment_id), "--json"))
        return str(answer["experiment"]["state"])

    out = cli.ok("experiment", "activate", str(exp_id))
    assert out.strip() == f"Activated experiment {exp_id} (now ACTIVE)"
    assert state(exp_id) == "STATE_ACTIVE"
    assert cli.ok("experiment", "pause", str(exp_id)).startswith(f"Paused experiment {exp_id}")
    assert state(exp_id) == "STATE_PAUSED"

    code, out, err = cli("experiment", "wait", str(exp_id))
    assert code == 1 and "is paused" in err, (out, err)

    # Another user's experiment: refused, nothing changes.
    code, out, err = cli("experiment", "activate", str(admins))
    assert code != 0 and "error:" in err, (out, err)
    assert state(admins) == "STATE_PAUSED"

    # cancel settles at once: its only trial is paused.
    assert "(now CANCELED)" in cli.ok("experiment", "cancel", str(exp_id))
    trial = json.loads(cli.ok("trial", "describe", str(trial_id), "--json"))["trial"]
    assert trial["state"] == "STATE_CANCELED"
    code, out, err = cli("experiment", "activate", str(exp_id))
    assert code != 0 and "cannot be activated" in err

    # wait on ended experiments: exit 0 only for COMPLETED.
    code, out, _ = cli("experiment", "wait", str(exp_id))
    assert code == 1 and out.splitlines()[-1] == f"experiment {exp_id} ended CANCELED"
    out = cli.ok("experiment", "wait", str(done))
    assert out.splitlines() == [
        f"experiment {done} COMPLETED: trials 0/0 ended",
        f"experiment {done} ended COMPLETED",
    ]

    # kill: an active experiment without trials ends at once.
    with master.db() as db:
        active = make_experiment(db, state=S.ACTIVE).id
    assert "(now CANCELED)" in cli.ok("experiment", "kill", str(active))
    assert state(active) == "STATE_CANCELED"


def test_wait_and_follow_while_it_runs(master: LiveMaster, tmp_path: Path) -> None:
    """``wait`` and ``logs -f`` as processes, while the experiment ends under them."""
    with master.db() as db:
        exp = make_experiment(db, state=S.ACTIVE)
        trial = make_trial(db, exp, state=S.ACTIVE)
        exp_id, trial_id = exp.id, trial.id
    env = clean_env(tmp_path, DETLITE_MASTER=master.url)
    outs = {name: tmp_path / f"{name}.out" for name in ("wait", "logs", "trial")}
    commands = {
        "wait": ["experiment", "wait", "--interval", "0.1", str(exp_id)],
        "logs": ["experiment", "logs", "-f", str(exp_id)],
        "trial": ["trial", "logs", "-f", str(trial_id)],
    }
    procs = {}
    for name, args in commands.items():
        with outs[name].open("wb") as out:
            procs[name] = subprocess.Popen(
                [EXE, *args], stdout=out, stderr=subprocess.PIPE, env=env
            )
    try:
        token = master.login("determined")
        post_logs(master, token, trial_id, ["first"])
        wait_for(lambda: "first" in outs["logs"].read_text(), "the first log line", procs=procs)
        wait_for(lambda: "first" in outs["trial"].read_text(), "the first log line", procs=procs)
        first = f"experiment {exp_id} ACTIVE: trials 0/1 ended"
        wait_for(lambda: first in outs["wait"].read_text(), "wait's first line", procs=procs)
        assert all(p.poll() is None for p in procs.values())  # they follow, not end

        post_logs(master, token, trial_id, ["last"])
        with master.db() as db:
            make_validation(db, db.get_one(Trial, trial_id), 10, {"validation_loss": 0.25})
        set_state(master, exp_id, S.COMPLETED, (trial_id, S.COMPLETED))
        for name, proc in procs.items():
            _, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, (name, err)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    waited = outs["wait"].read_text().splitlines()
    # A line for each change seen; which in-between ones depends on when the polls fell.
    assert waited[0] == first and len(waited) == len(set(waited))
    assert waited[-2:] == [
        f"experiment {exp_id} COMPLETED: trials 1/1 ended, best validation_loss 0.25",
        f"experiment {exp_id} ended COMPLETED",
    ]
    lines = [f"[trial {trial_id}] [rank 0] first", f"[trial {trial_id}] [rank 0] last"]
    assert outs["logs"].read_text().splitlines() == lines
    assert outs["trial"].read_text().splitlines() == ["[rank 0] first", "[rank 0] last"]


def model_def_files(master: LiveMaster, token: str, experiment_id: int) -> list[str]:
    with master.client(token) as client:
        answer = client.get(f"/api/v1/experiments/{experiment_id}/model_def").json()
    with tarfile.open(fileobj=io.BytesIO(base64.b64decode(answer["b64Tgz"]))) as archive:
        return sorted(m.name for m in archive.getmembers() if m.isfile())


def test_create(
    master: LiveMaster, cli: CLI, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DETLITE_MASTER", master.url)
    context = tmp_path / "context"
    (context / "data").mkdir(parents=True)
    (context / "model_def.py").write_text("# the trial\n")
    (context / "data" / "big.bin").write_bytes(b"x" * 1000)
    (context / ".detignore").write_text("data/\n")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(linear_config()))
    token = master.login("determined")

    out = cli.ok("experiment", "create", "--paused", str(config), str(context))
    assert out.startswith("Created experiment ")
    exp_id = int(out.split()[2])
    with master.client(token) as client:
        answer = client.get(f"/api/v1/experiments/{exp_id}").json()
    assert answer["experiment"]["state"] == "STATE_PAUSED"
    assert answer["config"]["entrypoint"] == "detlite.testing.fake:LinearTrial"
    assert model_def_files(master, token, exp_id) == ["model_def.py"]

    # YAML is read as every config is: 1e-4 is a number (YAML 1.2), here and through
    # Determined.create_experiment(path).
    exponent = tmp_path / "exponent.yaml"
    text = yaml.safe_dump(linear_config()).replace("lr: 0.1", "lr: 1e-4")
    assert "lr: 1e-4" in text
    exponent.write_text(text)
    by_cli = int(cli.ok("experiment", "create", "-q", "--paused", str(exponent), str(context)))
    from detlite.experimental import Determined

    by_client = Determined(master.url, user="determined").create_experiment(
        str(exponent), str(context), activate=False
    )
    with master.client(token) as client:
        for made in (by_cli, by_client.id):
            stored = client.get(f"/api/v1/experiments/{made}").json()["config"]
            assert stored["hyperparameters"]["lr"]["val"] == 1e-4, stored["hyperparameters"]
    for made in (by_cli, by_client.id):
        cli.ok("experiment", "kill", str(made))
        with master.client(token) as client:
            assert client.delete(f"/api/v1/experiments/{made}").status_code == 200

    # A bad config is reported and nothing is created.
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**linear_config(), "max_restarts": -1}))
    code, out, err = cli("experiment", "create", str(bad), str(context))
    assert code == 2 and "max_restarts" in err, (out, err)
    listed = json.loads(cli.ok("experiment", "list", "--all", "--json"))
    assert [e["id"] for e in listed] == [exp_id]

    # --test: an archived one-batch experiment; the command waits for it to end.
    env = clean_env(tmp_path, DETLITE_MASTER=master.url)
    proc = subprocess.Popen(
        [EXE, "experiment", "create", "--test", str(config), str(context)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:

        def test_experiment() -> dict[str, object] | None:
            with master.client(token) as client:
                found = client.get("/api/v1/experiments", params={"archived": "true"}).json()
            return found["experiments"][0] if found["experiments"] else None

        wait_for(lambda: test_experiment() is not None, "the test experiment")
        created = test_experiment()
        assert created is not None
        test_id = int(str(created["id"]))
        with master.client(token) as client:
            answer = client.get(f"/api/v1/experiments/{test_id}").json()
            assert answer["experiment"]["archived"] is True
            assert answer["experiment"]["description"] == "[test-mode] fake-linear"
            test_config = answer["config"]
            assert test_config["searcher"]["name"] == "single"
            assert test_config["searcher"]["max_length"] == {"batches": 1}
            assert test_config["max_restarts"] == 0 and test_config["scheduling_unit"] == 1
            assert client.post(f"/api/v1/experiments/{test_id}/kill").status_code == 200
            final = client.get(f"/api/v1/experiments/{test_id}").json()["experiment"]["state"]
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert f"Created test experiment {test_id} (archived)" in out
    assert final == "STATE_CANCELED"
    assert proc.returncode == 1 and "ended CANCELED" in err, (out, err)
    assert model_def_files(master, token, test_id) == ["model_def.py"]


def test_create_quiet_prints_only_the_id(
    master: LiveMaster, cli: CLI, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``ID=$(detlite experiment create -q ...)``: the README's walkthrough uses the new id."""
    monkeypatch.setenv("DETLITE_MASTER", master.url)
    context = tmp_path / "context"
    context.mkdir()
    (context / "model_def.py").write_text("# the trial\n")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(linear_config()))
    token = master.login("determined")

    first = int(cli.ok("experiment", "create", "--paused", str(config), str(context)).split()[2])
    out = cli.ok("experiment", "create", "-q", "--paused", str(config), str(context))
    assert out.strip().isdigit() and out == out.strip() + "\n", out
    new_id = int(out)
    assert new_id != first
    with master.client(token) as client:
        answer = client.get(f"/api/v1/experiments/{new_id}").json()
    assert answer["experiment"]["state"] == "STATE_PAUSED"


def test_create_errors_name_the_config_file(
    master: LiveMaster, cli: CLI, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A bad config names its file; a context without the entrypoint's module (the parent
    folder given as CONTEXT_DIR) is refused at creation, naming the entrypoint and the file."""
    monkeypatch.setenv("DETLITE_MASTER", master.url)
    parent = tmp_path / "examples"
    (parent / "mnist").mkdir(parents=True)
    (parent / "mnist" / "model_def.py").write_text("# the trial\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**linear_config(), "max_restarts": -1}))
    code, out, err = cli("experiment", "create", str(bad), str(parent / "mnist"))
    assert code == 2 and f"({bad})" in err and "max_restarts" in err, (out, err)

    config = tmp_path / "adaptive.yaml"
    config.write_text(yaml.safe_dump({**linear_config(), "entrypoint": "model_def:MNistTrial"}))
    code, out, err = cli("experiment", "create", str(config), str(parent))
    assert code != 0 and str(config) in err, (out, err)
    assert "'model_def:MNistTrial'" in err and "mnist/model_def.py" in err, err
    assert json.loads(cli.ok("experiment", "list", "--all", "--json")) == []
    assert cli.ok("experiment", "create", "-q", str(config), str(parent / "mnist")).strip()


def test_unreachable_master_suggests_detlite_up(
    cli: CLI, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import socket

    with socket.socket() as sock:  # a port nothing listens on once it is closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("DETLITE_MASTER", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("HOME", str(tmp_path))
    code, out, err = cli("experiment", "list")
    assert code != 0 and "could not reach the master" in err, (out, err)
    assert "detlite up" in err and "detlite master" in err, err
