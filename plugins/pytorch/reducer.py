"""Reducing metrics over batches and over ranks: ``Reducer`` and ``MetricReducer``.

Built-in reducers (``PyTorchTrial.evaluation_reducer``) work in two stages, so that each
rank sends only a small summary: ``per_slot`` turns one rank's batch values into a
picklable partial result, ``cross_slot`` combines the partial results of every rank.
``AVG`` is the mean over every batch of every rank (Determined's per-rank means weighted by
per-rank batch counts), ``SUM`` the total, ``MAX``/``MIN`` the extremes. Array-valued
metrics reduce element-wise.

A ``MetricReducer`` (``context.wrap_reducer``) does the same with the user's own
``per_slot_reduce`` and ``cross_slot_reduce``; a plain function is wrapped as one that
collects every ``update(value)`` and applies the function to all values of all ranks.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["MetricReducer", "Reducer", "cross_slot", "per_slot", "to_jsonable"]


class Reducer(enum.Enum):
    """How a validation metric is reduced over batches and ranks."""

    AVG = 1
    SUM = 2
    MAX = 3
    MIN = 4


class MetricReducer(abc.ABC):
    """A custom reducer: fed by the trial, reduced per rank, then across ranks.

    ``reset`` runs before every training or validation workload it is wrapped for.
    ``per_slot_reduce`` must return something picklable; ``cross_slot_reduce`` receives one
    per rank and returns the metric's value (or, if wrapped without a name, a dict of
    metric values).
    """

    @abc.abstractmethod
    def reset(self) -> None: ...

    @abc.abstractmethod
    def per_slot_reduce(self) -> Any: ...

    @abc.abstractmethod
    def cross_slot_reduce(self, per_slot_metrics: Sequence[Any]) -> Any: ...


class _FunctionReducer(MetricReducer):
    """A plain function as a reducer: ``update(v)`` collects, the function reduces all."""

    def __init__(self, fn: Callable[[list[Any]], Any]) -> None:
        self.fn = fn
        self.values: list[Any] = []

    def update(self, value: Any) -> None:
        self.values.append(value)

    def reset(self) -> None:
        self.values = []

    def per_slot_reduce(self) -> Any:
        return self.values

    def cross_slot_reduce(self, per_slot_metrics: Sequence[Any]) -> Any:
        return self.fn([v for values in per_slot_metrics for v in values])


def as_metric_reducer(reducer: MetricReducer | Callable[[list[Any]], Any]) -> MetricReducer:
    if isinstance(reducer, MetricReducer):
        return reducer
    if callable(reducer):
        return _FunctionReducer(reducer)
    raise TypeError(
        f"wrap_reducer() takes a MetricReducer or a function of a list of values, "
        f"not {type(reducer).__name__}"
    )


def _stack(values: Sequence[Any]) -> np.ndarray:
    """Batch values as one float64 array, shape (batches, *metric_shape)."""
    if all(isinstance(v, torch.Tensor) for v in values):
        try:
            # One host transfer for the whole workload instead of one per batch.
            stacked = torch.stack([v.detach() for v in values]).to(torch.float64)
            return np.asarray(stacked.cpu().numpy())
        except RuntimeError:
            pass  # shapes or devices differ: convert value by value below
    rows = [
        v.detach().to(torch.float64).cpu().numpy() if isinstance(v, torch.Tensor) else v
        for v in values
    ]
    return np.asarray(rows, dtype=np.float64)


def per_slot(values: Sequence[Any], reducer: Reducer) -> tuple[Any, int]:
    """One rank's partial result for ``reducer``: (partial value, number of batches)."""
    if not values:
        return None, 0
    array = _stack(values)
    if reducer is Reducer.AVG or reducer is Reducer.SUM:
        return array.sum(axis=0), len(values)
    if reducer is Reducer.MAX:
        return array.max(axis=0), len(values)
    if reducer is Reducer.MIN:
        return array.min(axis=0), len(values)
    raise TypeError(f"unknown reducer {reducer!r}; use detlite.pytorch.Reducer")


def cross_slot(partials: Sequence[tuple[Any, int]], reducer: Reducer) -> Any:
    """Combine every rank's ``per_slot`` result into the metric's value."""
    present = [(value, count) for value, count in partials if count]
    if not present:
        return None
    values = [np.asarray(value) for value, _ in present]
    if reducer is Reducer.AVG:
        return np.sum(values, axis=0) / sum(count for _, count in present)
    if reducer is Reducer.SUM:
        return np.sum(values, axis=0)
    if reducer is Reducer.MAX:
        return np.max(values, axis=0)
    return np.min(values, axis=0)


def to_jsonable(value: Any) -> Any:
    """Tensors and numpy values as plain Python numbers and lists (metrics go out as JSON)."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value.item() if value.ndim == 0 else value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    return value
