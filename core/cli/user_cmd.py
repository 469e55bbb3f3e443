"""``detlite user``: log in and out, create users, change passwords, list users.

Tokens are cached in ``$XDG_CONFIG_HOME/detlite/auth.json`` (see ``detlite.api``). New
passwords are prompted twice without echo, or read from the first line of stdin with
``--password-stdin`` (for scripts); they never appear on the command line. ``list --json``
and ``whoami --json`` print the master's user objects (``username``, ``admin``, ``active``,
...) as it sent them. The HTTP client (requests) is imported inside the commands, keeping
``detlite --help`` fast.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

import click

from detlite.cli.table import render_table

if TYPE_CHECKING:
    from detlite.api import Session

__all__ = ["user_group"]


def _new_password(from_stdin: bool, username: str) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return str(
        click.prompt(
            f"New password for user '{username}'",
            hide_input=True,
            confirmation_prompt=True,
            default="",
            show_default=False,
        )
    )


_password_stdin = click.option(
    "--password-stdin", is_flag=True, help="Read the new password from the first line of stdin."
)


@click.group("user")
@click.option(
    "-m",
    "--master",
    metavar="URL",
    help="The master [default: $DETLITE_MASTER, $DET_MASTER, $DET_MASTER_ADDR or localhost:8080]",
)
@click.pass_context
def user_group(ctx: click.Context, master: str | None) -> None:
    """Log in and out of a master, and manage its users."""
    ctx.obj = master


@user_group.command("login")
@click.argument("username", required=False)
@click.pass_obj
def login_command(master: str | None, username: str | None) -> None:
    """Log in as USERNAME (default: determined) and make it the active user.

    The password comes from $DETLITE_PASSWORD, else a prompt; the default users
    determined and admin are tried with the empty password first.
    """
    from detlite.api import DEFAULT_USER, log_in

    name = username or DEFAULT_USER
    with log_in(master, name) as session:
        click.echo(f"logged in as {name} on {session.master}")


@user_group.command("logout")
@click.argument("username", required=False)
@click.pass_obj
def logout_command(master: str | None, username: str | None) -> None:
    """Log USERNAME (default: the active user) out and forget its token."""
    from detlite.api import log_out

    name = log_out(master, username)
    click.echo(f"logged out {name}")


_json_option = click.option("--json", "as_json", is_flag=True, help="Print the master's JSON.")


@user_group.command("whoami")
@_json_option
@click.pass_obj
def whoami_command(master: str | None, as_json: bool) -> None:
    """Print the user the cached token belongs to."""
    from detlite.api import login_session

    with login_session(master) as session:
        user = session.get("/api/v1/auth/user")["user"]
        if as_json:
            click.echo(json.dumps(user, indent=2, sort_keys=True))
            return
        click.echo(f"{user['username']}{' (admin)' if user['admin'] else ''} on {session.master}")


@user_group.command("list")
@_json_option
@click.pass_obj
def list_command(master: str | None, as_json: bool) -> None:
    """List the master's users."""
    from detlite.api import login_session

    with login_session(master) as session:
        users = session.get("/api/v1/users")["users"]
    if as_json:
        click.echo(json.dumps(users, indent=2, sort_keys=True))
        return
    rows = [
        [u["username"], "yes" if u["admin"] else "no", "yes" if u["active"] else "no"]
        for u in users
    ]
    click.echo(render_table(["USERNAME", "ADMIN", "ACTIVE"], rows))


@user_group.command("create")
@click.argument("username")
@click.option("--admin", is_flag=True, help="Make the new user an admin.")
@_password_stdin
@click.pass_obj
def create_command(master: str | None, username: str, admin: bool, password_stdin: bool) -> None:
    """Create USERNAME (as an admin) with a password."""
    from detlite.api import login_session

    with login_session(master) as session:
        password = _new_password(password_stdin, username)
        body = {"user": {"username": username, "admin": admin}, "password": password}
        session.post("/api/v1/users", json=body)
    click.echo(f"created user {username}{' (admin)' if admin else ''}")


@user_group.command("change-password")
@click.argument("username", required=False)
@_password_stdin
@click.pass_obj
def change_password_command(master: str | None, username: str | None, password_stdin: bool) -> None:
    """Change the password of USERNAME (default: the active user; others need an admin)."""
    from detlite.api import login_session

    with login_session(master) as session:
        target = username or _session_user(session)
        password = _new_password(password_stdin, target)
        session.post(f"/api/v1/users/{target}/password", json={"password": password})
    click.echo(f"changed the password of {target}")


def _session_user(session: Session) -> str:
    return str(session.get("/api/v1/auth/user")["user"]["username"])
