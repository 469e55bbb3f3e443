"""``detlite master``: run a master in the foreground until Ctrl-C.

Settings come from the options, or from a YAML file (``--config``) of ``Settings`` fields,
for example ``resource_manager: {type: ray, address: 10.0.0.5:6379}``; options given on the
command line win over the file.

With ``--resource-manager ray`` (or a config's ``resource_manager: {type: ray, ...}``) the
master's Ray driver runs in a child process (``driver: process``, unless the config says
``inline``), so that losing the cluster pauses launching instead of ending the master; the
master waits ``--ray-connect-timeout`` seconds (``connect_timeout``, default 30) for the
cluster at start-up and otherwise exits naming the address. It refuses to start when the
address workers would be told (``--master-url``, else ``http://HOST:PORT``) is no address
the Ray nodes can reach (``Settings.worker_address_problem``), and warns when checkpoints
would stay on this machine (``Settings.cluster_storage_warning``).

Storage experiments may use: the master's ``--storage`` directory always; more shared_fs
roots with ``--allow-shared-fs PATH`` and S3 buckets with ``--allow-s3
BUCKET[/PREFIX][@ENDPOINT_URL]`` (both repeatable, added to the file's ``storage_roots`` and
``s3_locations``). An experiment whose ``checkpoint_storage`` lies elsewhere is refused.

The server stack (FastAPI, SQLAlchemy, uvicorn) is imported inside the command, so that
``detlite --help`` and every other command stay fast.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from click.core import ParameterSource

from detlite.cli._storage_options import allowed_storage_options

if TYPE_CHECKING:
    from detlite.master.settings import Settings

__all__ = ["master_command"]


@click.command("master")
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A YAML file of master settings (db_url, storage_path, resource_manager, slots, "
    "master_url, ...); options given here win over it.",
)
@click.option(
    "--db",
    "db_url",
    metavar="URL",
    help="Database URL: sqlite:///path/master.db or postgresql://user@host/db "
    "[default: sqlite under $XDG_DATA_HOME/detlite]",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--master-url",
    metavar="URL",
    help="The address workers (on Ray nodes) reach this master at, e.g. "
    "http://10.0.0.4:8080 [default: http://HOST:PORT]; needed with --host 0.0.0.0 and ray.",
)
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
@allowed_storage_options
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
    "--workers",
    type=click.IntRange(min=1, max=64),
    default=1,
    show_default=True,
    help="API processes. More than one needs PostgreSQL; one of them, elected through the "
    "database, runs the scheduler, and another takes over if it dies.",
)
@click.option(
    "--resource-manager",
    default="local",
    show_default=True,
    help="Where trials run: a registered resource manager (see detlite plugins).",
)
@click.option(
    "--ray-address",
    metavar="ADDRESS",
    help="With --resource-manager ray: the Ray cluster's head (host:port, or "
    "ray://host:10001) [default: RAY_ADDRESS, else a Ray started in the master]",
)
@click.option(
    "--ray-connect-timeout",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="With --resource-manager ray: how long to wait for the cluster at start-up [default: 30]",
)
@click.option(
    "--log-level",
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
    default="info",
    show_default=True,
)
@click.pass_context
def master_command(
    ctx: click.Context,
    config_file: Path | None,
    db_url: str | None,
    host: str,
    master_url: str | None,
    port: int,
    storage: Path | None,
    allow_shared_fs: tuple[Path, ...],
    allow_s3: tuple[str, ...],
    token_ttl_hours: float,
    slots: int | None,
    workers: int,
    resource_manager: str,
    ray_address: str | None,
    ray_connect_timeout: float | None,
    log_level: str,
) -> None:
    """Run a master (REST API, database, checkpoint storage) in the foreground."""
    from pydantic import ValidationError

    from detlite.master.db import redact_url
    from detlite.master.server import serve
    from detlite.master.settings import Settings

    options = _read_config(config_file) if config_file is not None else {}
    given = {
        name for name in ctx.params if ctx.get_parameter_source(name) != ParameterSource.DEFAULT
    }
    flags: dict[str, tuple[str, object]] = {
        "host": ("host", host),
        "port": ("port", port),
        "token_ttl": ("token_ttl_hours", dt.timedelta(hours=token_ttl_hours)),
        "slots": ("slots", slots),
        "workers": ("workers", workers),
        "resource_manager": ("resource_manager", resource_manager),
    }
    for key, (param, value) in flags.items():
        if param in given or key not in options:
            options[key] = value
    if db_url:
        options["db_url"] = db_url
    if master_url is not None:
        options["master_url"] = master_url
    if storage is not None:
        options["storage_path"] = storage.expanduser().resolve()
    if allow_shared_fs:
        roots = list(options.get("storage_roots") or [])
        options["storage_roots"] = [*roots, *(p.expanduser().resolve() for p in allow_shared_fs)]
    if allow_s3:
        from detlite.storage.locations import parse_s3_flag

        listed = list(options.get("s3_locations") or [])
        try:
            options["s3_locations"] = [*listed, *(parse_s3_flag(v) for v in allow_s3)]
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--allow-s3") from None
    ray_flags = {"address": ray_address, "connect_timeout": ray_connect_timeout}
    for key, value in ray_flags.items():
        if value is None:
            continue
        chosen = options["resource_manager"]
        name = chosen.get("type") if isinstance(chosen, dict) else chosen
        if name != "ray":
            flag = "--ray-" + key.replace("_", "-")
            raise click.UsageError(f"{flag} needs --resource-manager ray (not {name})")
        extra = dict(options.get("resource_manager_options") or {})
        options["resource_manager_options"] = {**extra, key: value}
    try:
        settings = Settings.model_validate(options)
    except ValidationError as exc:
        source = f" (with {config_file})" if config_file is not None else ""
        raise click.UsageError(f"invalid master settings{source}: {exc}") from None
    if settings.resource_manager == "ray":
        settings = _on_a_cluster(settings)

    def ready(url: str) -> None:
        click.echo(f"detlite master listening on {url}")
        click.echo(f"  database: {redact_url(settings.db_url)}")
        click.echo(f"  checkpoint storage: {settings.storage_path}")
        click.echo(f"  storage experiments may use: {settings.storage_locations.describe()}")
        click.echo("  press Ctrl-C to stop")

    serve(settings, log_level=log_level, on_ready=ready)
    click.echo("detlite master stopped")


def _on_a_cluster(settings: Settings) -> Settings:
    """A ray master's settings, checked: its driver in a child process unless the config
    says otherwise, workers told an address they can reach, a warning about storage."""
    problem = settings.worker_address_problem()
    if problem is not None:
        raise click.UsageError(problem)
    warning = settings.cluster_storage_warning()
    if warning is not None:
        click.echo(f"warning: {warning}", err=True)
    options = {"driver": "process", **settings.resource_manager_options}
    return settings.model_copy(update={"resource_manager_options": options})


def _read_config(path: Path) -> dict[str, Any]:
    from detlite.config import _yaml  # the one YAML reader: 1e-4 is a number, as in YAML 1.2
    from detlite.errors import InvalidExperimentConfig

    try:
        data = _yaml.load(path.read_text(), source=str(path))
    except OSError as exc:
        raise click.UsageError(f"cannot read the master config {path}: {exc}") from None
    except InvalidExperimentConfig as exc:
        raise click.UsageError(f"cannot read the master config {path}: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise click.UsageError(
            f"the master config {path} must be a mapping of settings (db_url: ..., "
            f"resource_manager: ...), not a {type(data).__name__}"
        )
    return {str(key): value for key, value in data.items()}
