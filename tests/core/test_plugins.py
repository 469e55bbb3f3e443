"""Plugin discovery through real entry points, failure isolation, and the typed facade."""

from __future__ import annotations

import inspect
import textwrap
from pathlib import Path

import pytest

from detlite import hookimpl, hookspecs
from detlite.errors import FrameworkUnavailable, PluginError, UnknownCheckpointFormat
from detlite.plugins import Plugins, Registration

BUILTIN = {"pytorch", "tensorflow", "keras", "searchers"}


def make_distribution(
    root: Path, dist: str, entry_points: dict[str, str], modules: dict[str, str]
) -> None:
    """Lay out an installed distribution (dist-info + modules) the way pip would."""
    info = root / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    lines = "\n".join(f"{name} = {target}" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[detlite]\n{lines}\n")
    for name, source in modules.items():
        (root / f"{name}.py").write_text(textwrap.dedent(source))


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


GOOD_PLUGIN = """
    from detlite import hookimpl

    @hookimpl
    def detlite_register_storage(register):
        register("memory", "collections:OrderedDict", description="test storage")
"""


def test_builtin_plugins_are_discovered_through_entry_points() -> None:
    plugins = Plugins.discover()
    assert {i.name for i in plugins.infos} >= BUILTIN
    assert all(i.distribution == "detlite" for i in plugins.infos if i.name in BUILTIN)
    frameworks = plugins.registrations("framework")
    assert set(frameworks) >= {"pytorch", "tensorflow", "keras"}
    assert frameworks["pytorch"].requires == ("torch",)
    assert frameworks["pytorch"].plugin == "pytorch"


def test_discover_returns_a_new_manager_each_time() -> None:
    a, b = Plugins.discover(), Plugins.discover()
    assert a.pm is not b.pm


def test_broken_plugin_is_reported_and_others_load(site: Path) -> None:
    make_distribution(
        site,
        "detlite-broken",
        {"broken": "broken_mod", "good": "good_mod"},
        {"broken_mod": "raise ImportError('needs libfoo')", "good_mod": GOOD_PLUGIN},
    )
    plugins = Plugins.discover()
    (failure,) = [f for f in plugins.failures if f.name == "broken"]
    assert failure.distribution == "detlite-broken"
    assert failure.stage == "load"
    assert "needs libfoo" in failure.error
    assert "memory" in plugins.registrations("storage")
    assert {i.name for i in plugins.infos} >= BUILTIN


def test_strict_mode_reraises(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_distribution(site, "detlite-broken", {"broken": "broken_mod"}, {"broken_mod": "1/0"})
    monkeypatch.setenv("DETLITE_STRICT_PLUGINS", "1")
    with pytest.raises(ZeroDivisionError):
        Plugins.discover()


def test_disabled_plugins_are_skipped(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_distribution(site, "detlite-broken", {"broken": "broken_mod"}, {"broken_mod": "1/0"})
    monkeypatch.setenv("DETLITE_DISABLE_PLUGINS", "broken, keras")
    plugins = Plugins.discover()
    assert not plugins.failures
    assert "keras" not in {i.name for i in plugins.infos}
    assert "keras" not in plugins.registrations("framework")


class RaisingPlugin:
    @hookimpl
    def detlite_register_searchers(self, register: hookspecs.Register) -> None:
        register("half", "x:y")
        raise RuntimeError("registration exploded")


class SearcherPlugin:
    @hookimpl
    def detlite_register_searchers(self, register: hookspecs.Register) -> None:
        register("mine", "collections:Counter")


def test_a_plugin_failing_to_register_does_not_stop_the_others() -> None:
    plugins = Plugins.empty()
    plugins.add(RaisingPlugin(), "raising")
    plugins.add(SearcherPlugin(), "mine")
    regs = plugins.registrations("searcher")
    # Nothing of the failing plugin is half-registered.
    assert list(regs) == ["mine"]
    (failure,) = plugins.failures
    assert (failure.name, failure.stage) == ("raising", "register")
    assert "registration exploded" in failure.error


def test_duplicate_names_keep_the_first_and_report_a_conflict() -> None:
    plugins = Plugins.empty()
    plugins.add(SearcherPlugin(), "first")
    plugins.add(SearcherPlugin(), "second")
    assert plugins.registrations("searcher")["mine"].plugin == "first"
    (failure,) = plugins.failures
    assert failure.name == "second" and failure.stage == "conflict"
    assert "already registered by plugin 'first'" in failure.error


def test_registration_of_missing_module_raises_framework_unavailable() -> None:
    reg = Registration(
        "framework",
        "nothing",
        "nothing_here_xyz.adapter:A",
        "p",
        requires=("nothing_here_xyz",),
        install="pip install 'detlite[nothing]'",
    )
    assert not reg.is_available()
    with pytest.raises(FrameworkUnavailable) as info:
        reg.load()
    assert "pip install 'detlite[nothing]'" in str(info.value)
    assert isinstance(info.value, ImportError)


def test_registration_load_error_names_plugin_and_target() -> None:
    reg = Registration("storage", "bad", "collections:NoSuchThing", "myplugin")
    with pytest.raises(PluginError, match=r"plugin 'myplugin'.*'collections:NoSuchThing'"):
        reg.load()


def test_unknown_checkpoint_format_names_the_format() -> None:
    with pytest.raises(UnknownCheckpointFormat, match="'nope'"):
        Plugins.empty().checkpoint_format("nope")


def test_framework_for_unowned_class_says_what_to_install() -> None:
    class Alien:
        pass

    plugins = Plugins.empty()
    plugins.add(
        type(
            "P",
            (),
            {
                "detlite_register_frameworks": hookimpl(
                    lambda self, register: register(
                        "ghost",
                        "ghost_fw_xyz:Adapter",
                        requires=("ghost_fw_xyz",),
                        install="pip install ghost",
                    )
                )
            },
        )(),
        "ghost",
    )
    with pytest.raises(PluginError, match="ghost is not installed \\(pip install ghost\\)"):
        plugins.framework_for(Alien)


def test_unknown_registration_kind_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown registration kind"):
        Plugins.empty().registrations("gpu")


def test_facade_matches_the_hookspecs() -> None:
    """Every hook is reachable through the facade, with the spec's argument names."""
    specs = {
        name: fn
        for name, fn in vars(hookspecs).items()
        if name.startswith("detlite_") and callable(fn)
    }
    assert len(specs) <= 10, "keep the contract small (STYLE.md: under about ten hooks)"
    registration = {fn.__name__ for fn in hookspecs.REGISTRATION_HOOKS.values()}
    pm = Plugins.empty().pm
    for name, fn in specs.items():
        assert hasattr(pm.hook, name), name
        params = list(inspect.signature(fn).parameters)
        if name in registration:
            assert params == ["register"], name
            continue
        if name == "detlite_register_commands":
            assert params == ["cli"]
            assert hasattr(Plugins, "add_commands")
            continue
        method = getattr(Plugins, name.removeprefix("detlite_"), None)
        assert method is not None, f"no facade method for {name}"
        assert list(inspect.signature(method).parameters)[1:] == params, name


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []

    @hookimpl
    def detlite_trial_started(self, experiment_id: int, trial_id: int, hparams: dict) -> None:
        self.events.append(("started", (experiment_id, trial_id, dict(hparams))))

    @hookimpl
    def detlite_checkpoint_saved(self, path: str, metadata: dict) -> None:
        self.events.append(("saved", path))

    @hookimpl
    def detlite_trial_finished(self, experiment_id: int, trial_id: int, state: str) -> None:
        self.events.append(("finished", state))


def test_event_hooks_reach_every_implementation() -> None:
    plugins = Plugins.empty()
    first, second = Recorder(), Recorder()
    plugins.add(first, "first")
    plugins.add(second, "second")
    plugins.trial_started(1, 2, {"lr": 0.1})
    plugins.checkpoint_saved("/tmp/ckpt", {"format": "x"})
    plugins.trial_finished(1, 2, "COMPLETED")
    expected = [("started", (1, 2, {"lr": 0.1})), ("saved", "/tmp/ckpt"), ("finished", "COMPLETED")]
    assert first.events == expected
    assert second.events == expected


class BrokenFrameworkPlugin:
    """Registers a framework whose modules are installed but whose adapter cannot load."""

    @hookimpl
    def detlite_register_frameworks(self, register: hookspecs.Register) -> None:
        register("broken", "collections:NoSuchAdapter")


def test_a_framework_that_fails_to_load_does_not_stop_the_others() -> None:
    from detlite.testing import FakeFrameworkPlugin, FakeTrial

    class Alien:
        pass

    plugins = Plugins.empty()
    plugins.add(BrokenFrameworkPlugin(), "broken")
    plugins.add(FakeFrameworkPlugin(), "fake")
    assert plugins.framework_for(FakeTrial).name == "fake"
    with pytest.raises(PluginError, match=r"broken failed to load \(.*NoSuchAdapter"):
        plugins.framework_for(Alien)
