"""What a trial's setup pays once per process instead of once per trial, and that paying it
once changes nothing a trial sees (issue #14).

- Plugin discovery reads each ``sys.path`` directory's distributions once, until the
  directory changes; the working directory (``""`` on ``sys.path``) is whichever it is now.
- ``framework_for`` asks the frameworks that are already imported first, so a fake trial
  does not import torch (nor any other framework) to find its adapter.
- ``validate_config`` keeps validated configs by their exact input and gives every caller a
  copy of its own; inputs that differ only in type are never confused.
- ``detlite.worker.warm_up`` reads the plugins and keeps the config once, for a parent that
  forks workers.
- ``parse_storage_config`` validates a storage section with one adapter per process.
- A worker that only validates JSON configs imports neither PyYAML nor pathspec.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError

import detlite
from detlite import hookimpl, hookspecs
from detlite.config import SEARCHER_NAMES, _kept, load_config, validate_config
from detlite.config.experiment import ExperimentConfig
from detlite.config.storage import SharedFSStorageConfig, parse_storage_config
from detlite.errors import InvalidExperimentConfig
from detlite.plugins import Plugins
from detlite.testing import FakeFrameworkPlugin, FakeTrial, linear_config
from detlite.worker import warm_up

# -- plugin discovery ---------------------------------------------------------------------------


def write_distribution(root: Path, dist: str, entry_points: dict[str, str]) -> Path:
    """A dist-info directory as pip lays it out, with ``detlite`` entry points."""
    info = root / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[detlite]\n{lines}")
    return info


def touch_later(path: Path) -> None:
    """Move ``path``'s modification time a second on: the kernel's file times are coarse
    (milliseconds), so a change made right after a scan could otherwise look like none."""
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


PLUGIN_MODULE = """
from detlite import hookimpl

@hookimpl
def detlite_register_storage(register):
    register({name!r}, "collections:OrderedDict")
"""


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    root = tmp_path / "site"
    root.mkdir()
    for name in ("first", "second"):
        (root / f"setup_cost_{name}.py").write_text(PLUGIN_MODULE.format(name=f"{name}-storage"))
    monkeypatch.syspath_prepend(str(root))
    yield root
    for name in ("first", "second"):
        sys.modules.pop(f"setup_cost_{name}", None)


def storages(plugins: Plugins) -> set[str]:
    return set(plugins.registrations("storage"))


def test_entry_points_are_read_once_until_their_directory_changes(site: Path) -> None:
    info = write_distribution(site, "detlite-setup-cost", {"setupcost": "setup_cost_first"})
    assert "first-storage" in storages(Plugins.discover())
    # Rewritten in place, the file is not read again: the directory has not changed.
    (info / "entry_points.txt").write_text("[detlite]\nsetupcost = setup_cost_second\n")
    assert "first-storage" in storages(Plugins.discover())
    # Once the directory changes (a distribution installed or removed), it is read again.
    touch_later(site)
    found = storages(Plugins.discover())
    assert "second-storage" in found
    assert "first-storage" not in found


def test_a_distribution_installed_after_a_scan_is_found(site: Path) -> None:
    assert "first-storage" not in storages(Plugins.discover())
    write_distribution(site, "detlite-setup-cost", {"setupcost": "setup_cost_first"})
    touch_later(site)
    plugins = Plugins.discover()
    assert "first-storage" in storages(plugins)
    info = plugins.info("setupcost")
    assert info is not None
    assert (info.distribution, info.version) == ("detlite-setup-cost", "1.0")


def test_the_working_directory_on_sys_path_is_the_current_one(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    here = tmp_path / "here"
    write_distribution(here, "detlite-setup-cost", {"setupcost": "setup_cost_first"})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.syspath_prepend("")
    monkeypatch.chdir(here)
    assert "first-storage" in storages(Plugins.discover())
    monkeypatch.chdir(elsewhere)
    assert "first-storage" not in storages(Plugins.discover())


def test_a_removed_working_directory_is_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.syspath_prepend("")
    monkeypatch.chdir(gone)
    gone.rmdir()
    assert "searchers" in {info.name for info in Plugins.discover().infos}


def test_the_first_install_of_a_distribution_on_sys_path_wins(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As importlib.metadata.entry_points(): a later install of the same distribution is
    # shadowed whole, even the entry points the first one lacks.
    write_distribution(site, "detlite-setup-cost", {"setupcost": "setup_cost_first"})
    earlier = tmp_path / "earlier"
    write_distribution(earlier, "detlite_setup_cost", {"other": "setup_cost_second"})
    monkeypatch.syspath_prepend(str(earlier))
    plugins = Plugins.discover()
    assert "second-storage" in storages(plugins)
    assert "first-storage" not in storages(plugins)


# -- framework_for --------------------------------------------------------------------------------

ADAPTER_MODULE = """
from detlite.interfaces import FrameworkAdapter

