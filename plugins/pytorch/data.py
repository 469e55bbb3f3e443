"""``det.pytorch.DataLoader`` and the batch samplers it composes for training.

A ``DataLoader`` takes the arguments of ``torch.utils.data.DataLoader`` and checks them the
same way, but builds no torch loader until it is iterated (``iter``/``len`` behave like
torch's, so the object works outside detlite) or the controller asks for one with
``get_data_loader(repeat, skip, num_replicas, rank)``. That composes, over batches of
indices and never over loaded data:

1. Repeat: the batch sampler forever (its length stays one pass);
2. Distribute: every ``num_replicas``-th batch, starting at ``rank``, so that global batch
   ``k`` is batch ``k*num_replicas + rank`` of the plain loader (Determined's order);
3. Skip: the first ``skip`` batches of what is left (resuming after ``skip`` batches).

``get_data_loader`` gives the torch loader its own ``torch.Generator`` (seeded with
``seed``) unless the user passed one: shuffling then draws from that generator, and making
an iterator no longer consumes the global torch RNG. So a resumed loader replays exactly the
permutations the uninterrupted one drew, and validating never shifts training's dropout.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.utils.data as tud

__all__ = [
    "DataLoader",
    "DistributedBatchSampler",
    "RepeatBatchSampler",
    "SkipBatchSampler",
    "TorchData",
    "data_length",
]

TorchData = dict[str, torch.Tensor] | Sequence[torch.Tensor] | torch.Tensor


class RepeatBatchSampler:
    """Every batch of ``batch_sampler``, over and over; ``len`` is one pass."""

    def __init__(self, batch_sampler: Iterable[Any]) -> None:
        self.batch_sampler = batch_sampler

    def __len__(self) -> int:
        return len(self.batch_sampler)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[Any]:
        while True:
            empty = True
            for batch in self.batch_sampler:
                empty = False
                yield batch
            if empty:  # an empty sampler would otherwise spin forever
                return


class DistributedBatchSampler:
    """Batches ``rank``, ``rank + num_replicas``, ... of ``batch_sampler``.

    Every rank reports the same length (rounded up), as Determined did, so that epoch
    boundaries computed from it agree across ranks.
    """

    def __init__(self, batch_sampler: Iterable[Any], num_replicas: int, rank: int) -> None:
        if num_replicas < 1:
            raise ValueError(f"num_replicas must be >= 1, got {num_replicas}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, {num_replicas}), got {rank}")
        self.batch_sampler = batch_sampler
        self.num_replicas = num_replicas
        self.rank = rank

    def __len__(self) -> int:
        return math.ceil(len(self.batch_sampler) / self.num_replicas)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[Any]:
        if self.num_replicas == 1:
            yield from self.batch_sampler
            return
        for i, batch in enumerate(self.batch_sampler):
            if i % self.num_replicas == self.rank:
                yield batch


class SkipBatchSampler:
    """All but the first ``skip`` batches; ``len`` is the underlying one (see module doc)."""

    def __init__(self, batch_sampler: Iterable[Any], skip: int) -> None:
        if skip < 0:
            raise ValueError(f"skip must be >= 0, got {skip}")
        self.batch_sampler = batch_sampler
        self.skip = skip

    def __len__(self) -> int:
        return len(self.batch_sampler)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[Any]:
        iterator = iter(self.batch_sampler)
        for _ in range(self.skip):
            try:
                next(iterator)
            except StopIteration:
                return
        yield from iterator


def data_length(data: Any) -> int:
    """The number of records in a batch: the first dimension of its first tensor or array."""
    if isinstance(data, torch.Tensor):
        return int(data.shape[0]) if data.dim() > 0 else 1
    if isinstance(data, Mapping):
        for value in data.values():
            return data_length(value)
        return 0
    if isinstance(data, (list, tuple)):
        if data and all(isinstance(x, (int, float, bool, str)) for x in data):
            return len(data)
        for value in data:
            return data_length(value)
        return 0
    shape = getattr(data, "shape", None)
    if shape:
        return int(shape[0])
    return 1


class DataLoader:
    """``torch.utils.data.DataLoader``'s arguments, loaded the detlite way (module doc).

    Map-style datasets only: repeating, sharding and skipping work on batches of indices.
    """

    def __init__(
        self,
        dataset: tud.Dataset[Any],
        batch_size: int | None = 1,
        shuffle: bool = False,
        sampler: tud.Sampler[Any] | Iterable[Any] | None = None,
        batch_sampler: tud.Sampler[Any] | Iterable[Any] | None = None,
        num_workers: int = 0,
        collate_fn: Any = None,
        pin_memory: bool = False,
        drop_last: bool = False,
        timeout: float = 0,
        worker_init_fn: Any = None,
        multiprocessing_context: Any = None,
        generator: torch.Generator | None = None,
        *,
        prefetch_factor: int | None = None,
        persistent_workers: bool = False,
        pin_memory_device: str = "",
    ) -> None:
        if isinstance(dataset, tud.IterableDataset):
            raise TypeError(
                "detlite.pytorch.DataLoader needs a map-style dataset (with __getitem__ and "
                "__len__): repeating, sharding and skipping work on indices, which an "
                "IterableDataset does not have"
            )
        # The same mutual-exclusion rules as torch's DataLoader, checked up front.
        if sampler is not None and shuffle:
            raise ValueError("sampler option is mutually exclusive with shuffle")
        if batch_sampler is not None:
            if batch_size != 1 or shuffle or sampler is not None or drop_last:
                raise ValueError(
                    "batch_sampler option is mutually exclusive with batch_size, shuffle, "
                    "sampler, and drop_last"
                )
            batch_size = None
            drop_last = False
        elif batch_size is None and drop_last:
            raise ValueError(
                "batch_size=None option disables auto-batching and is mutually exclusive "
                "with drop_last"
            )
        if num_workers < 0:
            raise ValueError("num_workers option should be non-negative")
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.sampler = sampler
        self.batch_sampler = batch_sampler
        self.num_workers = num_workers
        self.collate_fn = collate_fn
        self.pin_memory = pin_memory
        self.drop_last = drop_last
        self.timeout = timeout
        self.worker_init_fn = worker_init_fn
        self.multiprocessing_context = multiprocessing_context
        self.generator = generator
        self.prefetch_factor = prefetch_factor
        self.persistent_workers = persistent_workers
        self.pin_memory_device = pin_memory_device

    # -- the composed loader --------------------------------------------------------------

    def _base_sampler(self, generator: torch.Generator | None) -> Iterable[Any]:
        """The batches of indices (or single indices when auto-batching is off)."""
        if self.batch_sampler is not None:
            return self.batch_sampler
        if self.sampler is not None:
            sampler: Iterable[Any] = self.sampler
        elif self.shuffle:
            sampler = tud.RandomSampler(self.dataset, generator=generator)  # type: ignore[arg-type]
        else:
            sampler = tud.SequentialSampler(self.dataset)  # type: ignore[arg-type]
        if self.batch_size is None:
            return sampler
        return tud.BatchSampler(sampler, self.batch_size, self.drop_last)

    def _torch_loader(self, chain: Iterable[Any], generator: torch.Generator | None) -> Any:
        batched = self.batch_sampler is not None or self.batch_size is not None
        keywords: dict[str, Any] = {
            "num_workers": self.num_workers,
            "collate_fn": self.collate_fn,
            "pin_memory": self.pin_memory,
            "timeout": self.timeout,
            "worker_init_fn": self.worker_init_fn,
            "multiprocessing_context": self.multiprocessing_context,
            "generator": generator,
            "persistent_workers": self.persistent_workers,
            "pin_memory_device": self.pin_memory_device,
        }
        if self.prefetch_factor is not None:
            keywords["prefetch_factor"] = self.prefetch_factor
        if batched:
            return tud.DataLoader(self.dataset, batch_sampler=chain, **keywords)
        return tud.DataLoader(self.dataset, batch_size=None, sampler=chain, **keywords)

    def get_data_loader(
        self,
        repeat: bool = False,
        skip: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        *,
        seed: int | None = 0,
    ) -> tud.DataLoader[Any]:
        """A torch DataLoader over Repeat -> Distribute -> Skip of this loader's batches.

        ``seed`` seeds the loader's private generator when the user passed none; ``None``
        keeps torch's behaviour (the global RNG).
        """
        generator = self.generator
        if generator is None and seed is not None:
            generator = torch.Generator()
            generator.manual_seed(seed)
        chain = self._base_sampler(generator)
        if repeat:
            chain = RepeatBatchSampler(chain)
        if num_replicas != 1 or rank != 0:
            chain = DistributedBatchSampler(chain, num_replicas, rank)
        if skip:
            chain = SkipBatchSampler(chain, skip)
        loader: tud.DataLoader[Any] = self._torch_loader(chain, generator)
        return loader

    # -- use outside detlite: like the torch loader with the same arguments -------------------

    def __iter__(self) -> Iterator[Any]:
        return iter(self._torch_loader(self._base_sampler(self.generator), self.generator))

    def __len__(self) -> int:
        return len(self._base_sampler(self.generator))  # type: ignore[arg-type]
