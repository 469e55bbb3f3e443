"""The Optuna plugin's registration. Never imports optuna: the searcher is named by import path."""

from __future__ import annotations

from detlite.hookspecs import Register, hookimpl

__all__ = ["INSTALL", "detlite_register_searchers"]

INSTALL = "pip install 'detlite[optuna]'"


@hookimpl
def detlite_register_searchers(register: Register) -> None:
    register(
        "optuna",
        "detlite.optuna.searcher:OptunaSearch",
        requires=("optuna",),
        install=INSTALL,
        description="Optuna's samplers (TPE, CMA-ES, GP, QMC, NSGA-II), with ASHA or median stops",
    )
