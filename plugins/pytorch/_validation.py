"""Validation for the controller: evaluation mode, and reducing metrics over batches and ranks.

``evaluate_batch`` runs on every rank over its shard of the validation batches; each rank
reduces its batch values to a small partial result per metric, one ``all_gather_object``
collects them, and every rank combines them to the same metrics. ``evaluate_full_dataset``
runs on the chief over the whole, unsharded loader and its result is broadcast.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from detlite.pytorch._metrics import gather
from detlite.pytorch.data import data_length
from detlite.pytorch.reducer import Reducer, cross_slot, per_slot, to_jsonable

if TYPE_CHECKING:
    from detlite.pytorch.context import PyTorchTrialContext
    from detlite.pytorch.trial import PyTorchTrial

__all__ = ["evaluate_batches", "evaluate_full_dataset", "evaluating"]


@contextlib.contextmanager
def evaluating(context: PyTorchTrialContext) -> Iterator[None]:
    """Eval mode, no autograd, autocast if on, and no DDP buffer broadcasts.

    DDP broadcasts buffers at the start of a forward pass: a collective, which would hang
    when only the chief evaluates, or when a rank has no validation batch.
    """
    ddp = [m for m in context.models if isinstance(m, DistributedDataParallel)]
    saved = [m.require_forward_param_sync for m in ddp]
    for model in context.models:
        model.eval()
    dtype = context.autocast_dtype()
    try:
        for model in ddp:
            model.require_forward_param_sync = False
        with contextlib.ExitStack() as stack:
            stack.enter_context(torch.no_grad())
            if dtype is not None:
                stack.enter_context(torch.autocast(context.device.type, dtype=dtype))
            yield
    finally:
        for model, flag in zip(ddp, saved, strict=True):
            model.require_forward_param_sync = flag


def evaluate_batches(
    trial: PyTorchTrial,
    context: PyTorchTrialContext,
    loader: Any,
    max_batches: int | None,
    size: int,
    keep_outputs: bool,
) -> tuple[dict[str, Any], int, list[Any]]:
    """(metrics, records over all ranks, this rank's outputs if kept) of ``evaluate_batch``."""
    name = type(trial).__qualname__
    values: dict[str, list[Any]] = {}
    outputs: list[Any] = []
    num_inputs = 0
    batches = loader if max_batches is None else itertools.islice(loader, max_batches)
    for batch in batches:
        batch = context.to_device(batch)
        num_inputs += data_length(batch)
        out = trial.evaluate_batch(batch)
        if not isinstance(out, dict):
            raise TypeError(
                f"{name}.evaluate_batch() must return a dict of metrics, not {type(out).__name__}"
            )
        if keep_outputs:
            outputs.append(out)
        for metric, value in out.items():
            detached = value.detach() if isinstance(value, torch.Tensor) else value
            values.setdefault(metric, []).append(detached)
    # One small message per rank: reduce here, combine across ranks after. A rank may have
    # had no batches, so names are checked only once every rank's are known (the same
    # check everywhere, or one rank would raise while the others wait).
    local = reducers_for(trial, list(values), strict=False)
    partials = {metric: per_slot(vals, local[metric]) for metric, vals in values.items()}
    everyone = gather((partials, num_inputs), size)
    names = list(dict.fromkeys(metric for rank_partials, _ in everyone for metric in rank_partials))
    reducers = reducers_for(trial, names, strict=True)
    metrics = {
        metric: to_jsonable(
            cross_slot([p[metric] for p, _ in everyone if metric in p], reducers[metric])
        )
        for metric in names
    }
    return metrics, sum(count for _, count in everyone), outputs


def reducers_for(trial: PyTorchTrial, names: list[str], strict: bool) -> dict[str, Reducer]:
    """The Reducer of each metric, from ``trial.evaluation_reducer()``."""
    owner = type(trial).__qualname__
    chosen = trial.evaluation_reducer()
    if isinstance(chosen, Reducer):
        return dict.fromkeys(names, chosen)
    if isinstance(chosen, dict):
        bad = [k for k, v in chosen.items() if not isinstance(v, Reducer)]
        if bad:
            raise TypeError(f"{owner}.evaluation_reducer(): the values for {bad} are not Reducers")
        if strict and names and set(chosen) != set(names):
            raise ValueError(
                f"{owner}.evaluation_reducer() names the metrics {sorted(chosen)} but "
                f"evaluate_batch() returned {sorted(names)}; name each metric once"
            )
        return {metric: chosen.get(metric, Reducer.AVG) for metric in names}
    raise TypeError(
        f"{owner}.evaluation_reducer() must return a Reducer or a dict of metric "
        f"name -> Reducer, not {type(chosen).__name__}"
    )


def evaluate_full_dataset(
    trial: PyTorchTrial, loader: Any, max_batches: int | None, size: int
) -> tuple[dict[str, Any], int]:
    """The chief's ``evaluate_full_dataset`` (``loader`` is None elsewhere), on every rank."""
    result: list[Any] = [None, 0]
    if loader is not None:
        data: Any = loader
        if max_batches is not None and max_batches < len(loader):
            data = _Truncated(loader, max_batches)
        metrics = trial.evaluate_full_dataset(data)
        if not isinstance(metrics, dict):
            raise TypeError(
                f"{type(trial).__qualname__}.evaluate_full_dataset() must return a dict of "
                f"metrics, not {type(metrics).__name__}"
            )
        result = [to_jsonable(metrics), _records(loader, max_batches)]
    if size > 1:
        dist.broadcast_object_list(result, src=0)
    return dict(result[0]), int(result[1])


class _Truncated:
    """The first ``limit`` batches of a loader, for evaluate_full_dataset with max_batches."""

    def __init__(self, loader: Any, limit: int) -> None:
        self._loader = loader
        self._limit = limit

    def __iter__(self) -> Iterator[Any]:
        return itertools.islice(iter(self._loader), self._limit)

    def __len__(self) -> int:
        return min(self._limit, len(self._loader))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


def _records(loader: Any, max_batches: int | None) -> int:
    """How many records the first ``max_batches`` batches of a torch loader hold."""
    indices = loader.batch_sampler if loader.batch_sampler is not None else loader.sampler
    chosen = indices if max_batches is None else itertools.islice(indices, max_batches)
    if loader.batch_sampler is None:
        return sum(1 for _ in chosen)
    return sum(len(batch) for batch in chosen)
