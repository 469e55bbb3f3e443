"""The checkpoint GC rule: a table of cases over one small experiment, then properties.

The experiment (smaller is better unless a case says otherwise)::

    trial 1: a1 b=100 m=0.5   a2 b=200 m=0.3   a3 b=300 m=0.4   a4 b=400 no metric
             a5 b=500 m=0.05 ACTIVE (still uploading)
    trial 2: b1 b=100 m=0.1   b2 b=200 m=0.6   b3 b=300 m=0.2
             b0 b=50  m=0.01 DELETED           b4 b=400 ERROR
"""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detlite.storage.gc import GCCheckpoint, checkpoints_to_delete, keep_sets

EXPERIMENT = [
    GCCheckpoint("a1", 1, 100, metric=0.5),
    GCCheckpoint("a2", 1, 200, metric=0.3),
    GCCheckpoint("a3", 1, 300, metric=0.4),
    GCCheckpoint("a4", 1, 400),
    GCCheckpoint("a5", 1, 500, state="ACTIVE", metric=0.05),
    GCCheckpoint("b1", 2, 100, metric=0.1),
    GCCheckpoint("b2", 2, 200, metric=0.6),
    GCCheckpoint("b3", 2, 300, metric=0.2),
    GCCheckpoint("b0", 2, 50, state="DELETED", metric=0.01),
    GCCheckpoint("b4", 2, 400, state="ERROR"),
]
ALL_COMPLETED = ["a1", "a2", "a3", "a4", "b1", "b2", "b3"]


def gc(
    counts: tuple[int, int, int],
    *,
    smaller: bool = True,
    warm: frozenset[str] = frozenset(),
    rows: list[GCCheckpoint] = EXPERIMENT,
) -> list[str]:
    experiment_best, trial_best, trial_latest = counts
    return checkpoints_to_delete(
        rows,
        smaller_is_better=smaller,
        save_experiment_best=experiment_best,
        save_trial_best=trial_best,
        save_trial_latest=trial_latest,
        warm_start_uuids=warm,
    )


@pytest.mark.parametrize(
    ("counts", "smaller", "warm", "deleted"),
    [
        # Determined's defaults: each trial's best (a2, b1) and latest (a4, b3) survive.
        ((0, 1, 1), True, (), ["a1", "a3", "b2"]),
        # Each keep set alone.
        ((2, 0, 0), True, (), ["a1", "a2", "a3", "a4", "b2"]),  # b1 0.1, b3 0.2
        ((0, 1, 0), True, (), ["a1", "a3", "a4", "b2", "b3"]),  # a2, b1
        ((0, 0, 2), True, (), ["a1", "a2", "b1"]),  # a3 a4, b2 b3
        # The union: experiment best b1, trial latest a4 and b3.
        ((1, 0, 1), True, (), ["a1", "a2", "a3", "b2"]),
        ((1, 1, 1), True, (), ["a1", "a3", "b2"]),
        # Larger is better: trial bests are a1 (0.5) and b2 (0.6); experiment best b2.
        ((0, 1, 0), False, (), ["a2", "a3", "a4", "b1", "b3"]),
        ((1, 0, 0), False, (), ["a1", "a2", "a3", "a4", "b1", "b3"]),
        # A checkpoint without a metric survives only as a latest one.
        ((9, 9, 0), True, (), ["a4"]),
        ((9, 9, 1), True, (), []),
        # Deleting the experiment (all counts 0) deletes every COMPLETED checkpoint...
        ((0, 0, 0), True, (), ALL_COMPLETED),
        # ... except those a trial warm-starts from.
        ((0, 0, 0), True, ("a1", "b2"), ["a2", "a3", "a4", "b1", "b3"]),
        ((0, 1, 1), True, ("a3",), ["a1", "b2"]),
        # Warm-start sources that are not COMPLETED change nothing.
        ((0, 0, 0), True, ("a5", "b0"), ALL_COMPLETED),
    ],
)
def test_gc_table(
    counts: tuple[int, int, int], smaller: bool, warm: tuple[str, ...], deleted: list[str]
) -> None:
    assert gc(counts, smaller=smaller, warm=frozenset(warm)) == deleted


def test_other_states_never_take_a_slot_nor_get_deleted() -> None:
    # a5 (ACTIVE, 0.05) and b0 (DELETED, 0.01) have the best metrics and b4 (ERROR) is the
    # newest of trial 2, yet b1 is the experiment best and b3 trial 2's latest.
    keep = keep_sets(
        EXPERIMENT,
        smaller_is_better=True,
        save_experiment_best=1,
        save_trial_best=0,
        save_trial_latest=1,
    )
    assert keep.experiment_best == {"b1"}
    assert keep.trial_latest == {"a4", "b3"}
    for counts in [(0, 0, 0), (1, 1, 1), (0, 1, 1)]:
        assert not {"a5", "b0", "b4"} & set(gc(counts))


