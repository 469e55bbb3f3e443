"""The framework contract suite run against the fake framework, and its own machinery:
declared gaps become strict expected failures, and ``gpu`` tests skip without a GPU."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from detlite.harness import BuiltTrial
from detlite.plugins import Plugins
from detlite.testing import FakeFrameworkPlugin, make_fake_plugins
from detlite.testing.contract import FrameworkContract, metrics_close
from detlite.testing.fake import LinearTrial, linear_config, linear_hparams
from detlite.testing.pytest_plugin import _nvidia_smi_sees_gpu, cuda_visible
from detlite.trial import Trial

pytest_plugins = ["pytester"]


class TestFakeFramework(FrameworkContract):
    framework_name = "fake"
    # FakeFrameworkPlugin registers fake.py by import path; registering must not import it.
    plugin_module = "detlite.testing:FakeFrameworkPlugin"
    framework_modules = ("detlite.testing.fake",)
    gpu_capable = False
    resume_batches = (3, 4)  # 20 records in batches of 4: the 7 batches wrap after batch 5

    def plugins(self) -> Plugins:
        return make_fake_plugins()

    def trial_class(self) -> type[Trial]:
        return LinearTrial

    def experiment_config(self) -> dict[str, Any]:
        return linear_config()

    def hparams(self) -> dict[str, Any]:
        return linear_hparams()

    def check_loaded(self, loaded: Any, built: BuiltTrial) -> None:
        assert isinstance(built.trial, LinearTrial)
        assert loaded == built.trial.model


GAPS_MODULE = """
    from detlite.testing import make_fake_plugins
    from detlite.testing.contract import FrameworkContract
    from detlite.testing.fake import LinearTrial, linear_config, linear_hparams
    from detlite.trial import Trial


    class Unowned(Trial):
        def __init__(self, context):
            pass


    class TestGaps(FrameworkContract):
        framework_name = "fake"
        plugin_module = "detlite.testing:FakeFrameworkPlugin"
        framework_modules = ("detlite.testing.fake",)
        known_gaps = {
            "test_discoverable": "declared, yet it passes",
            "test_owns_trial_class": "the adapter does not own Unowned",
        }

        def plugins(self):
            return make_fake_plugins()

        def trial_class(self):
            return Unowned

        def experiment_config(self):
            return linear_config()

        def hparams(self):
            return linear_hparams()
"""


def test_known_gaps_are_strict_xfails(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_gaps=textwrap.dedent(GAPS_MODULE))
    result = pytester.runpytest("-rxX", "-k", "test_discoverable or test_owns_trial_class")
    result.assert_outcomes(failed=1, xfailed=1)
    result.stdout.fnmatch_lines(
        [
            "*TestGaps.test_discoverable*",
            "*XPASS(strict)*known gap of fake: declared, yet it passes",
            "*XFAIL*test_owns_trial_class*known gap of fake: the adapter does not own Unowned",
        ]
    )


def test_known_gaps_apply_without_the_pytest_plugin(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_gaps=textwrap.dedent(GAPS_MODULE))
    result = pytester.runpytest("-p", "no:detlite", "-k", "test_discoverable or test_owns")
    result.assert_outcomes(failed=1, xfailed=1)


def test_a_gap_must_name_a_test_of_the_suite() -> None:
    with pytest.raises(TypeError, match=r"test_resume_equivalance.*not a test of the framework"):

        class TestTypo(FrameworkContract):
            known_gaps = {"test_resume_equivalance": "typo"}


def test_a_gap_needs_a_reason() -> None:
    with pytest.raises(TypeError, match="needs a reason"):

        class TestNoReason(FrameworkContract):
            known_gaps = {"test_resume_equivalence": " "}


def test_gpu_tests_skip_with_a_reason_when_no_gpu_is_visible(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    pytester.makepyfile(
        test_gpu="""
        import pytest

        @pytest.mark.gpu
        def test_needs_cuda():
            raise AssertionError("must not run without a GPU")

        @pytest.mark.slow
        def test_slow_marker_is_registered():
            pass
        """
    )
    # --strict-markers: the markers exist only because the plugin registered them.
    result = pytester.runpytest("-rs", "--strict-markers")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*SKIPPED*needs a CUDA device; none is visible*"])


def test_fake_plugin_registers_by_import_path() -> None:
    plugins = make_fake_plugins()
    assert plugins.registrations("framework")["fake"].target == "detlite.testing.fake:FakeAdapter"
    info = plugins.info("fake")
    assert info is not None and info.distribution == "detlite"
    assert FakeFrameworkPlugin.__module__ == "detlite.testing"


def test_metrics_close_honours_tolerance() -> None:
    assert metrics_close({"loss": 1.0}, {"loss": 1.0})
    assert not metrics_close({"loss": 1.0}, {"loss": 1.0 + 1e-12})
    assert metrics_close({"loss": 1.0}, {"loss": 1.0 + 1e-12}, tolerance=1e-9)
    assert not metrics_close({"loss": 1.0}, {"loss": 1.0, "acc": 0.5}, tolerance=1.0)


@pytest.mark.parametrize(
    ("script", "seen"), [("echo 'GPU 0: H200 (UUID: x)'", True), ("exit 9", False)]
)
def test_nvidia_smi_decides_when_torch_is_not_imported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str, seen: bool
) -> None:
    if "torch" in sys.modules:
        pytest.skip("torch is imported, so cuda_visible() asks it instead")
    smi = tmp_path / "nvidia-smi"
    smi.write_text(f"#!/bin/sh\n{script}\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    _nvidia_smi_sees_gpu.cache_clear()
    try:
        assert cuda_visible() is seen
    finally:
        _nvidia_smi_sees_gpu.cache_clear()
