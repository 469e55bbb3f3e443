"""``detlite.tensorflow.devices``: CPU placement, the one-process strategy, the ranks'
rendezvous over real loopback sockets, TF_CONFIG checks, and GPU placement where a GPU is.

These run in the test process; TensorFlow's runtime may already have started here, so
nothing below builds a MultiWorkerMirroredStrategy (``test_distributed`` does, in fresh
processes).
"""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from detlite.errors import InvalidExperiment
from detlite.interfaces import DevicePlacement
from detlite.launch import free_port
from detlite.tensorflow.devices import cluster_addresses, make_strategy, place_devices, tf_device
from detlite.trial import DistributedContext


def _gpus() -> list[Any]:
    import tensorflow as tf

    return list(tf.config.list_physical_devices("GPU"))


@pytest.mark.skipif(bool(_gpus()), reason="this machine has a GPU; see the gpu tests")
def test_without_a_gpu_every_rank_computes_on_the_cpu() -> None:
    one = place_devices(DistributedContext())
    assert one == DevicePlacement(device="cpu", rank=0, local_rank=0, size=1, backend=None)
    assert tf_device(one) == "/CPU:0"
    two = place_devices(DistributedContext(rank=1, local_rank=1, size=2))
    assert (two.device, two.rank, two.size, two.backend) == ("cpu", 1, 2, "ring")
    assert two.describe() == "rank 1/2 on cpu (ring)"


@pytest.mark.gpu
def test_a_rank_sees_its_own_gpu_with_memory_growth() -> None:
    import tensorflow as tf

    gpus = _gpus()
    if not gpus:
        pytest.skip("TensorFlow sees no GPU (tensorflow-cpu is installed, or no CUDA build)")
    placement = place_devices(DistributedContext(rank=0, local_rank=0, size=1))
    assert placement.device == "cuda:0"
    assert tf_device(placement) == "/GPU:0"
    assert tf.config.get_visible_devices("GPU") == [gpus[0]]
    assert tf.config.experimental.get_memory_growth(gpus[0]) is True


def test_one_process_needs_no_strategy() -> None:
    assert make_strategy(DevicePlacement(size=1)) is None


def test_ranks_meet_at_the_master_address_and_learn_every_address() -> None:
    port = free_port()
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    results: dict[int, list[str]] = {}
    errors: list[BaseException] = []

    def rank(r: int) -> None:
        try:
            results[r] = cluster_addresses(DevicePlacement(rank=r, size=3), env, timeout=30)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=rank, args=(r,)) for r in (2, 1, 0)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    assert results[0] == results[1] == results[2]
    addresses = results[0]
    assert len(addresses) == 3 and len(set(addresses)) == 3
    for address in addresses:
        host, _, port_text = address.rpartition(":")
        assert host == "127.0.0.1" and int(port_text) > 0


def test_a_rank_without_the_master_address_is_told_what_to_set() -> None:
    with pytest.raises(InvalidExperiment, match="MASTER_ADDR and MASTER_PORT"):
        make_strategy(DevicePlacement(rank=1, size=2, backend="ring"), environ={})


def test_a_rank_that_finds_no_rank_0_gives_up() -> None:
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    with pytest.raises(InvalidExperiment, match="could not reach TensorFlow rank 0"):
        cluster_addresses(DevicePlacement(rank=1, size=2), env, timeout=0.5)


def test_a_tf_config_that_does_not_match_the_trial_is_refused() -> None:
    tf_config = {
        "cluster": {"worker": ["a:1", "b:2", "c:3"]},
        "task": {"type": "worker", "index": 0},
    }
    env = {"TF_CONFIG": json.dumps(tf_config)}
    with pytest.raises(InvalidExperiment, match="names 3 workers and this task as index 0"):
        make_strategy(DevicePlacement(rank=1, size=2, backend="ring"), environ=env)
    with pytest.raises(InvalidExperiment, match="TF_CONFIG must be JSON"):
        make_strategy(DevicePlacement(rank=1, size=2), environ={"TF_CONFIG": "{not json"})
