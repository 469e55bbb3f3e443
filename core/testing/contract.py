"""The framework contract suite: the tests every framework plugin runs against itself.

A plugin's test module subclasses ``FrameworkContract`` in a class whose name starts with
``Test``, sets the class attributes and overrides ``trial_class``, ``experiment_config``
and ``hparams`` (and ``plugins`` where the framework is not installed through the entry
points). Everything is built through ``detlite.harness.build_trial``, so the suite checks
the same path that local test mode and the trial worker take.

A test the plugin cannot pass yet is declared in ``known_gaps`` with its reason. It then
runs as ``xfail(strict=True)``: it is reported, and the day it passes the run fails until
the declaration is removed. Declaring a name that is not a test of the suite is an error.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest

from detlite.checkpoint import load_from_path, read_metadata, save_checkpoint
from detlite.harness import BuiltTrial, build_trial, seed_everything
from detlite.interfaces import FrameworkAdapter, TrialController
from detlite.plugins import Plugins
from detlite.trial import Trial, TrialContext

__all__ = ["FrameworkContract", "assert_metrics_close", "gap_marker", "metrics_close"]


def metrics_close(
    actual: Mapping[str, Any], expected: Mapping[str, Any], tolerance: float = 0.0
) -> bool:
    """Same metric names, and numbers within ``tolerance`` (relative or absolute; 0: equal)."""
    if set(actual) != set(expected):
        return False
    for name, want in expected.items():
        got = actual[name]
        numbers = (int, float)
        if isinstance(got, numbers) and isinstance(want, numbers) and tolerance > 0:
            if not math.isclose(got, want, rel_tol=tolerance, abs_tol=tolerance):
                return False
        elif got != want:
            return False
    return True


def assert_metrics_close(
    actual: Mapping[str, Any], expected: Mapping[str, Any], tolerance: float = 0.0, what: str = ""
) -> None:
    if not metrics_close(actual, expected, tolerance):
        label = f"{what}: " if what else ""
        raise AssertionError(
            f"{label}metrics differ beyond tolerance {tolerance}:\n"
            f"  got      {dict(actual)}\n  expected {dict(expected)}"
        )


def _check_metrics(metrics: Mapping[str, Any], what: str) -> None:
    """Metrics go to the master as JSON: plain names, plain finite numbers."""
    assert metrics, f"{what} returned no metrics"
    try:
        json.dumps(metrics, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise AssertionError(
            f"{what} metrics must be JSON numbers, not {metrics!r}: {exc}"
        ) from exc


def gap_marker(item: object) -> pytest.MarkDecorator | None:
    """The strict xfail that a collected test's class declares in ``known_gaps``, if any."""
    cls = getattr(item, "cls", None)
    if not (isinstance(cls, type) and issubclass(cls, FrameworkContract)):
        return None
    name = str(getattr(item, "originalname", None) or getattr(item, "name", ""))
    reason = cls.known_gaps.get(name)
    if reason is None:
        return None
    return pytest.mark.xfail(strict=True, reason=_gap_reason(cls, reason))


def _gap_reason(cls: type[FrameworkContract], reason: str) -> str:
    return f"known gap of {getattr(cls, 'framework_name', cls.__name__)}: {reason}"


# Run in a new interpreter: what the plugin module imports, and what registering it imports.
_IMPORT_PROBE = r"""
import importlib, json, sys

sys.path[:] = json.loads(sys.argv.pop(1))
from detlite.plugins import Plugins

module_name, _, attr = sys.argv[1].partition(":")
obj = importlib.import_module(module_name)
for part in filter(None, attr.split(".")):
    obj = getattr(obj, part)
plugins = Plugins.empty()
plugins.add(obj() if isinstance(obj, type) else obj, "under-test")
frameworks = {n: r.is_available() for n, r in plugins.registrations("framework").items()}
print(json.dumps({
    "frameworks": frameworks,
    "failures": [f.error for f in plugins.failures],
    "imported": [m for m in sys.argv[2:] if m in sys.modules],
}))
"""


