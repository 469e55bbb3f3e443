"""``detlite model`` and ``detlite checkpoint`` against a live master, on SQLite and PostgreSQL.

The commands run through ``detlite.cli.main.main`` in this process (the error mapping and exit
codes included) and talk HTTP to the master; one run goes through the installed ``detlite``
executable to prove the commands are registered there too.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from detlite.api.enums import CheckpointState
from detlite.cli.main import main
from tests.master.conftest import LiveMaster
from tests.master.factories import make_checkpoint, make_experiment, make_trial, make_validation

EXE = shutil.which("detlite", path=str(Path(sys.executable).parent)) or "detlite"


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    # Error output is compared line by line: no tracebacks. (tests/conftest.py gives every
    # test private XDG directories and no master, user or password from the environment.)
    monkeypatch.delenv("DETLITE_DEBUG", raising=False)


class CLI:
    """Runs ``detlite ARGS`` in this process; returns (exit code, stdout, stderr)."""

    def __init__(self, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
        self.capsys = capsys
        self.monkeypatch = monkeypatch

    def __call__(self, *args: str, stdin: str = "") -> tuple[int, str, str]:
        self.monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        self.capsys.readouterr()
        with pytest.raises(SystemExit) as exited:
            main(list(args))
        out, err = self.capsys.readouterr()
        code = exited.value.code
        return (code if isinstance(code, int) else 1), out, err

    def ok(self, *args: str, stdin: str = "") -> str:
        code, out, err = self(*args, stdin=stdin)
        assert code == 0, (out, err)
        return out


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> CLI:
    return CLI(capsys, monkeypatch)


def columns(table: str) -> list[int]:
    """Where each header's column starts, from the header line."""
    header = table.splitlines()[0]
    return [i for i, ch in enumerate(header) if ch != " " and (i == 0 or header[i - 1] == " ")]


