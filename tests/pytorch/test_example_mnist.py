"""The MNIST example and the training-loop benchmark run as a user runs them: as scripts.

``examples/mnist_pytorch/train.py --local --test`` must pass local test mode's four stages
and leave the checkpoint it promises; ``bench/train_loop.py`` must run in a short mode and
print well-formed JSON. Both run with this interpreter, from an empty working directory,
with ``TMPDIR`` pointing into the test's own directory so that nothing is left elsewhere.
Timings are never asserted: they depend on the machine.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "mnist_pytorch"
BENCH = ROOT / "bench" / "train_loop.py"


def _run(args: list[str], cwd: Path, tmp: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    tmp.mkdir(exist_ok=True)
    env = {
        **os.environ,
        "TMPDIR": str(tmp),
        # Importing the example's modules must not leave __pycache__ in the repository.
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    result = subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, (
        f"{' '.join(args)} exited with {result.returncode}\n"
        f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )
    return result


def _no_nan(value: str) -> Any:
    raise ValueError(f"{value} is not JSON")


@pytest.fixture(scope="module")
def mnist_test_mode(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, Path]:
    """stdout of ``train.py --local --test``, its working directory and its TMPDIR."""
    base = tmp_path_factory.mktemp("mnist")
    cwd = base / "cwd"
    cwd.mkdir()
    result = _run([str(EXAMPLE / "train.py"), "--local", "--test"], cwd, base / "tmp", 300)
    return result.stdout, cwd, base / "tmp"


def test_mnist_test_mode_reports_every_stage(mnist_test_mode: tuple[str, Path, Path]) -> None:
    stdout, _, _ = mnist_test_mode
    lines = stdout.splitlines()
    assert lines[0].startswith("detlite test mode: model_def:MNistTrial, hyperparameters {")
    assert "'global_batch_size': 64" in lines[0]
    stages = [
        r"\[0/4\] building MNistTrial \.\.\. ok \(\d+\.\d\d s\)",
        r"\[1/4\] training 5 batches \.\.\. ok \(\d+\.\d\d s\)",
        r"\[2/4\] validating on 1 batch \.\.\. ok \(\d+\.\d\d s\)",
        r"\[3/4\] saving a checkpoint \.\.\. ok \(\d+\.\d\d s\)",
        r"\[4/4\] reloading the checkpoint \.\.\. ok \(\d+\.\d\d s\)",
        r"test mode passed in \d+\.\d\d s; the checkpoint is kept at \S+",
    ]
    assert len(lines) == 1 + len(stages), stdout
    for line, pattern in zip(lines[1:], stages, strict=True):
        assert re.fullmatch(pattern, line), f"{line!r} does not match {pattern!r}"


def test_mnist_test_mode_keeps_a_complete_checkpoint(
    mnist_test_mode: tuple[str, Path, Path],
) -> None:
    stdout, cwd, tmp = mnist_test_mode
    kept = Path(stdout.splitlines()[-1].rsplit(" ", 1)[-1])
    # The checkpoint is in a new detlite-test-* directory under TMPDIR.
    assert kept.parent.parent == tmp
    assert kept.parent.name.startswith("detlite-test-")
    assert kept.is_dir()
    assert (kept / "state_dict.pth").is_file()
    assert {"model_def.py", "data.py", "train.py", "const.yaml"} <= {
        p.name for p in (kept / "code").iterdir()
    }
    metadata = json.loads((kept / "metadata.json").read_text())
    assert metadata["format"] == "torch-state-dict"
    assert metadata["framework"].startswith("torch-")
    assert metadata["batches_trained"] == 5
    assert metadata["hparams"]["global_batch_size"] == 64
    assert metadata["experiment_config"]["entrypoint"] == "model_def:MNistTrial"
    # Test mode works from the example's directory; the caller's stays as it was.
    assert list(cwd.iterdir()) == []


@pytest.fixture(scope="module")
def bench_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The JSON of ``bench/train_loop.py --batches 20 --repeats 1 --json``."""
    base = tmp_path_factory.mktemp("bench")
    cwd = base / "cwd"
    cwd.mkdir()
    args = [str(BENCH), "--batches", "20", "--repeats", "1", "--json"]
    result = _run(args, cwd, base / "tmp", 300)
    report: dict[str, Any] = json.loads(result.stdout, parse_constant=_no_nan)
    return report


def test_bench_short_mode_emits_json(bench_report: dict[str, Any]) -> None:
    environment = bench_report["environment"]
    assert environment["threads"] == 1
    assert environment["scheduling_unit"] == 100
    assert {"torch", "python", "cpus", "load_before", "load_after"} <= set(environment)
    cases = bench_report["results"]
    assert [c["case"] for c in cases] == ["tiny Linear(32,1) b32", "MLP 784-256-10 b64"]
    for case in cases:
        assert case["batches"] == 20
        assert case["repeats"] == 1
        assert case["pairs"] == 1
        for key in (
            "plain_us_per_batch",
            "detlite_us_per_batch",
            "overhead_us_per_batch",
            "ratio",
            "total_ratio",
        ):
            assert isinstance(case[key], float), key
        # One pair of chunks says nothing about the noise.
        assert case["overhead_se_us"] is None
        assert case["ratio_se"] is None
        assert isinstance(case["target_met"], bool)
        assert len(case["plain_us_chunks"]) == len(case["detlite_us_chunks"]) == 1
        assert set(case["setup_s"]) == {
            "plain",
            "detlite",
            "plain_first_unit",
            "detlite_first_unit",
        }
        # Not a timing: the two loops must do the same work, so their weights agree.
        assert case["same_weights_after_warmup"] is True
    tiny, mlp = cases
    assert tiny["target_overhead_us"] == 15.0 and tiny["target_ratio"] is None
    assert mlp["target_ratio"] == 1.02 and mlp["target_overhead_us"] is None


def test_bench_table_has_a_row_per_case(
    bench_report: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = importlib.util.spec_from_file_location("_bench_train_loop", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Its dataclasses look their module up in sys.modules while the module runs.
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    lines = module._table(bench_report["results"]).splitlines()
    assert lines[0].split() == [
        "case",
        "plain",
        "us/b",
        "detlite",
        "us/b",
        "overhead",
        "us/b",
        "ratio",
        "target",
        "met",
    ]
    assert set(lines[1]) <= {"-", " "}
    assert lines[2].startswith("tiny Linear(32,1) b32")
    assert lines[3].startswith("MLP 784-256-10 b64")
    assert lines[2].split()[-1] in {"yes", "NO"}
