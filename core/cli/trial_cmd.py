"""``detlite trial``: one trial's metrics, checkpoints and logs.

``describe`` shows the trial, its validations (the effective rows the master keeps: the
latest run per batch count) and its checkpoints; ``--json`` prints ``{"trial",
"validations", "checkpoints"}`` as the master sent them. Its placement line names each node
of the latest run by host name, adding the node's id (its first 8 characters) where two
nodes have the same host name, as on a Ray cluster simulated on one machine; ``Created`` is
when the searcher made the trial, ``Launched`` when its workers were first started.
``logs`` prints every line, following the master's capped pages; ``logs -f`` polls until the
trial has ended and every line has been read. The HTTP client is imported inside the commands.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click

from detlite.cli.experiment_cmd import (
    follow_logs,
    format_metrics,
    state_name,
)
from detlite.cli.model_cmd import format_time, master_option
from detlite.cli.table import render_table

if TYPE_CHECKING:
    from detlite.api import Session

__all__ = ["trial_group"]

_TERMINAL = {"COMPLETED", "CANCELED", "ERROR", "DELETED", "DELETE_FAILED"}
_NODE_ID_CHARS = 8


@click.group("trial")
@master_option
@click.pass_context
def trial_group(ctx: click.Context, master: str | None) -> None:
    """Trials: their metrics, checkpoints and logs."""
    ctx.obj = master


def _path(trial_id: int) -> str:
    return f"/api/v1/trials/{trial_id}"


def _state(session: Session, trial_id: int) -> str:
    return state_name(session.get(_path(trial_id))["trial"]["state"])


@trial_group.command("describe")
@click.argument("trial_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print the master's JSON.")
@click.pass_obj
def describe_command(master: str | None, trial_id: int, as_json: bool) -> None:
    """Show trial TRIAL_ID with its validation metrics and checkpoints."""
    from detlite.api import login_session
    from detlite.experimental._trial import iter_metric_rows

    with login_session(master) as session:
        trial = session.get(_path(trial_id))["trial"]
        validations = list(iter_metric_rows(session, trial_id, "validation"))
        checkpoints = session.get(
            f"{_path(trial_id)}/checkpoints",
            params={"sort_by": "BATCH_NUMBER", "order_by": "ASC", "limit": 0},
        )["checkpoints"]
    if as_json:
        click.echo(
            json.dumps(
                {"trial": trial, "validations": validations, "checkpoints": checkpoints},
                indent=2,
                sort_keys=True,
            )
        )
        return
    lines = [
        ("Trial", trial["id"]),
        ("Experiment", trial["experimentId"]),
        ("State", state_name(trial["state"])),
        ("Batches", trial.get("totalBatchesProcessed", 0)),
        ("Restarts", trial.get("restarts", 0)),
        ("Placement", _placement(trial)),
        ("Hyperparameters", json.dumps(trial.get("hparams") or {}, sort_keys=True)),
        ("Created", format_time(trial.get("startTime"))),
        ("Launched", format_time(trial.get("launchTime"))),
        ("Ended", format_time(trial.get("endTime"))),
    ]
    width = max(len(k) for k, _ in lines) + 1
    click.echo("\n".join(f"{(k + ':').ljust(width)}  {v}".rstrip() for k, v in lines))
    click.echo("")
    if validations:
        rows = [
            [v["stepsCompleted"], format_time(v.get("endTime")), format_metrics(v["metrics"])]
            for v in validations
        ]
        click.echo(render_table(["BATCHES", "VALIDATED", "VALIDATION METRICS"], rows))
    else:
        click.echo("No validations yet.")
    click.echo("")
    if checkpoints:
        rows = [
            [
                c["uuid"],
                c.get("batchNumber", ""),
                state_name(c.get("state")),
                format_time(c.get("endTime")),
                "" if c.get("searcherMetric") is None else f"{c['searcherMetric']:.6g}",
            ]
            for c in checkpoints
        ]
        headers = ["CHECKPOINT", "BATCHES", "STATE", "SAVED", "SEARCHER METRIC"]
        click.echo(render_table(headers, rows))
    else:
        click.echo("No checkpoints yet.")


@trial_group.command("logs")
@click.argument("trial_id", type=int)
@click.option("-f", "--follow", is_flag=True, help="Keep printing until the trial ends.")
@click.pass_obj
def logs_command(master: str | None, trial_id: int, follow: bool) -> None:
    """Print the logs of trial TRIAL_ID."""
    from detlite.api import login_session

    with login_session(master) as session:
        session.get(_path(trial_id))  # NotFound before anything else

        def ended() -> bool:
            return _state(session, trial_id) in _TERMINAL

        follow_logs(session, lambda: [trial_id], ended if follow else None, trial_prefix=False)


def _placement(trial: dict[str, Any]) -> str:
    """``node: devices`` per node of the latest run, and its resource manager.

    A node is its host name, and also its id (``nodeId``, as Ray tells it; the first
    ``_NODE_ID_CHARS`` characters) where two nodes share a host name: the nodes of a cluster
    simulated on one machine, or containers that all call themselves ``localhost``."""
    by_node: dict[tuple[str, str], list[str]] = {}
    for rank in trial.get("placement") or []:
        key = (str(rank.get("node", "?")), str(rank.get("nodeId") or ""))
        by_node.setdefault(key, []).extend(rank.get("devices") or [])
    hosts = [host for host, _ in by_node]

    def name(host: str, node_id: str) -> str:
        if node_id and hosts.count(host) > 1:
            return f"{host} [node {node_id[:_NODE_ID_CHARS]}]"
        return host

    where = "; ".join(
        f"{name(host, node_id)}: {', '.join(devices)}"
        for (host, node_id), devices in by_node.items()
    )
    manager = trial.get("resourceManager")
    return f"{where} ({manager})" if where and manager else where or trial.get("node") or ""
