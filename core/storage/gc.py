"""Checkpoint garbage collection: which checkpoints a storage's GC counts let go.

A pure function over plain records; the master applies its answer (delete the files through
the StorageBackend, then mark the rows DELETED) after a trial ends, when the counts change,
and, with every count at 0, when an experiment is deleted.

The rule is Determined's (section 4.1 of the spec): a COMPLETED checkpoint is deleted when

- its newest-first rank in its trial, by batches trained, is > ``save_trial_latest``, and
- its experiment-wide rank by the searcher metric is > ``save_experiment_best`` and its
  in-trial rank by the metric is > ``save_trial_best``, or it has no metric, and
- no trial warm-starts from it.

That is, the union of the three keep sets (and every warm-start source) survives.

Choices the spec leaves open, made explicit:

- Ranks are taken among COMPLETED checkpoints only. A checkpoint still uploading (ACTIVE)
  or failed (ERROR) must not take a "latest" slot and push out the last good one, and
  DELETED rows no longer count. Other states are never returned.
- A metric of None or NaN is "no metric": such a checkpoint is kept only as a latest one or
  as a warm-start source. NaN has no order, so ranking it would be arbitrary.
- Ties are broken deterministically. By metric: equal values rank the checkpoint with more
  batches first (the newer one is the better one to resume from), then the smaller uuid.
  By recency: equal batch counts rank the smaller uuid first. The answer therefore never
  depends on the order of the input.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Collection, Iterable
from dataclasses import dataclass

__all__ = ["COMPLETED", "GCCheckpoint", "KeepSets", "checkpoints_to_delete", "keep_sets"]

COMPLETED = "COMPLETED"


@dataclass(frozen=True)
class GCCheckpoint:
    """What GC needs to know about one checkpoint row."""

    uuid: str
    trial_id: int
    batches_trained: int
    state: str = COMPLETED
    #: The searcher metric of the validation at this checkpoint, if there was one.
    metric: float | None = None

    def has_metric(self) -> bool:
        return self.metric is not None and not math.isnan(self.metric)


@dataclass(frozen=True)
class KeepSets:
    """The uuids each rule keeps; ``all`` is their union, which GC never deletes."""

    experiment_best: frozenset[str]
    trial_best: frozenset[str]
    trial_latest: frozenset[str]
    warm_start: frozenset[str]

    @property
    def all(self) -> frozenset[str]:
        return self.experiment_best | self.trial_best | self.trial_latest | self.warm_start


def keep_sets(
    checkpoints: Iterable[GCCheckpoint],
    *,
    smaller_is_better: bool,
    save_experiment_best: int,
    save_trial_best: int,
    save_trial_latest: int,
    warm_start_uuids: Collection[str] = frozenset(),
) -> KeepSets:
    """Which COMPLETED checkpoints each GC rule keeps (the module docstring has the rule)."""
    counts = {
        "save_experiment_best": save_experiment_best,
        "save_trial_best": save_trial_best,
        "save_trial_latest": save_trial_latest,
    }
    for name, value in counts.items():
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    completed = _completed(checkpoints)
    sign = 1.0 if smaller_is_better else -1.0

    def by_metric(c: GCCheckpoint) -> tuple[float, int, str]:
        assert c.metric is not None  # only called on checkpoints with a metric
        return (sign * c.metric, -c.batches_trained, c.uuid)

    def by_recency(c: GCCheckpoint) -> tuple[int, str]:
        return (-c.batches_trained, c.uuid)

    with_metric = sorted((c for c in completed if c.has_metric()), key=by_metric)
    trials: dict[int, list[GCCheckpoint]] = defaultdict(list)
    for c in completed:
        trials[c.trial_id].append(c)

    trial_best: set[str] = set()
    trial_latest: set[str] = set()
    for members in trials.values():
        ranked = sorted((c for c in members if c.has_metric()), key=by_metric)
        trial_best.update(c.uuid for c in ranked[:save_trial_best])
        trial_latest.update(c.uuid for c in sorted(members, key=by_recency)[:save_trial_latest])
    return KeepSets(
        experiment_best=frozenset(c.uuid for c in with_metric[:save_experiment_best]),
        trial_best=frozenset(trial_best),
        trial_latest=frozenset(trial_latest),
        warm_start=frozenset(c.uuid for c in completed if c.uuid in warm_start_uuids),
    )


def checkpoints_to_delete(
    checkpoints: Iterable[GCCheckpoint],
    *,
    smaller_is_better: bool,
    save_experiment_best: int,
    save_trial_best: int,
    save_trial_latest: int,
    warm_start_uuids: Collection[str] = frozenset(),
) -> list[str]:
    """The uuids of the COMPLETED checkpoints that GC deletes, by trial, then oldest first.

    ``warm_start_uuids`` are the checkpoints some trial warm-starts from (they are always
    kept). Deleting an experiment is this with all three counts at 0: only warm-start
    sources survive.
    """
    completed = _completed(checkpoints)
    keep = keep_sets(
        completed,
        smaller_is_better=smaller_is_better,
        save_experiment_best=save_experiment_best,
        save_trial_best=save_trial_best,
        save_trial_latest=save_trial_latest,
        warm_start_uuids=warm_start_uuids,
    ).all
    doomed = [c for c in completed if c.uuid not in keep]
    doomed.sort(key=lambda c: (c.trial_id, c.batches_trained, c.uuid))
    return [c.uuid for c in doomed]


def _completed(checkpoints: Iterable[GCCheckpoint]) -> list[GCCheckpoint]:
    rows = list(checkpoints)
    seen: set[str] = set()
    for c in rows:
        if c.uuid in seen:
            raise ValueError(f"checkpoint {c.uuid!r} is listed twice")
        seen.add(c.uuid)
    return [c for c in rows if c.state == COMPLETED]
