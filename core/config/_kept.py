"""Validated configs kept by their exact input, so that a process validates each config once.

A trial worker forked from a parent that already validated its experiment's config, and the
master, which validates an experiment's config at every launch, then skip the pydantic walk
(``validate_config`` looks here first).

The key is the input's ``marshal`` serialization (format 2, which has no back-references, so
equal inputs give equal bytes) with the plugin searcher models passed beside it. ``marshal``
exists only for built-in types and keeps them apart exactly (``True`` from ``1``, ``1.0``
from ``1``, a tuple from a list, ``{1: ...}`` from ``{"1": ...}``); it refuses any subclass
or other object (a ``det.Double``, a model instance), and such inputs are validated every
time. Validation is a pure function of what the key holds. Failures are not kept.

Every caller gets its own copy, so that no trial can change another's config. The models
are frozen but their lists and dicts are not (``data``, ``labels``, a constant's value...):
a copy shares only the models that hold nothing mutable and rebuilds the rest, which costs
a fraction of validating again. What is kept is such a copy too, so it shares nothing
mutable with the caller whose input it was validated from.
"""

from __future__ import annotations

import copy
import marshal
import os
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeAlias

from pydantic import BaseModel

if TYPE_CHECKING:
    from detlite.config.experiment import ExperimentConfig

__all__ = ["MAX_KEPT", "Key", "clear", "find", "keep", "key_of"]

#: How many validated configs a process keeps (the least recently used goes first).
MAX_KEPT = 64

Key: TypeAlias = tuple[bytes, tuple[tuple[str, type[BaseModel]], ...]]

_IMMUTABLE = frozenset({str, int, float, complex, bool, bytes, type(None)})
_lock = threading.Lock()
#: key -> (a private copy of the config, the ids of its parts that hold nothing mutable)
_kept: OrderedDict[Key, tuple[ExperimentConfig, frozenset[int]]] = OrderedDict()


def _new_lock_in_child() -> None:
    # A worker forked while another thread of its parent held the lock would wait forever.
    global _lock
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_lock_in_child)


def key_of(data: Any, searchers: Mapping[str, type[BaseModel]] | None) -> Key | None:
    """The key of one validation, or None when its input is not plain built-in data."""
    try:
        raw = marshal.dumps(data, 2)
    except (ValueError, TypeError):  # another type, or nested beyond marshal's depth
        return None
    key: Key = (raw, tuple(searchers.items()) if searchers else ())
    try:
        hash(key)
    except TypeError:  # a searchers mapping holding something other than model classes
        return None
    return key


def find(key: Key) -> ExperimentConfig | None:
    """A copy of the config validated under ``key``, if one is kept."""
    with _lock:
        found = _kept.get(key)
        if found is None:
            return None
        _kept.move_to_end(key)
    config, shared = found
    fresh: ExperimentConfig = _fresh(config, shared)
    return fresh


def keep(key: Key, config: ExperimentConfig) -> None:
    """Keep a private copy of ``config``, validated under ``key``."""
    shared: set[int] = set()
    _holds_nothing_mutable(config, shared)
    private: ExperimentConfig = _fresh(config, frozenset(shared))
    with _lock:
        _kept[key] = (private, frozenset(shared))
        _kept.move_to_end(key)
        while len(_kept) > MAX_KEPT:
            _kept.popitem(last=False)


def clear() -> None:
    """Forget every kept config."""
    with _lock:
        _kept.clear()


def _holds_nothing_mutable(value: Any, shared: set[int]) -> bool:
    """Whether ``value`` holds nothing mutable; adds the ids of such models to ``shared``."""
    kind = type(value)
    if kind in _IMMUTABLE:
        return True
    if kind is tuple or kind is frozenset:
        return all([_holds_nothing_mutable(item, shared) for item in value])
    if isinstance(value, BaseModel):
        # Every part is visited (no short cut) so that frozen models deeper down are found.
        parts = all([_holds_nothing_mutable(item, shared) for item in value.__dict__.values()])
        if parts and _plain_frozen(value):
            shared.add(id(value))
            return True
        return False
    if kind is dict:
        for item in value.values():
            _holds_nothing_mutable(item, shared)
    elif kind is list:
        for item in value:
            _holds_nothing_mutable(item, shared)
    return False


def _plain_frozen(model: BaseModel) -> bool:
    """A frozen model whose fields are all it holds (no private attributes, no extras)."""
    return bool(
        model.model_config.get("frozen")
        and not model.__pydantic_private__
        and not model.__pydantic_extra__
    )


def _fresh(value: Any, shared: frozenset[int]) -> Any:
    """``value`` with everything mutable in it rebuilt; the ``shared`` models are reused."""
    kind = type(value)
    if kind in _IMMUTABLE or id(value) in shared:
        return value
    if kind is dict:
        return {key: _fresh(item, shared) for key, item in value.items()}
    if kind is list:
        return [_fresh(item, shared) for item in value]
    if kind is tuple:
        return tuple(_fresh(item, shared) for item in value)
    if isinstance(value, BaseModel) and not value.__pydantic_private__:
        # __copy__ keeps what pydantic records beside the fields (which fields were set),
        # so the copy is what validating the input again would have given.
        rebuilt = value.__copy__()
        rebuilt.__dict__.update(
            {name: _fresh(item, shared) for name, item in value.__dict__.items()}
        )
        if value.__pydantic_extra__:
            object.__setattr__(
                rebuilt, "__pydantic_extra__", copy.deepcopy(value.__pydantic_extra__)
            )
        return rebuilt
    return copy.deepcopy(value)
