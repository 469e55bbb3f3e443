"""``--json`` on every listing and describe command, and the tables the others print.

Scripts rely on ``--json``: stdout must be one JSON document and nothing else, with the
keys the command's help documents. A walk over the whole command tree makes sure no
listing or describe command (a plugin's included) lacks the option.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest

from detlite.cli.main import build_cli
from detlite.cli.table import render_table
from tests.master.conftest import LiveMaster
from tests.master.factories import make_checkpoint, make_experiment, make_trial, make_validation
from tests.master.test_cli_models import CLI


def commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            found += commands(command, (*prefix, name))
        else:
            found.append((*prefix, name))
    return found


def test_every_listing_and_describe_command_has_json() -> None:
    root = build_cli()
    lacking = []
    for path in commands(root):
        if path[-1] not in {"list", "describe", "whoami", "plugins", "preview-search"}:
            continue
        command: click.Command = root
        for name in path:
            assert isinstance(command, click.Group)
            command = command.commands[name]
        if "--json" not in {opt for p in command.params for opt in getattr(p, "opts", [])}:
            lacking.append(" ".join(path))
    assert lacking == []


def test_json_is_all_that_is_printed(
    master: LiveMaster, cli: CLI, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DETLITE_MASTER", master.url)
    with master.db() as db:
        exp = make_experiment(db, storage_path=tmp_path)
        trial = make_trial(db, exp)
        best = make_validation(db, trial, 10, {"validation_loss": 0.5})
        uuid = make_checkpoint(db, trial, 10, validation=best).uuid
        exp_id, trial_id = exp.id, trial.id
    cli.ok("model", "create", "m1", "-d", "two\nlines")

    def as_json(*args: str) -> object:
        return json.loads(cli.ok(*args, "--json"))  # raises unless stdout is only JSON

    assert [e["id"] for e in as_json("experiment", "list")] == [exp_id]  # type: ignore[union-attr]
    described = as_json("experiment", "describe", str(exp_id))
    assert isinstance(described, dict)
    assert {"experiment", "config", "trials"} <= set(described)
    trial_json = as_json("trial", "describe", str(trial_id))
    assert isinstance(trial_json, dict)
    assert set(trial_json) == {"trial", "validations", "checkpoints"}
    checkpoint = as_json("checkpoint", "describe", uuid)
    assert isinstance(checkpoint, dict) and checkpoint["uuid"] == uuid
    models = as_json("model", "list")
    assert isinstance(models, list) and [m["name"] for m in models] == ["m1"]
    model = as_json("model", "describe", "m1")
    assert isinstance(model, dict) and set(model) == {"model", "modelVersions"}
    users = as_json("user", "list")
    assert isinstance(users, list)
    assert {"admin", "determined"} <= {u["username"] for u in users}
    assert all({"username", "admin", "active"} <= set(u) for u in users)
    me = as_json("user", "whoami")
    assert isinstance(me, dict) and me["username"] == "determined"

    # Without --json: aligned tables, a newline in a cell does not break its row.
    table = cli.ok("model", "list").splitlines()
    assert len(table) == 2 and "two lines" in table[1]
    assert table[1].index("two lines") == table[0].index("DESCRIPTION")
    users_table = cli.ok("user", "list").splitlines()
    assert users_table[0].split() == ["USERNAME", "ADMIN", "ACTIVE"]


def test_render_table() -> None:
    table = render_table(["ID", "NAME", "NOTE"], [[1, "a", None], [22, "b\tc", "x\ny"]])
    assert table.splitlines() == ["ID  NAME  NOTE", "1   a", "22  b c   x y"]
    with pytest.raises(ValueError, match="row 1 has 2 cells for 3 columns"):
        render_table(["A", "B", "C"], [[1, 2]])
