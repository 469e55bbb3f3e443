"""``detlite completion bash|zsh|fish``: print the shell completion script.

Completion is click's own: the shell calls ``detlite`` with ``_DETLITE_COMPLETE`` set
(``bash_complete``, ``zsh_complete`` or ``fish_complete``) and it answers with the
commands, options and choices that fit. This command prints the script that wires that up,
the same one ``_DETLITE_COMPLETE=bash_source detlite`` prints. To enable it::

    eval "$(detlite completion bash)"                             # ~/.bashrc
    eval "$(detlite completion zsh)"                              # ~/.zshrc
    detlite completion fish > ~/.config/fish/completions/detlite.fish
"""

from __future__ import annotations

import click

__all__ = ["COMPLETE_VAR", "completion_command"]

#: The environment variable through which the shell asks for completions.
COMPLETE_VAR = "_DETLITE_COMPLETE"


@click.command("completion")
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
@click.pass_context
def completion_command(ctx: click.Context, shell: str) -> None:
    """Print the completion script for SHELL (eval it, see detlite completion --help).

    \b
    bash:  eval "$(detlite completion bash)"   in ~/.bashrc
    zsh:   eval "$(detlite completion zsh)"    in ~/.zshrc
    fish:  detlite completion fish > ~/.config/fish/completions/detlite.fish
    """
    from click.shell_completion import get_completion_class

    root = ctx.find_root().command
    completion_class = get_completion_class(shell)
    if completion_class is None:  # click knows all three; guard for a future click
        raise click.BadParameter(f"click has no completion for {shell}", param_hint="SHELL")
    completion = completion_class(root, {}, "detlite", COMPLETE_VAR)
    click.echo(completion.source())
