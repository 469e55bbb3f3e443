"""Where a PyTorch trial computes: device choice, the process group, moving data.

``place_devices`` gives rank ``r`` the device ``cuda:<local_rank>`` when CUDA is available
and the CPU otherwise. A trial of more than one process needs a process group: NCCL on
GPUs, gloo on CPUs, initialised from the environment (``MASTER_ADDR``, ``MASTER_PORT``;
``RANK`` and ``WORLD_SIZE`` come from the ``DistributedContext``) unless the launcher
already did it. A group initialised here is destroyed when the last controller that uses
it closes; a group the launcher made is left to the launcher.
"""

from __future__ import annotations

import gc
import logging
import os
import warnings
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist

from detlite.errors import InvalidExperiment
from detlite.interfaces import DevicePlacement

if TYPE_CHECKING:
    from detlite.trial import DistributedContext

__all__ = [
    "place_devices",
    "release_process_group",
    "to_device",
    "unwrap_model",
]

log = logging.getLogger("detlite.trial")

_LOOPBACK = ("127.", "localhost", "::1")
_owned_group = False
# Controllers (more exactly, placements of size > 1) using the current process group.
_group_users = 0


def place_devices(distributed: DistributedContext) -> DevicePlacement:
    """This rank's device and collective backend; joins the process group if size > 1."""
    size = distributed.get_size()
    local_rank = distributed.get_local_rank()
    if torch.cuda.is_available():
        index = local_rank % torch.cuda.device_count()
        torch.cuda.set_device(index)
        device, backend = f"cuda:{index}", "nccl"
    else:
        device, backend = "cpu", "gloo"
    placement = DevicePlacement(
        device=device,
        rank=distributed.get_rank(),
        local_rank=local_rank,
        size=size,
        backend=backend if size > 1 else None,
    )
    if size > 1:
        _init_process_group(placement)
    return placement


def _init_process_group(placement: DevicePlacement) -> None:
    global _owned_group, _group_users
    if dist.is_initialized():
        if dist.get_world_size() != placement.size or dist.get_rank() != placement.rank:
            raise InvalidExperiment(
                f"torch.distributed is already initialised as rank {dist.get_rank()} of "
                f"{dist.get_world_size()}, but this trial runs as rank {placement.rank} of "
                f"{placement.size}"
            )
        _group_users += 1
        return
    missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(name)]
    if missing:
        raise InvalidExperiment(
            f"a trial of {placement.size} processes needs {' and '.join(missing)} in the "
            "environment to form its process group (e.g. MASTER_ADDR=127.0.0.1 and a free "
            "MASTER_PORT, the same in every process)"
        )
    # gloo picks the interface the host name resolves to, which on many machines is not the
    # loopback one the master listens on. Only for a loopback master: elsewhere "lo" would
    # cut the ranks off from each other.
    if placement.backend == "gloo" and os.environ["MASTER_ADDR"].startswith(_LOOPBACK):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    timeout = os.environ.get("DETLITE_DIST_TIMEOUT_S")
    dist.init_process_group(
        backend=placement.backend,
        init_method="env://",
        rank=placement.rank,
        world_size=placement.size,
        timeout=timedelta(seconds=float(timeout)) if timeout else None,
    )
    _owned_group = True
    _group_users += 1


def release_process_group() -> None:
    """One user of the process group is done; the last one destroys a group detlite made.

    Objects that hold the group (DistributedDataParallel modules and their tensors) must be
    gone first: destroying the group under them made about one run in seven abort at exit.
    """
    global _owned_group, _group_users
    _group_users = max(0, _group_users - 1)
    if _group_users or not _owned_group:
        return
    _owned_group = False
    if dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The user's module inside a DistributedDataParallel or DataParallel wrapper."""
    wrappers = (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)
    while isinstance(model, wrappers):
        model = model.module
    return model


def to_device(data: Any, device: Any, warned_types: set[type] | None = None) -> Any:
    """``data`` with every tensor moved to ``device``, through dicts, lists and tuples.

    NumPy arrays of numbers become tensors on ``device``; objects with a ``.to`` method are
    moved; numbers (NumPy's too), strings, bytes and None pass through; any other type
    passes through with one warning per type (per ``warned_types`` set, if given).
    """
    if isinstance(data, torch.Tensor):
        return data.to(device)
    kind = type(data)
    if kind is tuple or kind is list:
        # Batches are mostly tuples of tensors: move those without a recursive call.
        moved = [
            x.to(device) if isinstance(x, torch.Tensor) else to_device(x, device, warned_types)
            for x in data
        ]
        return tuple(moved) if kind is tuple else moved
    if isinstance(data, Mapping):
        return {k: to_device(v, device, warned_types) for k, v in data.items()}
    if isinstance(data, tuple) and hasattr(data, "_fields"):  # namedtuple
        return kind(*(to_device(x, device, warned_types) for x in data))
    if isinstance(data, (list, tuple)):
        return kind(to_device(x, device, warned_types) for x in data)
    if isinstance(data, np.ndarray):
        if data.dtype.kind in "biufc":
            return torch.from_numpy(data).to(device)
        return data
    if data is None or isinstance(data, (int, float, complex, str, bytes, np.generic)):
        return data
    if hasattr(data, "to"):
        return data.to(device)
    if warned_types is None or kind not in warned_types:
        if warned_types is not None:
            warned_types.add(kind)
        warnings.warn(
            f"to_device() left a {kind.__qualname__} where it was: it has no .to() method",
            stacklevel=2,
        )
    return data
