"""With keras installed, the keras plugin is available and says which version it found."""

from __future__ import annotations

import importlib.metadata
import importlib.util

from detlite.cli.plugins_cmd import plugin_report
from detlite.plugins import Plugins


def test_keras_plugin_is_available() -> None:
    assert importlib.util.find_spec("keras") is not None, "the keras tox env installs keras"
    reg = Plugins.discover().registrations("framework")["keras"]
    assert reg.is_available()
    assert reg.missing() == []


def test_keras_version_is_reported() -> None:
    report = plugin_report(Plugins.discover())
    (row,) = [r for r in report["plugins"] if r["plugin"] == "keras"]
    (item,) = [i for i in row["registers"] if i["kind"] == "framework"]
    assert item["available"] is True
    version = item["requires"]["keras"]
    dists = importlib.metadata.packages_distributions()["keras"]
    assert version in {importlib.metadata.version(d) for d in dists}
