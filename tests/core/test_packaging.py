"""The distribution: one wheel holding the core and every built-in plugin package."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def source_modules() -> set[str]:
    """Every module under core/ and plugins/, as the path it must have inside the wheel."""
    found = set()
    for py in (ROOT / "core").rglob("*.py"):
        found.add("detlite/" + py.relative_to(ROOT / "core").as_posix())
    for py in (ROOT / "plugins").rglob("*.py"):
        found.add("detlite/" + py.relative_to(ROOT / "plugins").as_posix())
    return found


@pytest.mark.slow
def test_wheel_contains_every_module(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    (wheel,) = tmp_path.glob("detlite-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = source_modules() - names
    assert not missing, (
        f"modules missing from the wheel (add their packages to pyproject): {missing}"
    )
    assert "detlite/py.typed" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    for line in ("pytorch = detlite.pytorch.plugin", "detlite = detlite.cli.main:main"):
        assert line in text
