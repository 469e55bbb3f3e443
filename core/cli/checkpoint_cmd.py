"""``detlite checkpoint``: describe a checkpoint and download it.

``describe`` prints the checkpoint's record (``--json``: the master's object as is), its
validation metrics and its files with their sizes. ``download`` goes through the client's
``Checkpoint.download``, so it verifies every file's sha256 and fetches a shared_fs
checkpoint that is not mounted here through the master (API.md improvements 10 and 11); it
prints the directory. The HTTP client is imported inside the commands.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Mapping
from typing import Any

import click

from detlite.cli.model_cmd import format_time, master_option
from detlite.cli.table import render_table

__all__ = ["checkpoint_group"]


def _path(uuid: str) -> str:
    return "/api/v1/checkpoints/" + urllib.parse.quote(uuid, safe="")


def _state(value: Any) -> str:
    return str(value or "").removeprefix("STATE_")


def _size(value: Any) -> int:
    if isinstance(value, Mapping):
        value = value.get("size")
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _describe(checkpoint: Mapping[str, Any]) -> str:
    metrics = (checkpoint.get("metrics") or {}).get("validationMetrics") or {}
    fields = [
        ("UUID", checkpoint["uuid"]),
        ("Experiment", checkpoint.get("experimentId", "")),
        ("Trial", checkpoint.get("trialId", "")),
        ("Batches", checkpoint.get("batchNumber", "")),
        ("State", _state(checkpoint.get("state"))),
        ("Validation", _state(checkpoint.get("validationState"))),
        ("Searcher metric", checkpoint.get("searcherMetric")),
        ("Framework", checkpoint.get("framework", "")),
        ("Format", checkpoint.get("format", "")),
        ("Started", format_time(checkpoint.get("startTime"))),
        ("Ended", format_time(checkpoint.get("endTime"))),
        ("Metadata", json.dumps(checkpoint.get("metadata") or {}, sort_keys=True)),
    ]
    width = max(len(k) for k, _ in fields) + 1
    lines = [f"{(k + ':').ljust(width)}  {'' if v is None else v}".rstrip() for k, v in fields]
    if metrics:
        lines += ["", render_table(["METRIC", "VALUE"], sorted(metrics.items()))]
    files = checkpoint.get("files") or checkpoint.get("resources") or {}
    if files:
        rows = [[path, _size(entry)] for path, entry in sorted(files.items())]
        total = sum(size for _, size in rows)
        lines += ["", render_table(["FILE", "BYTES"], [*rows, ["(total)", total]])]
    return "\n".join(lines)


@click.group("checkpoint")
@master_option
@click.pass_context
def checkpoint_group(ctx: click.Context, master: str | None) -> None:
    """Checkpoints recorded by the master."""
    ctx.obj = master


@checkpoint_group.command("describe")
@click.argument("uuid")
@click.option("--json", "as_json", is_flag=True, help="Print the master's JSON.")
@click.pass_obj
def describe_command(master: str | None, uuid: str, as_json: bool) -> None:
    """Show the checkpoint UUID: where it comes from, its metrics and its files."""
    from detlite.api import login_session

    with login_session(master) as session:
        checkpoint = session.get(_path(uuid))["checkpoint"]
    if as_json:
        click.echo(json.dumps(checkpoint, indent=2, sort_keys=True))
    else:
        click.echo(_describe(checkpoint))


@checkpoint_group.command("download")
@click.argument("uuid")
@click.option(
    "-o",
    "--output",
    metavar="DIR",
    help="The directory to download into (the checkpoint's own directory) "
    "[default: ./checkpoints/UUID].",
)
@click.pass_obj
def download_command(master: str | None, uuid: str, output: str | None) -> None:
    """Download the checkpoint UUID, verifying every file; prints the directory."""
    from detlite.api import login_session
    from detlite.experimental._checkpoint import Checkpoint

    with login_session(master) as session:
        data = session.get(_path(uuid))["checkpoint"]
        path = Checkpoint.from_json(data, session).download(output)
    click.echo(str(path))
