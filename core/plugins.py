"""Finding plugins and calling their hooks, through one small typed facade.

The core never calls ``pm.hook.*`` directly: it asks a ``Plugins`` object for frameworks,
checkpoint formats, storage backends, resource managers and search methods, and tells it
about events. ``Plugins.discover()`` builds a fresh plugin manager from the ``detlite``
entry points every time (nothing loads at import). Each entry point loads, and each
plugin registers, inside its own ``try``: a broken plugin is recorded in ``failures`` with
its name and distribution, and the others go on. ``DETLITE_STRICT_PLUGINS=1`` re-raises
instead; ``DETLITE_DISABLE_PLUGINS=a,b`` skips plugins by entry-point name.

Reading the installed distributions' metadata is the slow part of discovery (every
``entry_points.txt`` on ``sys.path``, and a ``METADATA`` parse per plugin for its name and
version), so a process reads each ``sys.path`` directory once and keeps what it found
until that directory changes (its modification time, the rule ``importlib.metadata``
itself caches by): a trial worker forked from a warm parent, or a second trial in one
process, discovers plugins without touching the disk beyond one ``stat`` per directory.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import importlib.util
import os
import re
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pluggy

from detlite import hookspecs
from detlite.errors import FrameworkUnavailable, PluginError, UnknownCheckpointFormat

if TYPE_CHECKING:
    import click
    from pydantic import BaseModel

    from detlite.config import ExperimentConfig
    from detlite.interfaces import (
        CheckpointFormat,
        FrameworkAdapter,
        ResourceManager,
        SearchMethod,
        StorageBackend,
    )

__all__ = [
    "ENTRY_POINT_GROUP",
    "PluginFailure",
    "PluginInfo",
    "Plugins",
    "Registration",
    "get_plugins",
]

ENTRY_POINT_GROUP = "detlite"
KINDS = tuple(hookspecs.REGISTRATION_HOOKS)


@dataclass(frozen=True)
class Registration:
    """One thing a plugin registered: a framework, a format, a backend, a searcher..."""

    kind: str
    name: str
    target: object  # the object, or "package.module:Attribute"
    plugin: str
    requires: tuple[str, ...] = ()
    install: str | None = None
    description: str = ""

    def missing(self) -> list[str]:
        """The required top-level modules that are not installed (found without importing)."""
        return [m for m in self.requires if importlib.util.find_spec(m) is None]

    def is_available(self) -> bool:
        return not self.missing()

    def load(self) -> Any:
        """Import (if needed) and return the registered object."""
        missing = self.missing()
        if missing:
            install = self.install or f"pip install {' '.join(missing)}"
            raise FrameworkUnavailable(self.name, missing, install)
        if not isinstance(self.target, str):
            return self.target
        module_name, _, attr = self.target.partition(":")
        try:
            obj: Any = importlib.import_module(module_name)
            for part in filter(None, attr.split(".")):
                obj = getattr(obj, part)
        except Exception as exc:
            raise PluginError(
                f"plugin {self.plugin!r}: cannot load {self.kind} {self.name!r} "
                f"from {self.target!r}: {exc}"
            ) from exc
        return obj


@dataclass(frozen=True)
class PluginInfo:
    """A plugin that loaded: its entry-point name, module and distribution."""

    name: str
    module: str
    distribution: str | None = None
    version: str | None = None


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that failed to load or register, and why."""

    name: str
    distribution: str | None
    error: str
    stage: str  # "load", "register" or "conflict"


