"""The Ray plugin's registration. Never imports ray: the manager is named by import path."""

from __future__ import annotations

from detlite.hookspecs import Register, hookimpl

__all__ = ["detlite_register_resource_managers"]

INSTALL = "pip install 'detlite[ray]'"


@hookimpl
def detlite_register_resource_managers(register: Register) -> None:
    register(
        "ray",
        "detlite.ray.manager:RayResourceManager",
        requires=("ray",),
        install=INSTALL,
        description="trial workers on an existing Ray cluster: one GPU (or CPU) per slot",
    )
