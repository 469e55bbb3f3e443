"""detlite.testing: a fake framework and the contract suite every framework plugin runs.

The pytest side (markers, GPU skipping, fixtures, ``known_gaps``) is the ``pytest11``
plugin ``detlite.testing.pytest_plugin``, which pytest loads by itself once detlite is
installed. A plugin's test module subclasses ``FrameworkContract``::

    from detlite.testing import FrameworkContract

    class TestMyFramework(FrameworkContract):
        framework_name = "myframework"
        ...

This package stays light to import: it never imports pytest or the fake framework until
one of their names is used. ``FakeFrameworkPlugin`` is the fake framework's registration
module in miniature: it registers by import path, so registering it imports nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from detlite.hookspecs import Register, hookimpl

if TYPE_CHECKING:
    from detlite.plugins import Plugins
    from detlite.testing.contract import FrameworkContract, assert_metrics_close
    from detlite.testing.fake import (
        FakeAdapter,
        FakeController,
        FakeJSONFormat,
        FakeTrial,
        FakeTrialContext,
        LinearTrial,
        linear_config,
        linear_hparams,
    )

__all__ = [
    "FakeAdapter",
    "FakeController",
    "FakeFrameworkPlugin",
    "FakeJSONFormat",
    "FakeTrial",
    "FakeTrialContext",
    "FrameworkContract",
    "LinearTrial",
    "assert_metrics_close",
    "linear_config",
    "linear_hparams",
    "make_fake_plugins",
]

_LAZY = {
    "FakeAdapter": "detlite.testing.fake",
    "FakeController": "detlite.testing.fake",
    "FakeJSONFormat": "detlite.testing.fake",
    "FakeTrial": "detlite.testing.fake",
    "FakeTrialContext": "detlite.testing.fake",
    "LinearTrial": "detlite.testing.fake",
    "linear_config": "detlite.testing.fake",
    "linear_hparams": "detlite.testing.fake",
    "FrameworkContract": "detlite.testing.contract",
    "assert_metrics_close": "detlite.testing.contract",
}


class FakeFrameworkPlugin:
    """Registers the fake framework ``fake`` and its checkpoint format ``fake-json``.

    Never registered through an entry point: tests add it to a Plugins of their own
    (the ``fake_plugins`` fixture, or ``make_fake_plugins()``).
    """

    @hookimpl
    def detlite_register_frameworks(self, register: Register) -> None:
        register(
            "fake",
            "detlite.testing.fake:FakeAdapter",
            description="pure-Python fake framework for detlite's own tests",
        )

    @hookimpl
    def detlite_register_checkpoint_formats(self, register: Register) -> None:
        register(
            "fake-json",
            "detlite.testing.fake:FakeJSONFormat",
            description="the fake framework's JSON checkpoint",
        )


def make_fake_plugins() -> Plugins:
    """A new Plugins with only the fake framework registered."""
    from detlite.plugins import Plugins

    plugins = Plugins.empty()
    plugins.add(FakeFrameworkPlugin(), "fake", distribution="detlite")
    return plugins


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'detlite.testing' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module_name), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
