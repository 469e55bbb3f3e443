"""The ``detlite`` command and the one place where errors become exit codes.

Every error detlite raises on purpose is printed as one line (``error: ...``) with its
exit code; anything else is a bug and says so. ``--debug`` (or ``DETLITE_DEBUG=1``) shows
the traceback instead. Plugins add subcommands through ``detlite_register_commands``.
Shell completion (``detlite completion``) goes through ``main()`` too: click answers the
shell when ``_DETLITE_COMPLETE`` is set, before any command runs.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Sequence

import click

from detlite import __version__
from detlite.cli.checkpoint_cmd import checkpoint_group
from detlite.cli.completion_cmd import completion_command
from detlite.cli.experiment_cmd import experiment_group
from detlite.cli.master_cmd import master_command
from detlite.cli.model_cmd import model_group
from detlite.cli.plugins_cmd import plugins_command
from detlite.cli.preview import preview_search_command
from detlite.cli.tensorboard_cmd import tensorboard_command
from detlite.cli.trial_cmd import trial_group
from detlite.cli.up_cmd import down_command, up_command
from detlite.cli.user_cmd import user_group
from detlite.errors import DetliteError
from detlite.plugins import get_plugins

__all__ = ["build_cli", "cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.version_option(__version__, prog_name="detlite")
def cli(debug: bool) -> None:
    """detlite: train Determined-style trials, search hyperparameters, keep every
    metric and checkpoint. No infrastructure needed."""


cli.add_command(plugins_command)
cli.add_command(preview_search_command)
cli.add_command(master_command)
cli.add_command(user_group)
cli.add_command(model_group)
cli.add_command(checkpoint_group)
cli.add_command(experiment_group)
cli.add_command(trial_group)
cli.add_command(up_command)
cli.add_command(down_command)
cli.add_command(tensorboard_command)
cli.add_command(completion_command)


def build_cli() -> click.Group:
    """The command group with every plugin's commands added."""
    get_plugins().add_commands(cli)
    return cli


def _debug_requested(argv: Sequence[str]) -> bool:
    flag = os.environ.get("DETLITE_DEBUG", "").lower() in {"1", "true", "yes"}
    return flag or "--debug" in argv


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = _debug_requested(args)
    try:
        build_cli().main(args=args, prog_name="detlite", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except DetliteError as exc:
        if debug:
            traceback.print_exc()
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except Exception as exc:
        if debug:
            raise
        click.echo(
            f"internal error: {type(exc).__name__}: {exc} "
            "(this is a bug in detlite; run with --debug for the traceback)",
            err=True,
        )
        sys.exit(70)
    sys.exit(0)
