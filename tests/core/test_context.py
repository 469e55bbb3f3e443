"""The context directory: which files travel, copying them, and naming and importing entrypoints."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from detlite.context import (
    ALWAYS_IGNORED,
    MAX_CONTEXT_SIZE,
    copy_context,
    entrypoint_of,
    import_entrypoint,
    iter_context_files,
)
from detlite.errors import InvalidExperiment


def write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def listed(root: Path) -> list[str]:
    return [rel for rel, _ in iter_context_files(root)]


# -- which files travel ---------------------------------------------------------------------


def test_python_caches_are_always_left_out(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "model_def.py": "",
            "__pycache__/model_def.cpython-311.pyc": "",
            "pkg/__pycache__/x.pyc": "",
            "pkg/mod.py": "",
            "stale.pyc": "",
            "opt.pyo": "",
            "Jy$py.class": "",
        },
    )
    assert listed(tmp_path) == ["model_def.py", "pkg/mod.py"]
    assert "__pycache__/" in ALWAYS_IGNORED


def test_detignore_patterns_directories_and_negation(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            ".detignore": "# comments are fine\ndata/\n*.log\n!keep.log\nnested/secret.txt\n",
            "model_def.py": "",
            "data/train.csv": "",
            "sub/data/more.csv": "",  # a directory pattern matches at any depth
            "run.log": "",
            "sub/debug.log": "",
            "keep.log": "",
            "nested/secret.txt": "",
            "nested/public.txt": "",
            "a/b/c/deep.py": "",
        },
    )
    assert listed(tmp_path) == [
        "keep.log",
        "model_def.py",
        "a/b/c/deep.py",
        "nested/public.txt",
    ]


def test_paths_are_posix_relative_and_point_at_the_files(tmp_path: Path) -> None:
    write(tmp_path, {"x/y.txt": "y"})
    ((rel, path),) = list(iter_context_files(tmp_path))
    assert rel == "x/y.txt" and path == tmp_path.resolve() / "x" / "y.txt"


def test_a_missing_context_directory_is_explained(tmp_path: Path) -> None:
    with pytest.raises(InvalidExperiment, match="does not exist or is not a directory"):
        list(iter_context_files(tmp_path / "nope"))
    assert MAX_CONTEXT_SIZE == 99_614_720  # Determined's 96 MiB less 1 MiB


# -- copying ----------------------------------------------------------------------------------


def test_copy_keeps_the_executable_bit_and_counts_bytes(tmp_path: Path) -> None:
    src = write(
        tmp_path / "src", {"run.sh": "#!/bin/sh\n", "lib/a.py": "x = 1\n", ".detignore": "*.tmp\n"}
    )
    (src / "run.sh").chmod(0o700)
    (src / "lib" / "a.py").chmod(0o600)
    write(src, {"scratch.tmp": "zzz"})
    os.symlink(src / "gone", src / "dangling")
    dest = tmp_path / "dest" / "code"
    total = copy_context(src, dest)
    assert total == len("#!/bin/sh\n") + len("x = 1\n")
    assert sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file()) == [
        "lib/a.py",
        "run.sh",
    ]
    assert (dest / "run.sh").stat().st_mode & 0o777 == 0o755
    assert (dest / "lib" / "a.py").stat().st_mode & 0o777 == 0o644


# -- naming entrypoints -----------------------------------------------------------------------


class Outer:
    class Inner:
        pass


def test_entrypoint_of_a_module_class() -> None:
    assert entrypoint_of(Outer) == f"{__name__}:Outer"
    assert entrypoint_of(Outer.Inner) == f"{__name__}:Outer.Inner"


def main_class(name: str = "ScriptTrial") -> type:
    return type(name, (), {"__module__": "__main__"})


def test_entrypoint_of_a_script_is_its_dotted_path_in_the_context(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = write(tmp_path, {"scripts/train.py": ""}) / "scripts" / "train.py"
    monkeypatch.setattr(sys.modules["__main__"], "__file__", str(script))
    assert entrypoint_of(main_class(), tmp_path) == "scripts.train:ScriptTrial"
    monkeypatch.chdir(tmp_path / "scripts")
    assert entrypoint_of(main_class()) == "train:ScriptTrial"  # the default is the cwd


def test_a_script_outside_the_context_or_interactive_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "ctx").mkdir()
    monkeypatch.setattr(sys.modules["__main__"], "__file__", str(tmp_path / "elsewhere.py"))
    with pytest.raises(InvalidExperiment, match="is not inside the context directory"):
        entrypoint_of(main_class(), tmp_path / "ctx")
    monkeypatch.delattr(sys.modules["__main__"], "__file__")
    with pytest.raises(InvalidExperiment, match="interactive session"):
        entrypoint_of(main_class())


# -- importing entrypoints --------------------------------------------------------------------


def test_import_is_fresh_every_time_and_leaves_sys_path_alone(tmp_path: Path) -> None:
    write(tmp_path, {"ctx_mod.py": "VALUE = 1\nclass A:\n    class B:\n        pass\n"})
    path = list(sys.path)
    first = import_entrypoint("ctx_mod:A", tmp_path)
    assert import_entrypoint("ctx_mod:A.B", tmp_path) is not first.B  # re-imported
    write(tmp_path, {"ctx_mod.py": "class A:\n    VALUE = 2\n"})
    assert import_entrypoint("ctx_mod:A", tmp_path).VALUE == 2
    assert sys.path == path


def test_the_context_directory_wins_over_an_earlier_module(tmp_path: Path) -> None:
    write(tmp_path / "one", {"same_name.py": "class T:\n    WHO = 'one'\n"})
    write(tmp_path / "two", {"same_name.py": "class T:\n    WHO = 'two'\n"})
    assert import_entrypoint("same_name:T", tmp_path / "one").WHO == "one"
    assert import_entrypoint("same_name:T", tmp_path / "two").WHO == "two"


@pytest.mark.parametrize("bad", ["model_def", "model_def:", ":Trial", ""])
def test_malformed_entrypoints_are_explained(bad: str) -> None:
    with pytest.raises(InvalidExperiment, match="must look like 'module:ClassName'"):
        import_entrypoint(bad)


def test_missing_modules_and_attributes_are_invalid_experiments(tmp_path: Path) -> None:
    write(tmp_path, {"present.py": "class T:\n    pass\n"})
    with pytest.raises(
        InvalidExperiment, match=r"cannot import entrypoint 'absent:T' in .*No module"
    ):
        import_entrypoint("absent:T", tmp_path)
    with pytest.raises(InvalidExperiment, match="cannot import entrypoint 'present:Nope'"):
        import_entrypoint("present:Nope", tmp_path)
    with pytest.raises(InvalidExperiment, match=r"cannot import entrypoint 'present:T\.x'"):
        import_entrypoint("present:T.x", tmp_path)
