"""With torch installed, the pytorch plugin is available and says which version it found."""

from __future__ import annotations

import importlib.metadata
import importlib.util

from detlite.cli.plugins_cmd import plugin_report
from detlite.plugins import Plugins


def test_pytorch_plugin_is_available() -> None:
    assert importlib.util.find_spec("torch") is not None, "the pytorch tox env installs torch"
    reg = Plugins.discover().registrations("framework")["pytorch"]
    assert reg.is_available()
    assert reg.missing() == []


def test_pytorch_version_is_reported() -> None:
    report = plugin_report(Plugins.discover())
    (row,) = [r for r in report["plugins"] if r["plugin"] == "pytorch"]
    (item,) = [i for i in row["registers"] if i["kind"] == "framework"]
    assert item["available"] is True
    version = item["requires"]["torch"]
    dists = importlib.metadata.packages_distributions()["torch"]
    assert version in {importlib.metadata.version(d) for d in dists}
