"""The README's first commands are the ones CI runs, exactly as written.

The README opens with two commands: one that sets detlite up and runs the main job, one that
runs every test (``bash .ci/run``). ``.ci/run`` must run the first verbatim, install the web
UI's browser with fresh package lists, and end in ``tox``; a newcomer on a fresh machine then
needs those two commands and nothing else. No network and no install: the files are read.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SECTION = "## Set up, run, test"


def readme_commands() -> list[str]:
    """The commands of the first ``bash`` block under the set-up heading, one per line."""
    text = (ROOT / "README.md").read_text()
    assert SECTION in text, f"README.md has no {SECTION!r} section"
    after = text[text.index(SECTION) :]
    block = re.search(r"```bash\n(.*?)```", after, re.DOTALL)
    assert block is not None, f"README.md: no ```bash block under {SECTION!r}"
    lines = [line.strip() for line in block.group(1).splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def ci_lines() -> list[str]:
    """The lines ``.ci/run`` executes (comments and blank lines left out)."""
    lines = [line.strip() for line in (ROOT / ".ci/run").read_text().splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def test_readme_opens_with_exactly_two_commands() -> None:
    commands = readme_commands()
    assert len(commands) == 2, f"README.md's first block must hold two commands: {commands}"
    setup, tests = commands
    assert setup.startswith("python3 -m pip install -c constraints.txt -e "), setup
    assert "examples/mnist_pytorch/train.py --config adaptive.yaml --local" in setup, setup
    assert tests == "bash .ci/run", tests


def test_ci_runs_the_readme_setup_command_verbatim() -> None:
    setup, _ = readme_commands()
    assert setup in ci_lines(), f".ci/run does not run the README's set-up command: {setup}"


def test_the_main_job_it_names_exists() -> None:
    setup, _ = readme_commands()
    job = shlex.split(setup.split("&&")[1])
    script = ROOT / job[1]
    assert script.is_file(), f"README's main job names a missing script: {job[1]}"
    config = job[job.index("--config") + 1]
    assert (script.parent / config).is_file(), f"README's main job names a missing config: {config}"


def test_ci_installs_the_browser_with_fresh_package_lists_then_runs_tox() -> None:
    lines = ci_lines()
    browser = [line for line in lines if "apt-get install" in line]
    assert browser, ".ci/run does not install the web UI's browser"
    assert all("apt-get update" in line for line in browser), browser
    assert all(line.index("apt-get update") < line.index("apt-get install") for line in browser)
    assert "chromium chromium-driver" in browser[0]
    assert lines[-1] == "exec tox", f".ci/run must end by running every test: {lines[-1]}"
    assert lines.index(readme_commands()[0]) < lines.index(browser[0])