def test_result_is_ordered_by_trial_then_oldest_first() -> None:
    rows = list(EXPERIMENT)
    random.Random(3).shuffle(rows)
    assert gc((0, 0, 0), rows=rows) == ALL_COMPLETED


def test_metric_ties_keep_the_newer_then_the_smaller_uuid() -> None:
    rows = [
        GCCheckpoint("old", 1, 100, metric=0.5),
        GCCheckpoint("new", 1, 200, metric=0.5),
        GCCheckpoint("twin-b", 2, 100, metric=0.5),
        GCCheckpoint("twin-a", 2, 100, metric=0.5),
    ]
    for order in (rows, rows[::-1]):
        assert set(gc((1, 0, 0), rows=order)) == {"old", "twin-a", "twin-b"}
        assert set(gc((0, 1, 0), rows=order)) == {"old", "twin-b"}


def test_recency_ties_keep_the_smaller_uuid() -> None:
    rows = [GCCheckpoint("y", 1, 100), GCCheckpoint("x", 1, 100)]
    assert gc((0, 0, 1), rows=rows) == ["y"]
    assert gc((0, 0, 1), rows=rows[::-1]) == ["y"]


def test_nan_is_no_metric() -> None:
    rows = [GCCheckpoint("nan", 1, 200, metric=math.nan), GCCheckpoint("ok", 1, 100, metric=9.0)]
    assert gc((1, 1, 0), rows=rows) == ["nan"]


def test_invalid_input_is_refused() -> None:
    with pytest.raises(ValueError, match="save_trial_best must be >= 0"):
        gc((0, -1, 0))
    with pytest.raises(ValueError, match="'a1' is listed twice"):
        gc((0, 1, 1), rows=[*EXPERIMENT, GCCheckpoint("a1", 3, 1)])


# -- properties -------------------------------------------------------------------------

STATES = ["COMPLETED", "COMPLETED", "COMPLETED", "ACTIVE", "ERROR", "DELETED"]


@st.composite
def experiments(draw: st.DrawFn) -> list[GCCheckpoint]:
    count = draw(st.integers(0, 14))
    return [
        GCCheckpoint(
            uuid=f"c{i:02}",
            trial_id=draw(st.integers(1, 3)),
            batches_trained=draw(st.integers(0, 4)),  # small ranges: ties are common
            state=draw(st.sampled_from(STATES)),
            metric=draw(st.none() | st.sampled_from([0.0, 0.5, 1.0, -2.0, math.inf, math.nan])),
        )
        for i in range(count)
    ]


def best(rows: list[GCCheckpoint], n: int, smaller: bool) -> set[str]:
    """The n best by metric (NaN is no metric; ties: newer, then smaller uuid)."""
    scored = [(c.metric, c) for c in rows if c.metric is not None and c.metric == c.metric]
    scored.sort(key=lambda mc: (mc[0] if smaller else -mc[0], -mc[1].batches_trained, mc[1].uuid))
    return {c.uuid for _, c in scored[:n]}


def latest(rows: list[GCCheckpoint], n: int) -> set[str]:
    ordered = sorted(rows, key=lambda c: (c.batches_trained, _desc(c.uuid)), reverse=True)
    return {c.uuid for c in ordered[:n]}


def _desc(uuid: str) -> tuple[int, ...]:
    # Reversed sorting must still put the smaller uuid first on a tie.
    return tuple(-ord(ch) for ch in uuid)


@settings(max_examples=300, deadline=None)
@given(
    rows=experiments(),
    counts=st.tuples(st.integers(0, 4), st.integers(0, 4), st.integers(0, 4)),
    smaller=st.booleans(),
    warm_picks=st.sets(st.integers(0, 14), max_size=3),
    seed=st.integers(0, 2**16),
)
def test_kept_checkpoints_contain_every_keep_set(
    rows: list[GCCheckpoint],
    counts: tuple[int, int, int],
    smaller: bool,
    warm_picks: set[int],
    seed: int,
) -> None:
    warm = frozenset(f"c{i:02}" for i in warm_picks)
    deleted = gc(counts, smaller=smaller, warm=warm, rows=rows)
    shuffled = list(rows)
    random.Random(seed).shuffle(shuffled)
    assert gc(counts, smaller=smaller, warm=warm, rows=shuffled) == deleted

    completed = [c for c in rows if c.state == "COMPLETED"]
    kept = {c.uuid for c in completed} - set(deleted)
    assert set(deleted) <= {c.uuid for c in completed}
    assert len(set(deleted)) == len(deleted)

    experiment_best, trial_best, trial_latest = counts
    keep_sets_ = [best(completed, experiment_best, smaller), warm & {c.uuid for c in completed}]
    for trial in {c.trial_id for c in completed}:
        members = [c for c in completed if c.trial_id == trial]
        keep_sets_.append(best(members, trial_best, smaller))
        keep_sets_.append(latest(members, trial_latest))
    for keep in keep_sets_:
        assert keep <= kept
    # ... and nothing else is kept: the union is exactly what survives.
    assert kept == set().union(*keep_sets_)