def test_model_commands(
    master: LiveMaster, cli: CLI, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DETLITE_MASTER", master.url)
    with master.db() as db:
        trial = make_trial(db, make_experiment(db))
        validation = make_validation(db, trial, 10, {"validation_loss": 0.25})
        done = make_checkpoint(db, trial, 10, validation=validation).uuid
        later = make_checkpoint(db, trial, 20).uuid
        active = make_checkpoint(db, trial, 30, state=CheckpointState.ACTIVE).uuid

    out = cli.ok("model", "create", "mnist-cnn", "-d", "First model", "--metadata", '{"a": 1}')
    assert out == "created model mnist-cnn\n"
    made = json.loads(cli.ok("model", "create", "Zebra", "--json"))
    assert made["name"] == "Zebra" and made["metadata"] == {}
    code, _, err = cli("model", "create", "mnist-cnn")
    assert code == 1 and err.startswith("error: ") and err.count("\n") == 1
    code, _, err = cli("model", "create", "other", "--metadata", "[1]")
    assert code == 2 and "must be a JSON object" in err

    listing = cli.ok("model", "list")
    lines = listing.splitlines()
    assert lines[0].split() == ["NAME", "VERSIONS", "OWNER", "CREATED", "UPDATED", "DESCRIPTION"]
    assert [line.split()[0] for line in lines[1:]] == ["mnist-cnn", "Zebra"]
    starts = columns(listing)
    assert lines[1][starts[1] : starts[2]].strip() == "0"  # aligned under VERSIONS
    assert lines[1][starts[2] : starts[3]].strip() == "determined"
    assert lines[1][starts[5] :] == "First model"
    desc = cli.ok("model", "list", "--order", "desc")
    assert [line.split()[0] for line in desc.splitlines()[1:]] == ["Zebra", "mnist-cnn"]
    as_json = json.loads(cli.ok("model", "list", "--json", "--name", "CNN"))
    assert [m["name"] for m in as_json] == ["mnist-cnn"] and as_json[0]["metadata"] == {"a": 1}

    out = cli.ok("model", "register-version", "mnist-cnn", done)
    assert out == f"registered checkpoint {done} as version 1 of model mnist-cnn\n"
    version = json.loads(cli.ok("model", "register-version", "mnist-cnn", later, "--json"))
    assert version["version"] == 2 and version["checkpoint"]["uuid"] == later
    code, _, err = cli("model", "register-version", "mnist-cnn", active)
    assert code == 1 and "COMPLETED" in err
    code, _, err = cli("model", "register-version", "no-model", done)
    assert code == 1 and "error:" in err

    described = cli.ok("model", "describe", "mnist-cnn")
    assert "Name:" in described and "mnist-cnn" in described and '{"a": 1}' in described
    table = described.split("\n\n")[1]
    rows = table.splitlines()
    assert rows[0].split() == ["VERSION", "CHECKPOINT", "TRIAL", "BATCHES", "REGISTERED", "METRICS"]
    assert rows[1].split()[:4] == ["1", done, str(trial.id), "10"]
    assert rows[1].endswith("validation_loss=0.25")
    assert rows[2].split()[:4] == ["2", later, str(trial.id), "20"]
    data = json.loads(cli.ok("model", "describe", "mnist-cnn", "--json"))
    assert [v["version"] for v in data["modelVersions"]] == [1, 2]
    assert "No versions" in cli.ok("model", "describe", "Zebra")
    assert "2" in cli.ok("model", "list").splitlines()[1]

    # Only the owner (or an admin) deletes; confirmation unless --yes.
    code, _, err = cli("model", "delete", "mnist-cnn", stdin="n\n")
    assert code == 130 and "aborted" in err
    monkeypatch.setenv("DETLITE_USER", "admin")
    cli.ok("model", "create", "admins-model")
    monkeypatch.delenv("DETLITE_USER")  # $DETLITE_USER did not make admin the active user
    code, _, err = cli("model", "delete", "admins-model", "--yes")
    assert code == 1 and "error:" in err
    assert cli.ok("model", "delete", "mnist-cnn", stdin="y\n").endswith("deleted model mnist-cnn\n")
    code, _, err = cli("model", "describe", "mnist-cnn")
    assert code == 1 and "not found" in err.lower()

    # --master on the group; nothing listening is one line naming the address.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    code, _, err = cli("model", "--master", dead, "list")
    assert code == 1 and dead in err and err.count("\n") == 1
    assert "Zebra" in cli.ok("model", "-m", master.url, "list")

    env = {k: v for k, v in os.environ.items() if not k.startswith("DETLITE_")}
    proc = subprocess.run(
        [EXE, "model", "--master", master.url, "list", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert sorted(m["name"] for m in json.loads(proc.stdout)) == ["Zebra", "admins-model"]


def test_checkpoint_commands(
    master: LiveMaster, cli: CLI, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DETLITE_MASTER", master.url)
    storage = tmp_path / "storage"
    files = {"state.json": b'{"w": 1}\n', "code/model_def.py": b"# code\n"}
    with master.db() as db:
        trial = make_trial(db, make_experiment(db, storage_path=storage))
        validation = make_validation(db, trial, 40, {"validation_loss": 0.125, "acc": 0.9})
        uuid = make_checkpoint(
            db, trial, 40, validation=validation, files=files, write_to=storage
        ).uuid

    described = cli.ok("checkpoint", "describe", uuid)
    fields = dict(
        line.split(":", 1) for line in described.split("\n\n")[0].splitlines() if ":" in line
    )
    assert fields["UUID"].strip() == uuid
    assert fields["Trial"].strip() == str(trial.id)
    assert fields["Batches"].strip() == "40"
    assert fields["State"].strip() == "COMPLETED"
    assert fields["Searcher metric"].strip() == "0.125"
    assert "acc" + " " * 14 + "0.9\n" in described  # aligned under VALUE
    assert "validation_loss  0.125\n" in described
    assert "code/model_def.py  7" in described
    assert "(total)" in described
    as_json = json.loads(cli.ok("checkpoint", "describe", uuid, "--json"))
    assert as_json["uuid"] == uuid and as_json["metrics"]["validationMetrics"]["acc"] == 0.9

    target = tmp_path / "downloaded"
    out = cli.ok("checkpoint", "download", uuid, "-o", str(target))
    assert out.strip() == str(target)
    assert (target / "state.json").read_bytes() == files["state.json"]
    assert (target / "code" / "model_def.py").read_bytes() == files["code/model_def.py"]
    assert (target / "metadata.json").is_file()  # written by the client when absent
    # Without -o: ./checkpoints/UUID under the working directory.
    monkeypatch.chdir(tmp_path)
    out = cli.ok("checkpoint", "download", uuid)
    assert Path(out.strip()) == Path("checkpoints") / uuid
    assert (tmp_path / "checkpoints" / uuid / "state.json").is_file()

    # A corrupt file is reported by name, and nothing appears at the target.
    (storage / uuid / "state.json").write_bytes(b"garbage")
    code, _, err = cli("checkpoint", "download", uuid, "-o", str(tmp_path / "bad"))
    assert code == 1 and "state.json" in err
    assert not (tmp_path / "bad" / "metadata.json").exists()

    for command in ("describe", "download"):
        code, _, err = cli("checkpoint", command, "no-such-uuid")
        assert code == 1 and "not found" in err.lower() and err.count("\n") == 1
