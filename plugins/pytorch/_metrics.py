"""Turning what ``train_batch`` returned into a workload's metrics, once per ``train()``.

The training loop keeps each metric's detached per-batch values (tensors stay on the
device). Here they become one ``(batches, metrics)`` float64 matrix on the device; with
several ranks it is averaged by one ``all_reduce``; then one host transfer gives both the
per-batch rows and their means.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from detlite.pytorch.reducer import MetricReducer, to_jsonable

__all__ = ["as_metrics", "gather", "merge_reduced", "reduce_custom", "training_metrics"]


def as_metrics(out: Any, trial_class: type) -> dict[str, Any]:
    """``train_batch``'s result as a dict: a bare tensor is the loss."""
    if isinstance(out, dict):
        return out
    if isinstance(out, torch.Tensor):
        return {"loss": out}
    raise TypeError(
        f"{trial_class.__qualname__}.train_batch() must return a dict of metrics or a loss "
        f"tensor, not {type(out).__name__}"
    )


def _scalar(value: Any, name: str) -> float:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise TypeError(
                f"training metric {name!r} must be a scalar, got a tensor of shape "
                f"{tuple(value.shape)}"
            )
        return float(value.item())
    try:
        return float(np.asarray(value, dtype=np.float64).item())
    except (TypeError, ValueError):
        raise TypeError(
            f"training metric {name!r} must be a number or a scalar tensor, "
            f"not {type(value).__name__}"
        ) from None


def _column(values: list[Any], name: str, device: torch.device) -> torch.Tensor:
    """One metric's values over the batches as a float64 vector on ``device``."""
    if all(isinstance(v, torch.Tensor) for v in values):
        try:
            stacked = torch.stack(values)
        except RuntimeError:  # shapes or devices differ: go value by value
            pass
        else:
            if stacked.numel() != len(values):
                raise TypeError(
                    f"training metric {name!r} must be a scalar, got a tensor of shape "
                    f"{tuple(values[0].shape)}"
                )
            return stacked.reshape(len(values)).to(device=device, dtype=torch.float64)
    floats = [_scalar(v, name) for v in values]
    return torch.tensor(floats, dtype=torch.float64, device=device)


def training_metrics(
    values: dict[str, list[Any]], num_batches: int, device: torch.device, size: int
) -> tuple[dict[str, float], list[dict[str, float]]]:
    """(means, per-batch rows) of the collected metrics, averaged over ``size`` ranks."""
    names = list(values)
    for name in names:
        if len(values[name]) != num_batches:
            raise ValueError(
                f"train_batch() returned the metric {name!r} in {len(values[name])} of "
                f"{num_batches} batches; return the same metrics from every batch"
            )
    if not names or num_batches == 0:
        return {}, [{} for _ in range(num_batches)]
    matrix = torch.stack([_column(values[name], name, device) for name in names], dim=1)
    if size > 1:
        # Every rank trained the same number of batches and returned the same names, so
        # one collective averages every batch's metrics over the ranks.
        dist.all_reduce(matrix)
        matrix /= size
    # Means first, then each metric's column: one transfer for everything.
    flat = torch.cat([matrix.mean(dim=0), matrix.t().reshape(-1)]).tolist()
    count = len(names)
    means = dict(zip(names, flat[:count], strict=True))
    columns = [flat[count + i * num_batches : count + (i + 1) * num_batches] for i in range(count)]
    if count == 1:
        (name,) = names
        rows = [{name: value} for value in columns[0]]
    else:
        rows = [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]
    return means, rows


def gather(obj: Any, size: int) -> list[Any]:
    """``obj`` from every rank, in rank order (just ``[obj]`` for one process)."""
    if size == 1:
        return [obj]
    gathered: list[Any] = [None] * size
    dist.all_gather_object(gathered, obj)
    return gathered


def merge_reduced(metrics: dict[str, Any], name: str | None, value: Any, owner: str) -> None:
    """Add a reducer's result: under ``name``, or a dict of metrics when unnamed."""
    if name is not None:
        metrics[name] = to_jsonable(value)
        return
    if not isinstance(value, dict):
        raise TypeError(
            f"{owner}: a reducer wrapped without a name must return a dict of metrics from "
            f"cross_slot_reduce(), not {type(value).__name__}"
        )
    metrics.update(to_jsonable(value))


def reduce_custom(
    reducers: Sequence[tuple[str | None, MetricReducer]],
    metrics: dict[str, Any],
    size: int,
    owner: str,
) -> None:
    """Reduce the wrapped MetricReducers over ranks (one gather) into ``metrics``."""
    if not reducers:
        return
    partials = gather([reducer.per_slot_reduce() for _, reducer in reducers], size)
    for index, (name, reducer) in enumerate(reducers):
        value = reducer.cross_slot_reduce([rank_partials[index] for rank_partials in partials])
        merge_reduced(metrics, name, value, owner)
