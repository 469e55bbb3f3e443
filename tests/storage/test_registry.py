"""Storage backends come through the plugin registry, by entry point, without boto3."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import detlite.storage.plugin
from detlite.config.storage import S3StorageConfig, SharedFSStorageConfig
from detlite.errors import FrameworkUnavailable, PluginError
from detlite.plugins import Plugins
from detlite.storage import SharedFSStorage, storage_from_config
from detlite.storage.s3 import S3Storage


def test_builtin_storages_are_registered_through_the_entry_point() -> None:
    plugins = Plugins.discover()
    info = plugins.info("storage")
    assert info is not None and info.distribution == "detlite"
    regs = plugins.registrations("storage")
    assert regs["shared_fs"].target == "detlite.storage.shared_fs:SharedFSStorage"
    assert regs["shared_fs"].requires == ()
    assert regs["s3"].target == "detlite.storage.s3:S3Storage"
    assert regs["s3"].requires == ("boto3",)
    assert regs["s3"].install == "pip install 'detlite[s3]'"
    assert plugins.storage_backend("shared_fs") is SharedFSStorage


def test_storage_from_config_dispatches_on_the_type(tmp_path: Path) -> None:
    plugins = Plugins.empty()
    plugins.add(detlite.storage.plugin, "storage")
    config = SharedFSStorageConfig(type="shared_fs", host_path=str(tmp_path), storage_path="c")
    backend = storage_from_config(config, plugins=plugins)
    assert isinstance(backend, SharedFSStorage)
    assert backend.root == tmp_path / "c"


def test_an_unregistered_type_is_a_plugin_error(tmp_path: Path) -> None:
    config = SharedFSStorageConfig(type="shared_fs", host_path=str(tmp_path))
    with pytest.raises(PluginError, match="no storage named 'shared_fs'; installed: none"):
        storage_from_config(config, plugins=Plugins.empty())


def test_s3_without_boto3_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # A None entry in sys.modules makes the import fail as if boto3 were not installed.
    monkeypatch.setitem(sys.modules, "boto3", None)
    config = S3StorageConfig(type="s3", bucket="b")
    with pytest.raises(FrameworkUnavailable, match=r"pip install 'detlite\[s3\]'"):
        storage_from_config(config, plugins=Plugins.discover())
    with pytest.raises(FrameworkUnavailable, match="boto3 not installed"):
        S3Storage(config)


def test_importing_and_listing_storage_does_not_import_boto3() -> None:
    script = textwrap.dedent(
        """
        import sys
        import detlite.storage
        from detlite.plugins import Plugins
        plugins = Plugins.discover()
        assert set(plugins.registrations("storage")) >= {"shared_fs", "s3"}
        plugins.storage_backend("shared_fs")
        loaded = sorted(m for m in ("boto3", "botocore", "moto") if m in sys.modules)
        print(loaded)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