class Adapter(FrameworkAdapter):
    name = "heavy"
    distribution = "heavy"

    def owns(self, trial_class):
        return getattr(trial_class, "heavy", False)

    def controller_for(self, trial_class):
        raise NotImplementedError
"""


@pytest.fixture
def heavy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A framework registered before the fake one, installed but not yet imported."""
    module = "setup_cost_heavy_framework"
    (tmp_path / f"{module}.py").write_text(ADAPTER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield module
    sys.modules.pop(module, None)


class HeavyPlugin:
    @hookimpl
    def detlite_register_frameworks(self, register: hookspecs.Register) -> None:
        module = "setup_cost_heavy_framework"
        register("heavy", f"{module}:Adapter", requires=(module,))


def heavy_then_fake() -> Plugins:
    plugins = Plugins.empty()
    plugins.add(HeavyPlugin(), "heavy")
    plugins.add(FakeFrameworkPlugin(), "fake")
    return plugins


def test_a_trial_of_an_imported_framework_imports_no_other(heavy: str) -> None:
    plugins = heavy_then_fake()
    assert plugins.framework_for(FakeTrial).name == "fake"
    assert heavy not in sys.modules


def test_a_framework_not_imported_yet_is_still_asked(heavy: str) -> None:
    plugins = heavy_then_fake()
    trial_class = type("HeavyTrial", (), {"heavy": True})
    assert plugins.framework_for(trial_class).name == "heavy"
    assert heavy in sys.modules


def test_building_a_fake_trial_imports_no_framework() -> None:
    """The installed plugins (pytorch among them, where torch is installed) and the fake
    framework, in a fresh interpreter: building a LinearTrial must not import torch."""
    code = textwrap.dedent(
        """
        import json, sys
        from detlite.harness import build_trial
        from detlite.testing.fake import LinearTrial, linear_config, linear_hparams
        from detlite.worker import load_plugins

        plugins = load_plugins(["detlite.testing:FakeFrameworkPlugin"])
        build_trial(LinearTrial, linear_config(), linear_hparams(), plugins=plugins)
        frameworks = ("torch", "tensorflow", "keras", "jax", "ray")
        print(json.dumps([m for m in frameworks if m in sys.modules]))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1]) == []


# -- validated configs ----------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _nothing_kept() -> Iterator[None]:
    _kept.clear()
    yield
    _kept.clear()


def full_config(**changes: Any) -> dict[str, Any]:
    """A config as the master sends it (defaults filled in), as fresh JSON data, with
    ``changes`` made afterwards (so they may be invalid, or no JSON)."""
    fresh: dict[str, Any] = json.loads(json.dumps(load_config(linear_config()).to_dict()))
    fresh.update(changes)
    return fresh


def test_the_same_config_gives_equal_independent_copies() -> None:
    def data() -> dict[str, Any]:  # what each trial receives: its own JSON, decoded
        config = full_config(data={"paths": ["a", "b"]}, labels=["x"])
        config["hyperparameters"]["layers"] = {"type": "const", "val": [8, 16]}
        return config

    first, second = validate_config(data()), validate_config(data())
    assert first == second
    assert first is not second
    assert first.data is not second.data
    assert first.data["paths"] is not second.data["paths"]
    # What one trial changes in its copy, no other copy sees.
    for config in (first, second):
        config.data["paths"].append("c")
        config.labels.append("y")
        config.hyperparameters["layers"].val.append(32)
    third = validate_config(data())
    assert third.data == {"paths": ["a", "b"]}
    assert third.labels == ["x"]
    assert third.hyperparameters["layers"].val == [8, 16]


def test_a_copy_is_what_validating_again_gives() -> None:
    data = full_config()
    validate_config(data)
    copy = validate_config(data)
    direct = ExperimentConfig.model_validate(data, strict=True)
    assert copy == direct
    assert copy.to_dict() == direct.to_dict()
    assert copy.model_fields_set == direct.model_fields_set
    assert copy.searcher.model_fields_set == direct.searcher.model_fields_set


def test_changing_the_input_afterwards_changes_nothing_kept() -> None:
    data = full_config(data={"paths": ["a"]})
    validate_config(data)
    data["data"]["paths"].append("b")
    assert validate_config(full_config(data={"paths": ["a"]})).data == {"paths": ["a"]}


@pytest.mark.parametrize(
    ("field", "valid", "invalid"),
    [
        ("debug", True, 1),  # a bool is not an int, nor an int a bool
        ("labels", ["a"], ("a",)),  # a tuple is not a list
        ("max_restarts", 3, 3.0),  # a float is not an int
    ],
)
def test_inputs_that_differ_only_in_type_are_not_confused(
    field: str, valid: Any, invalid: Any
) -> None:
    validate_config(full_config(**{field: valid}))
    with pytest.raises(InvalidExperimentConfig):
        validate_config(full_config(**{field: invalid}))
    with pytest.raises(InvalidExperimentConfig):
        validate_config(full_config(**{field: invalid}))


def test_int_and_str_keys_are_not_confused() -> None:
    validate_config(full_config(data={"1": "a"}))
    with pytest.raises(InvalidExperimentConfig):
        validate_config(full_config(data={1: "a"}))


class MineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Literal["mine"]
    max_length: dict[str, int]


def test_plugin_searchers_are_part_of_what_is_kept() -> None:
    data = full_config()
    data["searcher"] = {"name": "mine", "max_length": {"batches": 3}}
    config = validate_config(data, searchers={"mine": MineConfig})
    assert isinstance(config.searcher, MineConfig)
    with pytest.raises(InvalidExperimentConfig, match="mine"):
        validate_config(data)
    again = validate_config(data, searchers={"mine": MineConfig})
    assert again == config
    assert again.searcher.max_length is not config.searcher.max_length  # type: ignore[attr-defined]


def test_invalid_configs_fail_every_time() -> None:
    data = full_config(scheduling_unit=0)
    for _ in range(2):
        with pytest.raises(InvalidExperimentConfig, match="scheduling_unit"):
            validate_config(data)


def test_helper_objects_are_validated_every_time() -> None:
    # det.Double is a dict subclass: not plain data, so never kept, and still valid.
    config = {**linear_config(), "hyperparameters": {"global_batch_size": 4}}
    config["hyperparameters"]["lr"] = detlite.Double(0.01, 0.1)
    assert _kept.key_of(config, None) is None
    assert validate_config(config) == validate_config(config)


def test_at_most_max_kept_configs_are_kept() -> None:
    for seed in range(_kept.MAX_KEPT + 3):
        validate_config(full_config(reproducibility={"experiment_seed": seed}))
    assert len(_kept._kept) == _kept.MAX_KEPT
    # The most recent are those kept.
    latest = full_config(reproducibility={"experiment_seed": _kept.MAX_KEPT + 2})
    key = _kept.key_of(latest, None)
    assert key is not None and _kept.find(key) is not None
    oldest = _kept.key_of(full_config(reproducibility={"experiment_seed": 0}), None)
    assert oldest is not None and _kept.find(oldest) is None


def test_a_storage_section_validates_on_its_own() -> None:
    config = parse_storage_config({"type": "shared_fs", "host_path": "/checkpoints"})
    assert isinstance(config, SharedFSStorageConfig)
    assert config == parse_storage_config(config.model_dump())
    with pytest.raises(ValidationError):
        parse_storage_config({"type": "gcs", "bucket": "b"})


# -- warm_up and imports --------------------------------------------------------------------------


def test_warm_up_reads_plugins_and_keeps_the_config() -> None:
    data = full_config()
    plugins = warm_up(["detlite.testing:FakeFrameworkPlugin"], data)
    assert "fake" in plugins.registrations("framework")
    key = _kept.key_of(data, plugins.searcher_config_models(exclude=SEARCHER_NAMES))
    assert key is not None and _kept.find(key) is not None


def test_a_worker_validating_json_imports_neither_yaml_nor_pathspec() -> None:
    code = textwrap.dedent(
        """
        import json, sys
        import detlite.worker
        from detlite.config import load_config
        from detlite.context import import_entrypoint
        from detlite.testing.fake import linear_config

        load_config(linear_config())
        import_entrypoint("detlite.testing.fake:LinearTrial")
        print(json.dumps([m for m in ("yaml", "pathspec") if m in sys.modules]))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1]) == []