@dataclass
class Plugins:
    """The typed facade over pluggy that the rest of detlite uses."""

    pm: pluggy.PluginManager
    infos: list[PluginInfo] = field(default_factory=list)
    failures: list[PluginFailure] = field(default_factory=list)
    _registry: dict[str, dict[str, Registration]] | None = None
    _adapters: dict[str, FrameworkAdapter] = field(default_factory=dict)

    # -- construction -------------------------------------------------------------------

    @classmethod
    def empty(cls) -> Plugins:
        """A manager with the hookspecs and no plugins (tests register their own)."""
        pm = pluggy.PluginManager("detlite")
        pm.add_hookspecs(hookspecs)
        return cls(pm)

    @classmethod
    def discover(cls) -> Plugins:
        """A fresh manager with every plugin of the ``detlite`` entry-point group."""
        plugins = cls.empty()
        disabled = {n.strip() for n in os.environ.get("DETLITE_DISABLE_PLUGINS", "").split(",")}
        for found in sorted(_entry_points(), key=lambda f: f.entry_point.name):
            ep, dist = found.entry_point, found.distribution
            if ep.name in disabled:
                continue
            try:
                module = ep.load()
            except Exception as exc:
                plugins._fail(ep.name, dist, exc, "load")
                continue
            plugins.add(module, ep.name, distribution=dist, version=found.version)
        return plugins

    def add(
        self,
        plugin: object,
        name: str,
        *,
        distribution: str | None = None,
        version: str | None = None,
    ) -> None:
        """Register a plugin object or module under ``name``."""
        try:
            self.pm.register(plugin, name=name)
        except Exception as exc:
            self._fail(name, distribution, exc, "load")
            return
        module = getattr(plugin, "__name__", type(plugin).__qualname__)
        self.infos.append(PluginInfo(name, module, distribution, version))
        self._registry = None
        self._adapters.clear()

    def _fail(self, name: str, dist: str | None, exc: BaseException, stage: str) -> None:
        if _strict() and stage != "conflict":
            raise exc
        self.failures.append(PluginFailure(name, dist, f"{type(exc).__name__}: {exc}", stage))

    def info(self, name: str) -> PluginInfo | None:
        return next((i for i in self.infos if i.name == name), None)

    # -- registrations ------------------------------------------------------------------

    def registrations(self, kind: str) -> dict[str, Registration]:
        """Everything registered of one kind, by name, in plugin order."""
        if kind not in KINDS:
            raise ValueError(f"unknown registration kind {kind!r}; expected one of {KINDS}")
        if self._registry is None:
            self._registry = self._collect()
        return self._registry[kind]

    def _collect(self) -> dict[str, dict[str, Registration]]:
        registry: dict[str, dict[str, Registration]] = {k: {} for k in KINDS}
        for kind, spec in hookspecs.REGISTRATION_HOOKS.items():
            hook = getattr(self.pm.hook, spec.__name__)
            # get_hookimpls() lists implementations in registration order (pluggy *calls*
            # them in reverse); registering in plugin order makes the first one win.
            for impl in hook.get_hookimpls():
                self._register_one(kind, impl, registry[kind])
        return registry

    def _register_one(self, kind: str, impl: Any, into: dict[str, Registration]) -> None:
        plugin_name: str = impl.plugin_name
        staged: list[Registration] = []

        def register(
            name: str,
            target: object,
            *,
            requires: tuple[str, ...] = (),
            install: str | None = None,
            description: str = "",
        ) -> None:
            if not isinstance(name, str) or not name:
                raise PluginError(f"registered {kind} names must be non-empty strings: {name!r}")
            staged.append(
                Registration(kind, name, target, plugin_name, tuple(requires), install, description)
            )

        info = self.info(plugin_name)
        dist = info.distribution if info else None
        try:
            impl.function(register=register)
        except Exception as exc:
            self._fail(plugin_name, dist, exc, "register")
            return
        for reg in staged:
            if reg.name in into:
                first = into[reg.name].plugin
                conflict = PluginError(
                    f"{kind} {reg.name!r} is already registered by plugin {first!r}; "
                    "the first registration is kept"
                )
                self._fail(plugin_name, dist, conflict, "conflict")
                continue
            into[reg.name] = reg

    def all_registrations(self) -> Iterator[Registration]:
        for kind in KINDS:
            yield from self.registrations(kind).values()

    def _load(self, kind: str, name: str) -> Any:
        regs = self.registrations(kind)
        if name not in regs:
            known = ", ".join(regs) or "none"
            raise PluginError(f"no {kind.replace('_', ' ')} named {name!r}; installed: {known}")
        return regs[name].load()

    # -- the typed lookups the core uses ------------------------------------------------

    def framework(self, name: str) -> FrameworkAdapter:
        """The adapter registered as ``name`` (FrameworkUnavailable if not installed)."""
        if name not in self._adapters:
            self._adapters[name] = self._load("framework", name)()
        return self._adapters[name]

    def framework_for(self, trial_class: type) -> FrameworkAdapter:
        """The adapter that owns ``trial_class``; only installed frameworks are asked.

        Frameworks that cost nothing to ask come first, in plugin order: those already
        imported (a trial class of theirs exists, so their modules are loaded), then the
        others. Asking loads a framework's adapter and the framework with it, and a fake
        trial must not import torch, nor a PyTorch trial TensorFlow, only to hear "no".
        """
        broken: list[str] = []
        regs = self.registrations("framework")
        cheap = [name for name, reg in regs.items() if self._imported(reg)]
        for name in [*cheap, *(name for name in regs if name not in cheap)]:
            reg = regs[name]
            if not reg.is_available():
                continue
            # One plugin that fails to load must not stop the others from running their trials.
            try:
                adapter = self.framework(name)
            except PluginError as exc:
                broken.append(f"; {name} failed to load ({exc})")
                continue
            if adapter.owns(trial_class):
                return adapter
        unavailable = [r for r in self.registrations("framework").values() if not r.is_available()]
        hint = "".join(
            f"; {r.name} is not installed ({r.install or 'pip install ' + ' '.join(r.missing())})"
            for r in unavailable
        ) + "".join(broken)
        raise PluginError(
            f"no installed framework plugin runs {trial_class.__module__}."
            f"{trial_class.__qualname__}{hint}"
        )

    def _imported(self, reg: Registration) -> bool:
        """Whether loading ``reg`` imports nothing heavy: its adapter is built already, or
        the modules it requires (or, requiring none, its own module) are imported."""
        if reg.name in self._adapters or not isinstance(reg.target, str):
            return True
        modules = reg.requires or (reg.target.partition(":")[0],)
        return all(module in sys.modules for module in modules)

    def checkpoint_format(self, name: str) -> CheckpointFormat:
        regs = self.registrations("checkpoint_format")
        if name not in regs:
            known = ", ".join(regs) or "none"
            raise UnknownCheckpointFormat(
                f"no plugin reads checkpoint format {name!r} (installed formats: {known}); "
                "install the plugin that wrote it"
            )
        fmt: CheckpointFormat = regs[name].load()()
        return fmt

    def storage_backend(self, name: str) -> type[StorageBackend]:
        cls: type[StorageBackend] = self._load("storage", name)
        return cls

    def resource_manager(self, name: str) -> type[ResourceManager]:
        cls: type[ResourceManager] = self._load("resource_manager", name)
        return cls

    def search_method(self, name: str) -> type[SearchMethod]:
        cls: type[SearchMethod] = self._load("searcher", name)
        return cls

    def searcher_config_models(
        self, *, exclude: tuple[str, ...] = ()
    ) -> dict[str, type[BaseModel]]:
        """The config models of plugin search methods, by name. A searcher whose plugin's
        requirements are missing gets a model that refuses every section with the
        command that installs them, so a config naming it says what to do."""
        models: dict[str, type[BaseModel]] = {}
        for name, reg in self.registrations("searcher").items():
            if name in exclude:
                continue
            if not reg.is_available():
                models[name] = _missing_searcher(reg)
                continue
            try:
                models[name] = reg.load().config_model
            except Exception as exc:  # a broken searcher must not break config loading
                self._fail(reg.plugin, None, exc, "register")
        return models

    def load_config(self, source: Any) -> ExperimentConfig:
        """``detlite.config.load_config`` knowing every installed plugin's search method."""
        from detlite.config import SEARCHER_NAMES, load_config

        return load_config(source, searchers=self.searcher_config_models(exclude=SEARCHER_NAMES))

    def make_search_method(self, config: ExperimentConfig) -> SearchMethod:
        """The search method a validated config names: built in, or from a plugin."""
        from detlite.searcher import BUILTIN_SEARCHERS, make_search_method

        if config.searcher_name in BUILTIN_SEARCHERS:
            return make_search_method(config.searcher)
        cls: Any = self.search_method(config.searcher_name)
        method: SearchMethod = cls(config.searcher)
        return method

    # -- everything else ----------------------------------------------------------------

    def add_commands(self, cli: click.Group) -> None:
        for impl in self.pm.hook.detlite_register_commands.get_hookimpls():
            try:
                impl.function(cli=cli)
            except Exception as exc:
                info = self.info(impl.plugin_name)
                self._fail(impl.plugin_name, info.distribution if info else None, exc, "register")

    def trial_started(
        self, experiment_id: int | None, trial_id: int | None, hparams: Mapping[str, Any]
    ) -> None:
        self.pm.hook.detlite_trial_started(
            experiment_id=experiment_id, trial_id=trial_id, hparams=hparams
        )

    def checkpoint_saved(self, path: str, metadata: Mapping[str, Any]) -> None:
        self.pm.hook.detlite_checkpoint_saved(path=path, metadata=metadata)

    def trial_finished(self, experiment_id: int | None, trial_id: int | None, state: str) -> None:
        self.pm.hook.detlite_trial_finished(
            experiment_id=experiment_id, trial_id=trial_id, state=state
        )


