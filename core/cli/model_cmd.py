"""``detlite model``: list, create, describe, register versions of and delete registry models.

The commands speak the REST API (``/api/v1/models...``) directly through ``detlite.api``,
so ``--json`` prints exactly the master's objects, and tables show the fields a person
scans for. Names are quoted into the path, so any name the master accepts works. Deleting a
model asks for confirmation unless ``--yes`` is given; the checkpoints of its versions stay.
The HTTP client is imported inside the commands, keeping ``detlite --help`` fast.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Mapping
from typing import Any

import click

from detlite.cli.table import render_table

__all__ = ["format_time", "master_option", "model_group"]

master_option = click.option(
    "-m",
    "--master",
    metavar="URL",
    help="The master [default: $DETLITE_MASTER, $DET_MASTER, $DET_MASTER_ADDR or localhost:8080]",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print the master's JSON.")

# The registry's sort enum (ModelSortBy) by the names the command accepts.
SORT_KEYS = {"name": 1, "description": 2, "creation-time": 4, "last-updated-time": 5}


def format_time(value: Any) -> str:
    """An RFC3339 timestamp as ``YYYY-MM-DD HH:MM:SS`` (UTC as sent); "" for none."""
    if not value:
        return ""
    text = str(value)
    return text[:19].replace("T", " ")


def _path(name: str) -> str:
    return "/api/v1/models/" + urllib.parse.quote(name, safe="")


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True))


def _metadata(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--metadata") from exc
    if not isinstance(value, dict):
        raise click.BadParameter("must be a JSON object", param_hint="--metadata")
    return value


@click.group("model")
@master_option
@click.pass_context
def model_group(ctx: click.Context, master: str | None) -> None:
    """The model registry: named models and their versions (registered checkpoints)."""
    ctx.obj = master


@model_group.command("list")
@click.option(
    "--sort-by",
    type=click.Choice(sorted(SORT_KEYS)),
    default="name",
    show_default=True,
)
@click.option("--order", type=click.Choice(["asc", "desc"]), default="asc", show_default=True)
@click.option("--name", default="", help="Only models whose name contains this (any case).")
@click.option("--description", default="", help="Only models whose description contains this.")
@json_option
@click.pass_obj
def list_command(
    master: str | None, sort_by: str, order: str, name: str, description: str, as_json: bool
) -> None:
    """List the registry's models."""
    from detlite.api import login_session

    params = {
        "sort_by": SORT_KEYS[sort_by],
        "order_by": 1 if order == "asc" else 2,
        "name": name,
        "description": description,
        "limit": 0,
    }
    with login_session(master) as session:
        models = session.get("/api/v1/models", params=params)["models"]
    if as_json:
        _echo_json(models)
        return
    rows = [
        [
            m["name"],
            m.get("numVersions", ""),
            m.get("username") or "",
            format_time(m.get("creationTime")),
            format_time(m.get("lastUpdatedTime")),
            m.get("description", ""),
        ]
        for m in models
    ]
    headers = ["NAME", "VERSIONS", "OWNER", "CREATED", "UPDATED", "DESCRIPTION"]
    click.echo(render_table(headers, rows))


@model_group.command("create")
@click.argument("name")
@click.option("-d", "--description", default="", help="What the model is.")
@click.option("--metadata", metavar="JSON", help="A JSON object of metadata.")
@json_option
@click.pass_obj
def create_command(
    master: str | None, name: str, description: str, metadata: str | None, as_json: bool
) -> None:
    """Create the model NAME (owned by you)."""
    from detlite.api import login_session

    body = {"description": description, "metadata": _metadata(metadata)}
    with login_session(master) as session:
        model = session.post(_path(name), json=body)["model"]
    if as_json:
        _echo_json(model)
    else:
        click.echo(f"created model {model['name']}")


def _describe_model(model: Mapping[str, Any]) -> str:
    lines = [
        ("Name", model["name"]),
        ("Description", model.get("description", "")),
        ("Owner", model.get("username") or ""),
        ("Created", format_time(model.get("creationTime"))),
        ("Updated", format_time(model.get("lastUpdatedTime"))),
        ("Labels", ", ".join(model.get("labels") or [])),
        ("Metadata", json.dumps(model.get("metadata") or {}, sort_keys=True)),
    ]
    width = max(len(k) for k, _ in lines) + 1
    return "\n".join(f"{(k + ':').ljust(width)}  {v}".rstrip() for k, v in lines)


def _version_row(version: Mapping[str, Any]) -> list[Any]:
    checkpoint = version.get("checkpoint") or {}
    metrics = (checkpoint.get("metrics") or {}).get("validationMetrics") or {}
    shown = ", ".join(
        f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()
    )
    return [
        version["version"],
        checkpoint.get("uuid", ""),
        checkpoint.get("trialId", ""),
        checkpoint.get("batchNumber", ""),
        format_time(version.get("creationTime")),
        shown,
    ]


@model_group.command("describe")
@click.argument("name")
@json_option
@click.pass_obj
def describe_command(master: str | None, name: str, as_json: bool) -> None:
    """Show the model NAME and its versions."""
    from detlite.api import login_session

    with login_session(master) as session:
        answer = session.get(_path(name) + "/versions", params={"limit": 0})
    if as_json:
        _echo_json({"model": answer["model"], "modelVersions": answer["modelVersions"]})
        return
    click.echo(_describe_model(answer["model"]))
    versions = answer["modelVersions"]
    click.echo("")
    if not versions:
        click.echo("No versions: detlite model register-version NAME CHECKPOINT_UUID")
        return
    headers = ["VERSION", "CHECKPOINT", "TRIAL", "BATCHES", "REGISTERED", "METRICS"]
    click.echo(render_table(headers, [_version_row(v) for v in versions]))


@model_group.command("register-version")
@click.argument("name")
@click.argument("checkpoint_uuid")
@json_option
@click.pass_obj
def register_version_command(
    master: str | None, name: str, checkpoint_uuid: str, as_json: bool
) -> None:
    """Register the COMPLETED checkpoint CHECKPOINT_UUID as the next version of NAME."""
    from detlite.api import login_session

    with login_session(master) as session:
        body = {"checkpointUuid": checkpoint_uuid}
        version = session.post(_path(name) + "/versions", json=body)["modelVersion"]
    if as_json:
        _echo_json(version)
    else:
        click.echo(
            f"registered checkpoint {checkpoint_uuid} as version {version['version']} "
            f"of model {name}"
        )


@model_group.command("delete")
@click.argument("name")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def delete_command(master: str | None, name: str, yes: bool) -> None:
    """Delete the model NAME and its versions (the checkpoints stay)."""
    from detlite.api import login_session

    if not yes:
        click.confirm(f"Delete model {name} and all its versions?", abort=True)
    with login_session(master) as session:
        session.delete(_path(name))
    click.echo(f"deleted model {name}")
