"""detlite's pytest plugin: pytest loads it by itself (entry point ``pytest11``: ``detlite``).

- Registers the markers ``gpu`` and ``slow``; a ``gpu`` test is skipped, with the reason,
  where no CUDA device is visible.
- Turns the ``known_gaps`` of ``FrameworkContract`` subclasses into strict expected
  failures at collection, wherever the subclass is defined (so ``-m xfail`` lists them).
- Fixtures: ``fresh_plugins``, ``fake_plugins``, ``fake_config``, ``fake_hparams`` and
  ``fake_trial``.

GPU detection never imports torch itself: that costs seconds, and it would put torch into
``sys.modules`` of every test session, including the core's sessions that assert no
framework was imported. If torch is already imported it is asked; otherwise a
``CUDA_VISIBLE_DEVICES`` that hides every device means none, and else ``nvidia-smi -L``
must list a GPU.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

# Before anything imports the suite, so that its asserts explain themselves in reports.
pytest.register_assert_rewrite("detlite.testing.contract")

if TYPE_CHECKING:
    from detlite.harness import BuiltTrial
    from detlite.plugins import Plugins

__all__ = ["cuda_visible"]

NO_GPU_REASON = "needs a CUDA device; none is visible (nvidia-smi, CUDA_VISIBLE_DEVICES)"


def cuda_visible() -> bool:
    """Whether this process can see a CUDA device (see the module docstring for how)."""
    torch = sys.modules.get("torch")
    if torch is not None:
        return bool(torch.cuda.is_available())
    return _nvidia_smi_sees_gpu(os.environ.get("CUDA_VISIBLE_DEVICES"))


@functools.lru_cache(maxsize=8)
def _nvidia_smi_sees_gpu(visible_devices: str | None) -> bool:
    if visible_devices is not None:
        # CUDA stops at the first invalid entry, so an empty or negative first one hides all.
        first = visible_devices.split(",")[0].strip()
        if not first or first.startswith("-"):
            return False
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return False
    try:
        listed = subprocess.run(
            [exe, "-L"], capture_output=True, text=True, timeout=20, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return listed.returncode == 0 and any(
        line.startswith("GPU ") for line in listed.stdout.splitlines()
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "gpu: needs a CUDA device; skipped where none is visible")
    config.addinivalue_line("markers", "slow: long-running variants (deselect with -m 'not slow')")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Only a module that imported the suite can hold subclasses of it.
    contract = sys.modules.get("detlite.testing.contract")
    if contract is None:
        return
    for item in items:
        marker = contract.gap_marker(item)
        if marker is not None:
            item.add_marker(marker)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("gpu") is not None and not cuda_visible():
        pytest.skip(NO_GPU_REASON)


@pytest.fixture
def fresh_plugins() -> Plugins:
    """A new Plugins from the ``detlite`` entry points, as a fresh process would see them."""
    from detlite.plugins import Plugins

    return Plugins.discover()


@pytest.fixture
def fake_plugins() -> Plugins:
    """A new Plugins holding only the fake framework and its ``fake-json`` format."""
    from detlite.testing import make_fake_plugins

    return make_fake_plugins()


@pytest.fixture
def fake_config() -> dict[str, Any]:
    """An experiment config for ``LinearTrial`` (a copy the test may change)."""
    from detlite.testing.fake import linear_config

    return linear_config()


@pytest.fixture
def fake_hparams() -> dict[str, Any]:
    """Concrete hyperparameters for ``LinearTrial``."""
    from detlite.testing.fake import linear_hparams

    return linear_hparams()


@pytest.fixture
def fake_trial(
    fake_plugins: Plugins, fake_config: dict[str, Any], fake_hparams: dict[str, Any]
) -> Iterator[BuiltTrial]:
    """A ``LinearTrial`` built by ``build_trial`` with seed 0, ready to train."""
    from detlite.harness import build_trial
    from detlite.testing.fake import LinearTrial

    built = build_trial(LinearTrial, fake_config, fake_hparams, plugins=fake_plugins)
    yield built
    built.controller.close()
