"""Registers the ``halton`` search method with detlite."""

from __future__ import annotations

from detlite import hookimpl
from detlite.hookspecs import Register


@hookimpl
def detlite_register_searchers(register: Register) -> None:
    register(
        "halton",
        "detlite_halton.search:HaltonSearch",
        description="quasi-random search on a Halton sequence",
    )