@dataclass(frozen=True)
class _Found:
    """An entry point of the ``detlite`` group, with its distribution's name and version."""

    entry_point: importlib.metadata.EntryPoint
    distribution: str | None
    version: str | None


#: One scan per sys.path directory: its modification time when read, and its distributions
#: in order, each as (normalized name, its ``detlite`` entry points).
_scans: dict[str, tuple[int, list[tuple[str, tuple[_Found, ...]]]]] = {}


def _scan(entry: str) -> list[tuple[str, tuple[_Found, ...]]]:
    """The distributions one ``sys.path`` entry holds, read again only once it changed."""
    try:
        where = os.path.abspath(entry or os.curdir)  # "" is the working directory, now
        mtime = os.stat(where).st_mtime_ns
    except OSError:  # not there (yet), or the working directory was removed
        return []
    cached = _scans.get(where)
    if cached is not None and cached[0] == mtime:
        return cached[1]
    found: list[tuple[str, tuple[_Found, ...]]] = []
    for dist in importlib.metadata.distributions(path=[where]):
        # Parsing is dearer than reading: only files that name the group are parsed.
        text = dist.read_text("entry_points.txt") or ""
        eps: tuple[importlib.metadata.EntryPoint, ...] = ()
        if ENTRY_POINT_GROUP in text:
            eps = tuple(dist.entry_points.select(group=ENTRY_POINT_GROUP))
        name = version = None
        if eps:
            name, version = dist.metadata["Name"], dist.metadata["Version"]
        found.append((_dist_key(dist), tuple(_Found(ep, name, version) for ep in eps)))
    _scans[where] = (mtime, found)
    return found


