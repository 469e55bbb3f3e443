"""With tensorflow installed, the tensorflow plugin is available and says which version it found."""

from __future__ import annotations

import importlib.metadata
import importlib.util

from detlite.cli.plugins_cmd import plugin_report
from detlite.plugins import Plugins


def test_tensorflow_plugin_is_available() -> None:
    assert importlib.util.find_spec("tensorflow") is not None, "the tox env installs it"
    reg = Plugins.discover().registrations("framework")["tensorflow"]
    assert reg.is_available()
    assert reg.missing() == []


def test_tensorflow_version_is_reported() -> None:
    report = plugin_report(Plugins.discover())
    (row,) = [r for r in report["plugins"] if r["plugin"] == "tensorflow"]
    (item,) = [i for i in row["registers"] if i["kind"] == "framework"]
    assert item["available"] is True
    version = item["requires"]["tensorflow"]
    dists = importlib.metadata.packages_distributions()["tensorflow"]
    assert version in {importlib.metadata.version(d) for d in dists}
