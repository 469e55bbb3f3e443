"""Where a TensorFlow rank computes, and the ``tf.distribute`` strategy that joins the ranks.

Two functions, shared by every plugin that runs TensorFlow code (this one, and Keras on its
TensorFlow backend); both must run before TensorFlow's runtime starts (before the first op
or variable), because visible devices and collective ops cannot change afterwards:

- ``place_devices(distributed)`` shows rank ``r`` one GPU, ``local_rank % gpus``, with
  memory growth on, or falls back to the CPU; returns the ``DevicePlacement``.
- ``make_strategy(placement)`` gives ``None`` for one process (use TensorFlow's default
  strategy) and, for several, one ``MultiWorkerMirroredStrategy`` per process, configured
  through ``TF_CONFIG``.

The ranks' addresses for ``TF_CONFIG`` come from a ``TF_CONFIG`` that the launcher set, or
else from a rendezvous at ``MASTER_ADDR:MASTER_PORT`` (the variables every detlite launcher
sets, as for torch.distributed): rank 0 listens there, every rank reports the port it
reserved for TensorFlow's gRPC server, and rank 0 answers with the whole list, each host
as rank 0 saw it connect.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

import tensorflow as tf

from detlite.errors import InvalidExperiment
from detlite.interfaces import DevicePlacement

if TYPE_CHECKING:
    from detlite.trial import DistributedContext

__all__ = ["cluster_addresses", "make_strategy", "place_devices", "tf_device"]

log = logging.getLogger("detlite.trial")

_LOOPBACK = ("127.", "localhost", "::1")
_DEFAULT_TIMEOUT_S = 300.0
# One strategy per process: TensorFlow configures collective ops once, at startup.
_strategy: tuple[DevicePlacement, Any] | None = None


def place_devices(distributed: DistributedContext) -> DevicePlacement:
    """Show this rank its GPU (memory growth on), or the CPU when there is none.

    Rank ``r`` gets the physical GPU ``local_rank % number_of_gpus`` as TensorFlow's only
    visible GPU, so the trial's ops land on ``/GPU:0``; ``DevicePlacement.device`` names
    the physical one (``cuda:<index>``), or ``cpu``. ``backend`` is the collective
    implementation for more than one process: ``nccl`` on GPUs, ``ring`` on CPUs.

    Call it before TensorFlow runs anything. If the runtime has already started with other
    visible GPUs (a second trial in one process), the devices stay as they are and the
    placement says which GPU TensorFlow actually uses.
    """
    size = distributed.get_size()
    local_rank = distributed.get_local_rank()
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        index = local_rank % len(gpus)
        chosen = gpus[index]
        try:
            tf.config.set_visible_devices([chosen], "GPU")
            tf.config.experimental.set_memory_growth(chosen, True)
        except RuntimeError:
            visible = tf.config.get_visible_devices("GPU")
            if visible and visible[0] != chosen:
                index = gpus.index(visible[0])
                log.warning(
                    "TensorFlow had started with GPU %d visible before rank %d could be "
                    "placed on GPU %d; it stays on GPU %d",
                    index,
                    distributed.get_rank(),
                    local_rank % len(gpus),
                    index,
                )
        device, backend = f"cuda:{index}", "nccl"
    else:
        device, backend = "cpu", "ring"
    return DevicePlacement(
        device=device,
        rank=distributed.get_rank(),
        local_rank=local_rank,
        size=size,
        backend=backend if size > 1 else None,
    )


def tf_device(placement: DevicePlacement | None) -> str:
    """TensorFlow's name for the placement's device: ``/GPU:0`` or ``/CPU:0``."""
    if placement is not None and placement.device.startswith("cuda"):
        return "/GPU:0"  # place_devices left exactly one GPU visible
    return "/CPU:0"


def make_strategy(
    placement: DevicePlacement, environ: MutableMapping[str, str] | None = None
) -> Any:
    """The ``tf.distribute`` strategy for the trial's processes; None for one process.

    For ``placement.size > 1``: a ``MultiWorkerMirroredStrategy`` over the ranks (ring
    all-reduce on CPUs, NCCL on GPUs), made once per process and returned again to later
    callers with the same placement. ``TF_CONFIG`` is written into ``environ`` (default
    ``os.environ``) from ``cluster_addresses`` unless the launcher set it. Collectives give
    up after ``DETLITE_DIST_TIMEOUT_S`` seconds (default 300) instead of hanging.
    Every rank must call it, at the same point, before TensorFlow runs any op.
    """
    global _strategy
    if placement.size == 1:
        return None
    if _strategy is not None:
        made_for, strategy = _strategy
        if (made_for.rank, made_for.size) != (placement.rank, placement.size):
            raise InvalidExperiment(
                f"this process already joined a TensorFlow cluster as rank {made_for.rank} "
                f"of {made_for.size}, and cannot join another as rank {placement.rank} of "
                f"{placement.size}: run each multi-slot trial in its own processes"
            )
        return strategy
    env = os.environ if environ is None else environ
    timeout = _timeout(env)
    if not env.get("TF_CONFIG"):
        workers = cluster_addresses(placement, env, timeout=timeout)
        env["TF_CONFIG"] = json.dumps(
            {"cluster": {"worker": workers}, "task": {"type": "worker", "index": placement.rank}}
        )
    _check_tf_config(env["TF_CONFIG"], placement)
    implementation = (
        tf.distribute.experimental.CommunicationImplementation.NCCL
        if placement.backend == "nccl"
        else tf.distribute.experimental.CommunicationImplementation.RING
    )
    options = tf.distribute.experimental.CommunicationOptions(
        implementation=implementation, timeout_seconds=timeout
    )
    if environ is not None:
        # TFConfigClusterResolver reads os.environ only.
        os.environ["TF_CONFIG"] = env["TF_CONFIG"]
    try:
        strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    except RuntimeError as exc:
        if "program startup" not in str(exc):
            raise
        raise InvalidExperiment(
            "TensorFlow's runtime started before this process joined the trial's "
            f"{placement.size} processes: make the strategy (make_strategy) before any "
            "TensorFlow op or variable, e.g. before building models at import time"
        ) from exc
    _strategy = (placement, strategy)
    log.info("rank %d joined a TensorFlow cluster of %d", placement.rank, placement.size)
    return strategy


def _timeout(env: Mapping[str, str]) -> float:
    raw = env.get("DETLITE_DIST_TIMEOUT_S")
    try:
        return float(raw) if raw else _DEFAULT_TIMEOUT_S
    except ValueError:
        raise InvalidExperiment(
            f"DETLITE_DIST_TIMEOUT_S must be a number of seconds, not {raw!r}"
        ) from None


def _check_tf_config(raw: str, placement: DevicePlacement) -> None:
    try:
        config = json.loads(raw)
        workers = config["cluster"]["worker"]
        index = int(config["task"]["index"])
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidExperiment(
            f"TF_CONFIG must be JSON with cluster.worker (a list of host:port) and "
            f"task.index; it is {raw!r} ({exc})"
        ) from None
    if len(workers) != placement.size or index != placement.rank:
        raise InvalidExperiment(
            f"TF_CONFIG names {len(workers)} workers and this task as index {index}, but "
            f"this trial runs as rank {placement.rank} of {placement.size}: fix TF_CONFIG, "
            "or unset it so that detlite builds it"
        )


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def cluster_addresses(
    placement: DevicePlacement, environ: Mapping[str, str], *, timeout: float = _DEFAULT_TIMEOUT_S
) -> list[str]:
    """Every rank's ``host:port`` for TensorFlow's servers, in rank order (collective).

    Every rank reserves a free port and meets the others at ``MASTER_ADDR:MASTER_PORT``,
    where rank 0 listens; see the module docstring.
    """
    missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not environ.get(name)]
    if missing:
        raise InvalidExperiment(
            f"a TensorFlow trial of {placement.size} processes needs {' and '.join(missing)} "
            "in the environment to find its other processes (e.g. MASTER_ADDR=127.0.0.1 and "
            "a free MASTER_PORT, the same in every process), or a TF_CONFIG"
        )
    master = (environ["MASTER_ADDR"], int(environ["MASTER_PORT"]))
    loopback = master[0].startswith(_LOOPBACK)
    deadline = time.monotonic() + timeout
    if placement.rank == 0:
        host = "127.0.0.1" if loopback else master[0]
        return _serve_rendezvous(master, placement.size, f"{host}:{_free_port('')}", deadline)
    return _join_rendezvous(master, placement.rank, deadline)


def _serve_rendezvous(master: tuple[str, int], size: int, own: str, deadline: float) -> list[str]:
    addresses: dict[int, str] = {0: own}
    peers: list[socket.socket] = []
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("", master[1]))
        server.listen(size)
        try:
            while len(addresses) < size:
                server.settimeout(max(0.1, deadline - time.monotonic()))
                try:
                    peer, (peer_host, _) = server.accept()
                except TimeoutError:
                    raise InvalidExperiment(
                        f"only {len(addresses)} of {size} TensorFlow ranks reached "
                        f"{master[0]}:{master[1]} in time"
                    ) from None
                peers.append(peer)
                peer.settimeout(max(0.1, deadline - time.monotonic()))
                report = json.loads(_read_line(peer))
                addresses[int(report["rank"])] = f"{peer_host}:{int(report['port'])}"
            workers = [addresses[rank] for rank in range(size)]
            answer = (json.dumps(workers) + "\n").encode()
            for peer in peers:
                peer.sendall(answer)
        finally:
            for peer in peers:
                peer.close()
    return workers


def _join_rendezvous(master: tuple[str, int], rank: int, deadline: float) -> list[str]:
    while True:
        try:
            sock = socket.create_connection(master, timeout=5)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise InvalidExperiment(
                    f"rank {rank} could not reach TensorFlow rank 0 at {master[0]}:{master[1]}"
                ) from None
            time.sleep(0.1)  # rank 0 is not listening yet
    with sock:
        port = _free_port(sock.getsockname()[0])
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        sock.sendall((json.dumps({"rank": rank, "port": port}) + "\n").encode())
        workers: list[str] = json.loads(_read_line(sock))
    return workers


def _read_line(sock: socket.socket) -> str:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(4096)
        if not chunk:
            raise InvalidExperiment("a TensorFlow rank closed the rendezvous connection early")
        data += chunk
    return data.decode()
