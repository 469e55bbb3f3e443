"""``detlite.searcher.pareto.pareto_front`` against the definition, point by point."""

from __future__ import annotations

import random

import pytest

from detlite.searcher.pareto import pareto_front


def dominates(a: list[float], b: list[float], smaller: list[bool]) -> bool:
    better_or_equal = all(
        (x <= y) if s else (x >= y) for x, y, s in zip(a, b, smaller, strict=True)
    )
    return better_or_equal and a != b


def test_a_hand_made_front() -> None:
    points = [[0.1, 9.0], [0.2, 5.0], [0.5, 1.0], [0.3, 6.0], [0.2, 7.0], [0.2, 5.0]]
    assert pareto_front(points, [True, True]) == {0, 1, 2, 5}  # equal points both stay
    assert pareto_front(points, [False, False]) == {0, 2, 3, 4}  # only (0.2, 5.0) loses
    assert pareto_front(points, [True, False]) == {0}
    assert pareto_front([], [True, True]) == set()


@pytest.mark.parametrize("seed", range(20))
def test_random_points_match_the_definition(seed: int) -> None:
    rng = random.Random(seed)
    objectives = rng.randint(2, 4)
    smaller = [rng.random() < 0.5 for _ in range(objectives)]
    # Few distinct values, so that ties and repeated points are common.
    points = [
        [float(rng.choice([0, 1, 2, 3])) for _ in range(objectives)]
        for _ in range(rng.randint(1, 40))
    ]
    expected = {
        i for i, p in enumerate(points) if not any(dominates(q, p, smaller) for q in points)
    }
    assert pareto_front(points, smaller) == expected
