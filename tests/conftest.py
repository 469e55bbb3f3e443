"""Shared test settings: plugin discovery must never be strict or disabled by accident."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _plugin_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DETLITE_STRICT_PLUGINS", raising=False)
    monkeypatch.delenv("DETLITE_DISABLE_PLUGINS", raising=False)
