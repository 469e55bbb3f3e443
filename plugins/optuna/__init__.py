"""detlite.optuna: Optuna's samplers as a detlite search method (``searcher.name: optuna``).

The plugin registers the search method ``optuna`` (``detlite.optuna.searcher.OptunaSearch``)
by import path, so listing plugins never imports optuna; without optuna installed it is
listed as unavailable with ``pip install 'detlite[optuna]'``. Its config is
``detlite.optuna.config.OptunaConfig``.
"""

from __future__ import annotations

__all__: list[str] = []