def _dist_key(dist: importlib.metadata.Distribution) -> str:
    # What importlib.metadata.entry_points() tells installs of one distribution apart by;
    # a path distribution knows it from its directory's name, without reading METADATA.
    key = getattr(dist, "_normalized_name", None)
    if isinstance(key, str):
        return key
    return re.sub(r"[-_.]+", "_", str(dist.metadata["Name"] or "")).lower()


def _entry_points() -> list[_Found]:
    """The ``detlite`` entry points, as ``importlib.metadata.entry_points`` finds them: the
    first install of each distribution on ``sys.path``, and the first entry point of each
    name (an editable install and a wheel of one distribution can both list it)."""
    dists: set[str] = set()
    seen: dict[str, _Found] = {}
    for entry in list(sys.path):
        if not isinstance(entry, str):
            continue
        for key, eps in _scan(entry):
            if key in dists:
                continue
            dists.add(key)
            for found in eps:
                seen.setdefault(found.entry_point.name, found)
    return list(seen.values())


def _strict() -> bool:
    return os.environ.get("DETLITE_STRICT_PLUGINS", "").lower() in {"1", "true", "yes"}


@functools.lru_cache(maxsize=1)
def get_plugins() -> Plugins:
    """The process-wide plugins, discovered on first use. Tests build their own."""
    return Plugins.discover()


def _missing_searcher(reg: Registration) -> type[BaseModel]:
    """A searcher config model that refuses any section: its plugin's modules are missing."""
    install = reg.install or f"pip install {' '.join(reg.missing())}"
    return _refusing_model(
        f"searcher {reg.name!r} needs {', '.join(reg.missing())}, which is not installed: {install}"
    )


@functools.cache
def _refusing_model(message: str) -> type[BaseModel]:
    """One model class per message: configs are cached by the models they were validated
    with (``detlite.config._kept``), which a new class at every call would defeat."""
    from pydantic import BaseModel, model_validator

    class MissingSearcher(BaseModel):
        name: str

        @model_validator(mode="before")
        @classmethod
        def refuse(cls, data: Any) -> Any:
            raise ValueError(message)

    return MissingSearcher
