"""``detlite master``: run a master in the foreground until Ctrl-C.

The server stack (FastAPI, SQLAlchemy, uvicorn) is imported inside the command, so that
``detlite --help`` and every other command stay fast.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import click

__all__ = ["master_command"]


@click.command("master")
@click.option(
    "--db",
    "db_url",
    metavar="URL",
    help="Database URL: sqlite:///path/master.db or postgresql://user@host/db "
    "[default: sqlite under $XDG_DATA_HOME/detlite]",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    default=8080,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port to listen on (0: any free port; the URL printed says which).",
)
@click.option(
    "--storage",
    type=click.Path(file_okay=False, path_type=Path),
    help="Checkpoint storage directory [default: $XDG_DATA_HOME/detlite/checkpoints]",
)
@click.option(
    "--token-ttl-hours",
    type=click.FloatRange(min=0, min_open=True),
    default=24 * 30,
    show_default=True,
    help="How long a login token stays valid.",
)
@click.option(
    "--slots",
    type=click.IntRange(min=1),
    help="Slots for trials [default: one per GPU found, else one per CPU core]",
)
@click.option(
    "--resource-manager",
    default="local",
    show_default=True,
    help="Where trials run: a registered resource manager (see detlite plugins).",
)
@click.option(
    "--log-level",
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
    default="info",
    show_default=True,
)
def master_command(
    db_url: str | None,
    host: str,
    port: int,
    storage: Path | None,
    token_ttl_hours: float,
    slots: int | None,
    resource_manager: str,
    log_level: str,
) -> None:
    """Run a master (REST API, database, checkpoint storage) in the foreground."""
    from detlite.master.db import redact_url
    from detlite.master.server import serve
    from detlite.master.settings import Settings

    options: dict[str, object] = {
        "host": host,
        "port": port,
        "token_ttl": dt.timedelta(hours=token_ttl_hours),
        "slots": slots,
        "resource_manager": resource_manager,
    }
    if db_url:
        options["db_url"] = db_url
    if storage is not None:
        options["storage_path"] = storage.expanduser().resolve()
    settings = Settings.model_validate(options)

    def ready(url: str) -> None:
        click.echo(f"detlite master listening on {url}")
        click.echo(f"  database: {redact_url(settings.db_url)}")
        click.echo(f"  checkpoint storage: {settings.storage_path}")
        click.echo("  press Ctrl-C to stop")

    serve(settings, log_level=log_level, on_ready=ready)
    click.echo("detlite master stopped")
