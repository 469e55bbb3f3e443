"""Shared test settings for every test.

- Plugin discovery is never strict or disabled by accident.
- The user's own data and config directories are never touched: ``XDG_DATA_HOME`` (the
  embedded master's database, checkpoints, ``detlite up``'s pid file) and
  ``XDG_CONFIG_HOME`` (the token cache) point into the test's tmp_path, and no master
  address, user or password leaks in from the environment. Tests that need other values set
  their own.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _plugin_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DETLITE_STRICT_PLUGINS", raising=False)
    monkeypatch.delenv("DETLITE_DISABLE_PLUGINS", raising=False)


@pytest.fixture(autouse=True)
def _private_user_dirs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    names = ("DETLITE_MASTER", "DET_MASTER", "DET_MASTER_ADDR", "DETLITE_USER", "DETLITE_PASSWORD")
    for name in names:
        monkeypatch.delenv(name, raising=False)
