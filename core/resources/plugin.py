"""Registers the built-in resource managers through the plugin path third parties use.

The target is an import path, so listing plugins does not import the manager's module.
"""

from __future__ import annotations

from detlite.hookspecs import Register, hookimpl

__all__ = ["detlite_register_resource_managers"]


@hookimpl
def detlite_register_resource_managers(register: Register) -> None:
    register(
        "local",
        "detlite.resources.local:LocalResourceManager",
        description="worker process groups on this host: one slot per GPU, else CPU slots",
    )
