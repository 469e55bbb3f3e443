"""detlite.pytorch.DataLoader: the same batches as torch's loader, and repeat -> shard by
rank -> skip composed the way resuming and distributed training need."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import torch
import torch.utils.data as tud
from torch.utils.data import TensorDataset

from detlite.pytorch import DataLoader, data_length
from detlite.pytorch.data import DistributedBatchSampler, RepeatBatchSampler, SkipBatchSampler

DATA = TensorDataset(torch.arange(10))


def ids(batches: Any, count: int | None = None) -> list[list[int]]:
    """Batches as lists of record ids (the first ``count`` of an endless loader)."""
    chosen = batches if count is None else itertools.islice(batches, count)
    return [b[0].tolist() if isinstance(b, list) else [int(b[0])] for b in chosen]


PLAIN = [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]


@pytest.mark.parametrize("drop_last", [False, True])
def test_iterating_matches_torch(drop_last: bool) -> None:
    ours = DataLoader(DATA, batch_size=3, drop_last=drop_last)
    theirs = tud.DataLoader(DATA, batch_size=3, drop_last=drop_last)
    assert ids(ours) == ids(theirs)
    assert len(ours) == len(theirs) == (3 if drop_last else 4)


def test_shuffling_outside_detlite_draws_like_torch() -> None:
    torch.manual_seed(3)
    ours = ids(DataLoader(DATA, batch_size=4, shuffle=True))
    torch.manual_seed(3)
    theirs = ids(tud.DataLoader(DATA, batch_size=4, shuffle=True))
    assert ours == theirs
    assert sorted(itertools.chain.from_iterable(ours)) == list(range(10))


def test_plain_get_data_loader_is_the_plain_order() -> None:
    loader = DataLoader(DATA, batch_size=3).get_data_loader()
    assert isinstance(loader, tud.DataLoader)
    assert ids(loader) == PLAIN and len(loader) == 4


def test_repeat_cycles_and_keeps_one_pass_as_length() -> None:
    loader = DataLoader(DATA, batch_size=3).get_data_loader(repeat=True)
    assert ids(loader, 10) == (PLAIN * 3)[:10]
    assert len(loader) == 4


@pytest.mark.parametrize("rank", [0, 1, 2])
def test_shard_takes_every_nth_batch_from_rank(rank: int) -> None:
    loader = DataLoader(DATA, batch_size=3).get_data_loader(num_replicas=3, rank=rank)
    assert ids(loader) == PLAIN[rank::3]
    assert len(loader) == 2  # 4 batches over 3 ranks, rounded up for every rank


def test_skip_drops_the_first_batches_and_keeps_the_length() -> None:
    loader = DataLoader(DATA, batch_size=3).get_data_loader(skip=2)
    assert ids(loader) == PLAIN[2:]
    assert len(loader) == 4


def test_repeat_then_shard_then_skip() -> None:
    loader = DataLoader(DATA, batch_size=3).get_data_loader(
        repeat=True, skip=3, num_replicas=2, rank=1
    )
    # The endless stream 0,1,2,3,0,1,2,3,...; rank 1 takes positions 1,3,5,...: batches
    # 1,3,1,3,...; skipping 3 of those starts at the fourth.
    stream = [PLAIN[i % 4] for i in range(40)]
    assert ids(loader, 6) == stream[1::2][3:9]
    assert len(loader) == 2


def test_shuffled_loaders_replay_exactly_and_leave_the_global_rng_alone() -> None:
    source = DataLoader(DATA, batch_size=3, shuffle=True)
    rng = torch.get_rng_state()
    first = ids(source.get_data_loader(repeat=True, seed=5), 12)
    again = ids(source.get_data_loader(repeat=True, seed=5), 12)
    other = ids(source.get_data_loader(repeat=True, seed=6), 12)
    resumed = ids(source.get_data_loader(repeat=True, seed=5, skip=5), 7)
    assert torch.equal(torch.get_rng_state(), rng)
    assert first == again != other
    assert resumed == first[5:]
    # Each epoch draws a new permutation from the loader's generator.
    assert first[:4] != first[4:8]


def test_a_user_generator_is_kept() -> None:
    generator = torch.Generator().manual_seed(1)
    loader = DataLoader(DATA, batch_size=3, shuffle=True, generator=generator)
    assert loader.get_data_loader(seed=99).generator is generator


def test_a_user_batch_sampler_and_no_batching() -> None:
    batch_sampler = [[9, 8], [1], [4, 5, 6]]
    loader = DataLoader(DATA, batch_sampler=batch_sampler)
    assert ids(loader) == [[9, 8], [1], [4, 5, 6]]
    assert ids(loader.get_data_loader(num_replicas=2, rank=0)) == [[9, 8], [4, 5, 6]]
    single = DataLoader(DATA, batch_size=None)
    assert len(single) == 10
    assert [int(x[0]) for x in single.get_data_loader(num_replicas=5, rank=1)] == [1, 6]


def test_worker_processes_work_with_an_endless_loader() -> None:
    loader = DataLoader(DATA, batch_size=3, num_workers=1).get_data_loader(repeat=True, skip=1)
    assert ids(loader, 5) == (PLAIN * 2)[1:6]


class Stream(tud.IterableDataset[int]):
    def __iter__(self) -> Any:
        return iter(range(3))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sampler": [0, 1], "shuffle": True}, "sampler option is mutually exclusive"),
        ({"batch_sampler": [[0]], "batch_size": 2}, "batch_sampler option is mutually"),
        ({"batch_sampler": [[0]], "drop_last": True}, "batch_sampler option is mutually"),
        ({"batch_size": None, "drop_last": True}, "batch_size=None option disables"),
        ({"num_workers": -1}, "num_workers option should be non-negative"),
    ],
)
def test_the_same_argument_checks_as_torch(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DataLoader(DATA, **kwargs)


def test_iterable_datasets_are_refused() -> None:
    with pytest.raises(TypeError, match="map-style dataset"):
        DataLoader(Stream())


def test_sampler_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="rank must be in"):
        DistributedBatchSampler([[0]], 2, 2)
    with pytest.raises(ValueError, match="num_replicas must be >= 1"):
        DistributedBatchSampler([[0]], 0, 0)
    with pytest.raises(ValueError, match="skip must be >= 0"):
        SkipBatchSampler([[0]], -1)
    assert list(RepeatBatchSampler([])) == []
    assert list(SkipBatchSampler([[0], [1]], 5)) == []


def test_data_length() -> None:
    assert data_length(torch.zeros(5, 2)) == 5
    assert data_length((torch.zeros(3), torch.zeros(3))) == 3
    assert data_length({"x": torch.zeros(4, 1)}) == 4
    assert data_length([1, 2]) == 2
    assert data_length(torch.tensor(1.0)) == 1
