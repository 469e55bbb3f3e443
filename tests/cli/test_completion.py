"""``detlite completion``: the scripts are valid, and completing through them works.

The completions come from the real ``detlite`` program, asked the way the bash script asks
it (``COMP_WORDS``, ``COMP_CWORD`` and ``_DETLITE_COMPLETE=bash_complete``).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.master.test_cli_master import EXE, clean_env


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([EXE, *args], env=env, capture_output=True, text=True, timeout=60)


def complete(words: str, env: dict[str, str]) -> list[tuple[str, str]]:
    """What bash's completion gets for the command line ``words`` (cursor at its end)."""
    parts = words.split(" ")
    asked = {
        **env,
        "_DETLITE_COMPLETE": "bash_complete",
        "COMP_WORDS": words,
        "COMP_CWORD": str(len(parts) - 1),
    }
    done = subprocess.run([EXE], env=asked, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    return [(kind, value) for kind, value in (line.split(",", 1) for line in lines)]


def test_bash_script_is_valid_and_completes_commands(tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    done = run("completion", "bash", env=env)
    assert done.returncode == 0, done.stderr
    script = done.stdout
    assert "_DETLITE_COMPLETE=bash_complete" in script and "complete " in script
    # The same script click prints for _DETLITE_COMPLETE=bash_source.
    source = subprocess.run(
        [EXE], env={**env, "_DETLITE_COMPLETE": "bash_source"}, capture_output=True, text=True
    )
    assert source.stdout.strip() == script.strip()
    path = tmp_path / "detlite.bash"
    path.write_text(script)
    checked = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr

    assert complete("detlite exp", env) == [("plain", "experiment")]
    assert ("plain", "tensorboard") in complete("detlite t", env)
    assert ("plain", "wait") in complete("detlite experiment w", env)
    assert complete("detlite completion ", env) == [
        ("plain", "bash"),
        ("plain", "zsh"),
        ("plain", "fish"),
    ]
    assert ("plain", "--json") in complete("detlite user list --j", env)


def test_bash_runs_the_script(tmp_path: Path) -> None:
    """Evaluated in bash, the completion function fills COMPREPLY from detlite."""
    env = clean_env(tmp_path)
    env["PATH"] = f"{Path(EXE).parent}:{env.get('PATH', '')}"
    program = (
        'eval "$(detlite completion bash)"\n'
        "COMP_WORDS=(detlite experiment li); COMP_CWORD=2\n"
        "_detlite_completion detlite li experiment\n"  # bash passes: command, word, previous
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    done = subprocess.run(["bash", "-c", program], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["list"]


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_other_shells_get_their_scripts(shell: str, tmp_path: Path) -> None:
    done = run("completion", shell, env=clean_env(tmp_path))
    assert done.returncode == 0, done.stderr
    assert f"{shell}_complete" in done.stdout
    if shutil.which(shell) and shell == "zsh":
        path = tmp_path / "detlite.zsh"
        path.write_text(done.stdout)
        checked = subprocess.run([shell, "-n", str(path)], capture_output=True, text=True)
        assert checked.returncode == 0, checked.stderr


def test_unknown_shell_is_a_usage_error(tmp_path: Path) -> None:
    done = run("completion", "powershell", env=clean_env(tmp_path))
    assert done.returncode == 2 and "powershell" in done.stderr