class FrameworkContract:
    """Subclass in a ``Test...`` class; set the attributes, override the methods."""

    #: The name the framework is registered under (``detlite_register_frameworks``).
    framework_name: ClassVar[str]
    #: ``"package.module"`` or ``"package.module:PluginClass"``: the registration module.
    plugin_module: ClassVar[str]
    #: Top-level modules that importing and registering the plugin must not import.
    framework_modules: ClassVar[tuple[str, ...]] = ()
    #: Relative or absolute tolerance for metric comparisons; 0 means exactly equal.
    tolerance: ClassVar[float] = 0.0
    #: Test name -> why the plugin cannot pass it yet (becomes a strict xfail).
    known_gaps: ClassVar[dict[str, str]] = {}
    #: Whether the adapter places trials on CUDA when a GPU is visible.
    gpu_capable: ClassVar[bool] = True
    #: (N, M) batches for resume equivalence: choose them so that the checkpoint falls
    #: mid-epoch and the M batches after it cross the end of the training data.
    resume_batches: ClassVar[tuple[int, int]] = (3, 4)
    #: The seed of every build, except where a test compares seeds.
    trial_seed: ClassVar[int] = 7

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        tests = sorted(name for name in dir(FrameworkContract) if name.startswith("test_"))
        for name, reason in cls.known_gaps.items():
            if name not in tests:
                raise TypeError(
                    f"{cls.__qualname__}.known_gaps names {name!r}, which is not a test of "
                    f"the framework contract; the tests are: {', '.join(tests)}"
                )
            if not isinstance(reason, str) or not reason.strip():
                raise TypeError(f"{cls.__qualname__}.known_gaps[{name!r}] needs a reason")

    # -- what a plugin's test class overrides ------------------------------------------------

    def plugins(self) -> Plugins:
        """A Plugins in which the framework is registered; called anew for each build."""
        return Plugins.discover()

    def trial_class(self) -> type[Trial]:
        raise NotImplementedError(f"{type(self).__name__} must override trial_class()")

    def experiment_config(self) -> dict[str, Any]:
        raise NotImplementedError(f"{type(self).__name__} must override experiment_config()")

    def hparams(self) -> dict[str, Any]:
        raise NotImplementedError(f"{type(self).__name__} must override hparams()")

    def check_loaded(self, loaded: Any, built: BuiltTrial) -> None:
        """Check what ``load_from_path`` returned for a checkpoint of ``built``."""
        assert loaded is not None, "load_from_path returned None"

    # -- helpers -------------------------------------------------------------------------

    @pytest.fixture(autouse=True)
    def _contract_setup(self, request: pytest.FixtureRequest) -> Iterator[None]:
        # Without the pytest plugin (autoload disabled) the gap marker is added here, late.
        marker = gap_marker(request.node)
        if marker is not None and marker.mark not in list(request.node.iter_markers("xfail")):
            request.node.add_marker(marker)
        self._built: list[BuiltTrial] = []
        yield
        for built in self._built:
            built.controller.close()

    def build(self, *, seed: int | None = None, plugins: Plugins | None = None) -> BuiltTrial:
        """A fresh trial from ``build_trial``, closed after the test."""
        built = build_trial(
            self.trial_class(),
            self.experiment_config(),
            self.hparams(),
            plugins=plugins or self.plugins(),
            trial_seed=self.trial_seed if seed is None else seed,
        )
        self._built.append(built)
        return built

    # -- the contract ----------------------------------------------------------------------

    def test_discoverable(self) -> None:
        plugins = self.plugins()
        frameworks = plugins.registrations("framework")
        assert self.framework_name in frameworks, (
            f"no framework {self.framework_name!r} registered; registered: {sorted(frameworks)};"
            f" plugin failures: {plugins.failures}"
        )
        registration = frameworks[self.framework_name]
        assert registration.is_available(), f"not available: {registration.missing()} missing"
        own_failures = [f for f in plugins.failures if f.name == registration.plugin]
        assert not own_failures, f"the plugin reported failures: {own_failures}"
        assert isinstance(plugins.framework(self.framework_name), FrameworkAdapter)

    def test_plugin_import_has_no_side_effects(self) -> None:
        assert self.framework_modules, "declare framework_modules: what the plugin must not import"
        # The child gets this process's sys.path, so test-only plugin modules import too.
        argv = [json.dumps(sys.path), self.plugin_module, *self.framework_modules]
        probe = subprocess.run(
            [sys.executable, "-c", _IMPORT_PROBE, *argv],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert probe.returncode == 0, f"importing {self.plugin_module} failed:\n{probe.stderr}"
        report = json.loads(probe.stdout.strip().splitlines()[-1])
        assert not report["failures"], f"registering the plugin failed: {report['failures']}"
        assert self.framework_name in report["frameworks"], (
            f"{self.plugin_module} does not register {self.framework_name!r}: {report}"
        )
        assert not report["imported"], (
            f"importing and registering {self.plugin_module} imported {report['imported']}; "
            "register the adapter by import path and import the framework only inside it"
        )

    def test_owns_trial_class(self) -> None:
        plugins = self.plugins()
        adapter = plugins.framework(self.framework_name)
        trial_class = self.trial_class()
        assert adapter.owns(trial_class)
        assert plugins.framework_for(trial_class) is adapter
        assert issubclass(adapter.controller_for(trial_class), TrialController)

        class ForeignTrial(Trial):
            def __init__(self, context: TrialContext) -> None:
                pass

        assert not adapter.owns(ForeignTrial), "the adapter claims a plain det.Trial subclass"

    def test_save_load_round_trip(self, tmp_path: Path) -> None:
        n = self.resume_batches[0]
        built = self.build()
        built.controller.train(n)
        expected = built.controller.validate().metrics
        path = tmp_path / "checkpoint"
        save_checkpoint(built.controller, built.adapter, path)

        self.check_loaded(load_from_path(path, plugins=self.plugins()), built)
        restored = self.build()
        restored.controller.load(path)
        assert restored.controller.batches_trained == n
        assert_metrics_close(
            restored.controller.validate().metrics, expected, self.tolerance, "after load"
        )

    def test_resume_equivalence(self, tmp_path: Path) -> None:
        n, m = self.resume_batches
        straight = self.build()
        straight.controller.train(n)
        straight_last = straight.controller.train(m).metrics
        straight_val = straight.controller.validate().metrics

        first = self.build()
        first.controller.train(n)
        path = tmp_path / "checkpoint"
        save_checkpoint(first.controller, first.adapter, path)

        resumed = self.build()
        # A new process would not share this one's RNG states: only load() may restore them.
        seed_everything(self.trial_seed + 1_000_003, resumed.adapter)
        resumed.controller.load(path)
        resumed_last = resumed.controller.train(m).metrics
        assert resumed.controller.batches_trained == n + m
        assert_metrics_close(resumed_last, straight_last, self.tolerance, "last training metrics")
        assert_metrics_close(
            resumed.controller.validate().metrics, straight_val, self.tolerance, "validation"
        )

    def test_same_seed_same_result(self) -> None:
        n = self.resume_batches[0]

        def run(seed: int) -> dict[str, Any]:
            controller = self.build(seed=seed).controller
            train = controller.train(n).metrics
            return {**train, **{f"val:{k}": v for k, v in controller.validate().metrics.items()}}

        first, again, other = run(self.trial_seed), run(self.trial_seed), run(self.trial_seed + 1)
        assert_metrics_close(again, first, self.tolerance, "same seed")
        assert not metrics_close(other, first, self.tolerance), (
            f"seeds {self.trial_seed} and {self.trial_seed + 1} gave the same metrics {first}"
        )

    def test_device_placement_cpu(self) -> None:
        from detlite.testing.pytest_plugin import cuda_visible

        built = self.build()
        device = built.controller.placement.device
        if self.gpu_capable and cuda_visible():
            assert device.startswith("cuda"), f"a GPU is visible but the trial runs on {device}"
        else:
            assert device == "cpu", f"no GPU is visible (or used) but the trial runs on {device}"
        assert built.context.env.placement == built.controller.placement
        result = built.controller.train(1)
        _check_metrics(result.metrics, "train(1)")
        assert result.num_inputs == built.context.get_per_slot_batch_size()
        _check_metrics(built.controller.validate(max_batches=1).metrics, "validate()")

    def test_metadata_keys(self, tmp_path: Path) -> None:
        from detlite import __version__

        n = self.resume_batches[0]
        built = self.build()
        built.controller.train(n)
        save_checkpoint(built.controller, built.adapter, tmp_path / "checkpoint")
        metadata = read_metadata(tmp_path / "checkpoint")

        assert metadata["framework"] == built.adapter.framework_string()
        assert metadata["framework"].startswith(f"{built.adapter.name}-")
        assert metadata["format"] == built.controller.checkpoint_format
        assert self.plugins().checkpoint_format(metadata["format"]) is not None
        assert metadata["detlite_version"] == __version__
        assert metadata["batches_trained"] == n
        assert metadata["hparams"] == json.loads(json.dumps(self.hparams()))
        config = built.context.get_experiment_config()
        assert metadata["experiment_config"] == json.loads(json.dumps(config, default=str))

    def test_validate_max_batches(self) -> None:
        built = self.build()
        per_slot = built.context.get_per_slot_batch_size()
        full = built.controller.validate()
        assert full.num_inputs > per_slot, (
            "the validation data must hold more than one batch for this test to mean anything"
        )
        one = built.controller.validate(max_batches=1)
        assert one.num_inputs == per_slot
