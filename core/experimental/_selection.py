"""Which checkpoint is best: the ranking rules shared by experiment and trial references.

Decisions (API.md improvements 6, 7 and 12):

- Only COMPLETED checkpoints are candidates (the server is asked for them and the answer is
  filtered again here); ranking also needs validation metrics, so checkpoints without any are
  left out, as the reference's ``validation_states=2`` filter did.
- The metric and its direction: with no ``sort_by``, both come from the experiment config's
  ``searcher`` (``metric``, ``smaller_is_better``, default true), and a ``smaller_is_better``
  given alone is ignored with a warning, as documented by the reference. With ``sort_by`` but
  no ``smaller_is_better``, the direction is the config's (the reference's code fell back to
  larger-is-better, against its own documentation).
- Ties are broken the same way in both directions: lower trial id first, then the checkpoint
  with more batches trained. The reference's ``(value, trialId)`` key flipped the trial order
  with the direction.
- A checkpoint whose validation lacks the metric (or has a non-number) cannot be ranked and
  is left out; when no candidate has it, ``MetricNotFound`` lists the metrics there are.

The errors keep the reference's exception types as second bases, so code written against
Determined that caught ``AssertionError``, ``KeyError`` or ``ValueError`` still works, while
the messages say what was wrong and ``except DetliteError`` catches them all.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from detlite.api.enums import CheckpointState
from detlite.errors import InvalidCheckpointSelection, MetricNotFound, NoCheckpointFound

__all__ = [
    "completed",
    "metric_value",
    "rank",
    "resolve_metric",
    "searcher_metric",
]

JSON = dict[str, Any]


def completed(checkpoints: Iterable[JSON]) -> list[JSON]:
    """The COMPLETED ones, whatever the server's filters did (improvement 7)."""
    return [c for c in checkpoints if _state(c.get("state")) is CheckpointState.COMPLETED]


def _state(value: Any) -> CheckpointState | None:
    try:
        return CheckpointState.parse(value)
    except (ValueError, TypeError):
        return None


def validation_metrics(checkpoint: Mapping[str, Any]) -> dict[str, Any] | None:
    metrics = checkpoint.get("metrics")
    if not isinstance(metrics, Mapping):
        return None
    values = metrics.get("validationMetrics", metrics.get("validation_metrics"))
    return dict(values) if isinstance(values, Mapping) else None


def metric_value(checkpoint: Mapping[str, Any], metric: str) -> float | None:
    """The checkpoint's validation value of ``metric``, or None if it has none (or NaN)."""
    value = (validation_metrics(checkpoint) or {}).get(metric)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return None if math.isnan(value) else float(value)


def searcher_metric(config: Mapping[str, Any] | None) -> tuple[str | None, bool]:
    """``(searcher.metric, searcher.smaller_is_better)`` of an experiment config."""
    searcher = (config or {}).get("searcher") or {}
    metric = searcher.get("metric")
    smaller = searcher.get("smaller_is_better", True)
    return (str(metric) if metric else None), bool(True if smaller is None else smaller)


def resolve_metric(
    sort_by: str | None,
    smaller_is_better: bool | None,
    config: Callable[[], Mapping[str, Any] | None],
    what: str,
) -> tuple[str, bool]:
    """The metric to rank by and whether smaller is better (see the module docstring).

    ``config`` is called only when the experiment config is needed; ``what`` names the
    experiment or trial in messages.
    """
    if not sort_by:
        if smaller_is_better is not None:
            warnings.warn(
                "smaller_is_better is ignored without sort_by: the experiment config's "
                "searcher.metric and searcher.smaller_is_better are used",
                UserWarning,
                stacklevel=4,
            )
        metric, smaller = searcher_metric(config())
        if metric is None:
            raise InvalidCheckpointSelection(
                f"{what}: the experiment config names no searcher.metric; pass sort_by="
            )
        return metric, smaller
    if smaller_is_better is None:
        return sort_by, searcher_metric(config())[1]
    return sort_by, bool(smaller_is_better)


def rank(
    checkpoints: Iterable[JSON], metric: str, smaller_is_better: bool, what: str
) -> list[JSON]:
    """Checkpoints with validation metrics, best first by ``metric`` (ties as documented).

    Raises ``NoCheckpointFound`` when none has validation metrics and ``MetricNotFound``
    when none has ``metric``.
    """
    validated = [c for c in checkpoints if validation_metrics(c) is not None]
    if not validated:
        raise NoCheckpointFound(f"No checkpoint found for {what}: none has validation metrics")
    scored = [(metric_value(c, metric), c) for c in validated]
    usable = [(v, c) for v, c in scored if v is not None]
    if not usable:
        names = sorted({k for c in validated for k in validation_metrics(c) or {}})
        raise MetricNotFound(
            f"no checkpoint of {what} has the validation metric {metric!r}; "
            f"the metrics are: {', '.join(names) or 'none'}"
        )
    sign = 1.0 if smaller_is_better else -1.0

    def key(item: tuple[float, JSON]) -> tuple[float, int, int]:
        value, c = item
        return sign * value, int(c.get("trialId") or 0), -int(c.get("batchNumber") or 0)

    return [c for _, c in sorted(usable, key=key)]
