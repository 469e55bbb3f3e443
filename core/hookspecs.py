"""Every hook a detlite plugin can implement: the plugin contract in one module.

Plugins are found through the entry-point group ``detlite``; the built-in plugins
(pytorch, tensorflow, keras, the search methods) register through that same path.

Registration hooks receive a ``register`` callable and call it once per thing they
provide::

    register(name, target, *, requires=(), install=None, description="")

``target`` is the object itself or an import path ``"package.module:Attribute"``, which is
imported only when the thing is first used. ``requires`` names the top-level modules it
needs (``("torch",)``); a registration whose modules are missing is listed as unavailable
with ``install`` as the command that fixes it. A framework plugin must register by import
path so that listing plugins never imports the framework.

Registration hooks are called once per plugin, each in its own ``try``: one plugin that
raises is reported by name and the others still register. A name registered twice for the
same kind keeps the first registration and reports the second as a conflict.

Event hooks are named in the past tense, return None, and every implementation is called.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from pluggy import HookimplMarker, HookspecMarker

if TYPE_CHECKING:
    import click

__all__ = ["Register", "hookimpl", "hookspec"]

hookspec = HookspecMarker("detlite")
hookimpl = HookimplMarker("detlite")


class Register(Protocol):
    """The callable that registration hooks receive."""

    def __call__(
        self,
        name: str,
        target: object,
        *,
        requires: tuple[str, ...] = (),
        install: str | None = None,
        description: str = "",
    ) -> None: ...


@hookspec
def detlite_register_frameworks(register: Register) -> None:
    """Register ``FrameworkAdapter`` classes: the training loop and device placement for
    the Trial classes a framework owns. Called when the first framework is looked up."""


@hookspec
def detlite_register_checkpoint_formats(register: Register) -> None:
    """Register ``CheckpointFormat`` classes, named by the ``format`` string they write to
    ``metadata.json``. Loading dispatches on that string and never guesses."""


@hookspec
def detlite_register_storage(register: Register) -> None:
    """Register ``StorageBackend`` classes, named by ``checkpoint_storage.type``."""


@hookspec
def detlite_register_resource_managers(register: Register) -> None:
    """Register ``ResourceManager`` classes, named by the master's
    ``resource_manager.type`` (``local``, ``ray``)."""


@hookspec
def detlite_register_searchers(register: Register) -> None:
    """Register ``SearchMethod`` classes, named by ``searcher.name``. A class needs a
    ``config_model`` (a pydantic model of its config section) and ``__init__(config)``."""


@hookspec
def detlite_register_commands(cli: click.Group) -> None:
    """Add subcommands to the ``detlite`` command line. Called when the CLI starts; keep
    framework imports inside the commands' bodies."""


@hookspec
def detlite_trial_started(
    experiment_id: int | None, trial_id: int | None, hparams: Mapping[str, Any]
) -> None:
    """A trial's worker is about to train (once per start, restarts included)."""


@hookspec
def detlite_checkpoint_saved(path: str, metadata: Mapping[str, Any]) -> None:
    """A checkpoint directory is complete on local disk, ``metadata.json`` included."""


@hookspec
def detlite_trial_finished(experiment_id: int | None, trial_id: int | None, state: str) -> None:
    """A trial's worker stopped; ``state`` is COMPLETED, CANCELED or ERROR."""


# The registration hooks, by the kind of object each registers (used by the facade).
REGISTRATION_HOOKS: Mapping[str, Callable[..., None]] = {
    "framework": detlite_register_frameworks,
    "checkpoint_format": detlite_register_checkpoint_formats,
    "storage": detlite_register_storage,
    "resource_manager": detlite_register_resource_managers,
    "searcher": detlite_register_searchers,
}
