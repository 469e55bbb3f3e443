"""The Pareto front of a multi-objective search: the points no other point dominates.

A point dominates another when it is at least as good in every objective and better in one
(each objective's direction given by its ``smaller_is_better``). Equal points do not
dominate each other, so both are on the front.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["pareto_front"]


def pareto_front(points: Sequence[Sequence[float]], smaller_is_better: Sequence[bool]) -> set[int]:
    """The indexes of ``points`` on the front. Sorted by their objectives (each turned to
    "smaller is better"), a point can only be dominated by one before it that is on the
    front itself, so each is compared with the front so far, not with every other point."""
    signs = [1.0 if smaller else -1.0 for smaller in smaller_is_better]
    keyed = sorted(
        (tuple(sign * value for sign, value in zip(signs, point, strict=True)), i)
        for i, point in enumerate(points)
    )
    front: list[tuple[tuple[float, ...], int]] = []
    for key, i in keyed:
        if not any(_dominates(kept, key) for kept, _ in front):
            front.append((key, i))
    return {i for _, i in front}


def _dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return a != b and all(x <= y for x, y in zip(a, b, strict=True))
