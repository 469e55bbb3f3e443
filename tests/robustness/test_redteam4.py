"""A fourth adversarial pass (#13), as a plain user, with probes of new kinds; each test here
failed on the code before its fix:

- **Searches that ask for too much.** ``max_trials`` or a PBT ``population_size`` of 2**53
  was accepted; the scheduler then built that many initial operations in memory (150 MiB/s,
  for ever, again after a restart). Both are capped at ``MAX_TRIALS``, and nothing is
  stored for a refused config.
- **Grid counts.** A grid's size was found by building every point of every
  hyperparameter: ``count: 10**8`` took 17 s and 5 GB before its 400. Sizes are multiplied.
- **Listing filters.** ``GET /api/v1/models`` took any number of ``labels`` (one SQL
  ``EXISTS`` each): about a thousand made SQLite's expression tree too deep (500), and
  thousands cost seconds on PostgreSQL. Every repeated filter now stops at 100.
- **Big bodies.** A 130 MiB experiment body of 3.5 million tiny ``modelDefinition``
  entries parsed to 3.8 GB, and two at once to 6.8 GB. A big body is now counted
  before it is parsed (413 past 200,000 objects and arrays, or 8 million values), and such
  bodies are parsed one at a time.
- **Long heads in one piece.** The 16 KiB cap on a request head held only for a head that
  arrived in parts (h11 bounds incomplete ones); 100 KB sent at once was served.

A sixth pass found the sizes that multiply per trial: an optuna ``n_ei_candidates`` of 5e7
grew the master by 300 MB/s (whole-number sampler options are now bounded: tests/optuna);
10,000 trials created in one event held SQLite's write lock for 16 s (``MAX_TRIALS`` is now
2,000, as for grids); a 50 KB hyperparameter copied into 10,000 trials made one trial
listing 505 MB (the hyperparameters are at most 16 KiB of JSON); forty models of 1 MB of
metadata made a model listing 38 MiB (metadata is at most 64 KiB), and twenty such bodies at
once stalled health for 1.8 s (bodies over 256 KiB are parsed one at a time).

A fifth pass, on the fixed code, found the ASHA arithmetic open to the same abuse:

- ``adaptive_asha`` with ``divisor: 1.000000000001`` and a long ``max_length`` had the
  scheduler count ``floor_log`` up to 3.7e13, for ever and again after a restart, with
  nobody's trials launched meanwhile. The logarithm is now found in constant time, and
  ``max_rungs`` and ``bracket_rungs`` (values and length) stop at 32.
- ``bracket_rungs`` of 20,000 entries cost 14.5 s of quadratic work; ``[2000]`` with divisor
  2 overflowed once the experiment ran (it then failed). A bracket's weight
  ``divisor ** (rungs - 1)`` must stay within 2**53, and the search method is built when the
  experiment is created, so that what it cannot start from is a 400.
"""

from __future__ import annotations

import base64
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from detlite.config._cross_checks import MAX_HYPERPARAMETERS_BYTES
from detlite.config.searcher import MAX_RUNGS, MAX_TRIALS
from detlite.master._bodies import MAX_BODY_CONTAINERS, MAX_BODY_ITEMS
from detlite.master._limits import MAX_HEADER_BYTES
from detlite.master.orm import Checkpoint, Experiment
from detlite.master.schemas._values import MAX_METADATA_BYTES, MAX_QUERY_ITEMS
from detlite.searcher import AdaptiveASHASearch
from detlite.testing.fake import linear_config
from tests.master.conftest import LiveMaster, assert_error
from tests.master.factories import make_checkpoint, make_trial
from tests.master.test_experiments import make_user
from tests.robustness.test_redteam3 import _master_with_few_descriptors


def searcher(name: str, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"name": name, "metric": "validation_loss"}
    if name == "pbt":
        base |= {
            "num_rounds": 2,
            "length_per_round": {"batches": 2},
            "replace_function": {"truncate_fraction": 0.5},
            "explore_function": {"resample_probability": 0.5, "perturb_factor": 0.2},
        }
    else:
        base["max_length"] = {"batches": 10}
    return base | fields


def experiments_stored(master: LiveMaster) -> int:
    with master.db() as db:
        return int(db.scalar(sa.select(sa.func.count()).select_from(Experiment)) or 0)


@pytest.mark.parametrize(
    ("section", "field"),
    [
        (searcher("random", max_trials=2**53), "max_trials"),
        (searcher("adaptive_asha", max_trials=2**53), "max_trials"),
        (searcher("random", max_trials=MAX_TRIALS + 1), "max_trials"),
        (searcher("pbt", population_size=2**53), "population_size"),
    ],
)
def test_a_search_may_not_ask_for_more_trials_than_the_cap(
    master: LiveMaster, section: dict[str, Any], field: str
) -> None:
    with master.client(make_user(master, "mallory")) as mallory:
        config = linear_config()
        config["searcher"] = section
        before = experiments_stored(master)
        response = mallory.post("/api/v1/experiments", json={"config": config, "activate": True})
        (detail,) = assert_error(response, 400, "invalid experiment config")["details"]
        assert detail["field"] == f"searcher.{field}"
        assert detail["message"].startswith(f"expected an integer <= {MAX_TRIALS}")
        assert experiments_stored(master) == before
        config["searcher"] = {**section, field: MAX_TRIALS}
        body = {"config": config, "validateOnly": True}
        assert mallory.post("/api/v1/experiments", json=body).status_code == 200


def test_a_grid_is_sized_without_building_it(master: LiveMaster) -> None:
    config = linear_config()
    config["searcher"] = searcher("grid")
    hyperparameters = config["hyperparameters"]
    hyperparameters["a"] = {"type": "double", "minval": 0, "maxval": 1, "count": 10**15}
    hyperparameters["b"] = {"type": "log", "minval": -5, "maxval": 0, "count": 10**15}
    hyperparameters["c"] = {"type": "int", "minval": 0, "maxval": 2**40, "count": 10**15}
    with master.client(make_user(master, "mallory")) as mallory:
        body = {"config": config, "validateOnly": True}
        # Built point by point, the first of these alone needs petabytes: no answer at all.
        response = mallory.post("/api/v1/experiments", json=body, timeout=60)
        assert_error(response, 400, "invalid experiment config")
        assert f"grid search would create {10**15 * 10**15 * (2**40 + 1)} trials" in response.text


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/api/v1/models", "labels"),
        ("/api/v1/experiments/1/trials", "states"),
        ("/api/v1/experiments/1/checkpoints", "states"),
    ],
)
def test_a_listing_filter_repeats_at_most_the_cap(master: LiveMaster, path: str, name: str) -> None:
    with master.client(make_user(master, "mallory")) as mallory:
        if "experiments/1" in path:
            assert mallory.post("/api/v1/experiments", json={"config": linear_config()}).is_success
        values = [f"l{i}" for i in range(1000)] if name == "labels" else ["STATE_ACTIVE"] * 1000
        response = mallory.get(path, params={name: values})
        assert_error(response, 400, name)
        assert f"at most {MAX_QUERY_ITEMS}" in response.text
        allowed = mallory.get(path, params={name: values[:MAX_QUERY_ITEMS]})
        assert allowed.status_code == 200, allowed.text


def test_big_bodies_are_counted_before_they_are_parsed(master: LiveMaster) -> None:
    with master.client(make_user(master, "mallory")) as mallory:
        before = experiments_stored(master)
        # Tiny objects: each takes hundreds of bytes once parsed.
        entries = [{"path": f"d{i}", "type": "dir"} for i in range(MAX_BODY_CONTAINERS + 1)]
        body = {"config": linear_config(), "modelDefinition": entries}
        response = mallory.post("/api/v1/experiments", json=body)
        assert_error(response, 413, f"objects and arrays (at most {MAX_BODY_CONTAINERS:,})")
        # Plain values: a config of zeros, within the byte cap.
        config = linear_config() | {"padding": [0] * (MAX_BODY_ITEMS + 1)}
        response = mallory.post("/api/v1/experiments", json={"config": config})
        assert_error(response, 413, f"values (at most {MAX_BODY_ITEMS:,})")
        assert experiments_stored(master) == before
        # A big body of the usual kind, a context file in base64, is parsed as before.
        content = base64.b64encode(b"# padding\n" * 300_000).decode()
        files = [{"path": "model_def.py", "type": "file", "content": content}]
        body = {"config": linear_config(), "modelDefinition": files}
        created = mallory.post("/api/v1/experiments", json=body)
        assert created.status_code == 200, created.text
        assert len(created.request.content) > 2 * 1024 * 1024


def exchange(url: str, head: bytes) -> bytes:
    """``head`` sent in one piece; what the master answered before it closed."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        return answer


def test_a_long_head_in_one_piece_is_refused(database_url: str, tmp_path: Path) -> None:
    proc, url = _master_with_few_descriptors(database_url, tmp_path, limit=1024)
    try:

        def head(size: int) -> bytes:
            start = b"GET /api/v1/health?pad="
            end = b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            return start + b"a" * (size - len(start) - len(end)) + end

        answer = exchange(url, head(MAX_HEADER_BYTES + 1))
        assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
        assert f"request head over {MAX_HEADER_BYTES} bytes".encode() in answer
        many_headers = b"GET /api/v1/health HTTP/1.1\r\n" + b"X-A: a\r\n" * 3000 + b"\r\n"
        assert exchange(url, many_headers).startswith(b"HTTP/1.1 400 ")
        assert exchange(url, head(MAX_HEADER_BYTES)).startswith(b"HTTP/1.1 200 ")
        assert httpx.get(f"{url}/api/v1/health", timeout=10).status_code == 200
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"max_rungs": 2**53}, "searcher.max_rungs", f"expected an integer <= {MAX_RUNGS}"),
        ({"bracket_rungs": [1] * 20_000}, "searcher.bracket_rungs", "at most 32 items"),
        ({"bracket_rungs": [2000]}, "searcher.bracket_rungs.0", "expected an integer <= 32"),
        ({"bracket_rungs": [32], "divisor": 4}, "searcher.bracket_rungs", "past 2**53"),
    ],
)
def test_asha_arithmetic_is_bounded_by_the_config(
    master: LiveMaster, fields: dict[str, Any], field: str, message: str
) -> None:
    config = linear_config()
    config["searcher"] = searcher("adaptive_asha", max_trials=16, **fields)
    with master.client(make_user(master, "mallory")) as mallory:
        response = mallory.post("/api/v1/experiments", json={"config": config})
        (detail,) = assert_error(response, 400, "invalid experiment config")["details"]
        assert detail["field"] == field and message in detail["message"], detail


def test_a_divisor_just_above_one_costs_no_more_than_any_other(master: LiveMaster) -> None:
    # 3.7e13 rungs' worth of counting before; now the search is built (and refused or
    # accepted) as fast as any.
    config = linear_config()
    config["searcher"] = searcher(
        "adaptive_asha",
        max_trials=MAX_TRIALS,
        divisor=1.000000000001,
        max_length={"batches": 2**53},
    )
    with master.client(make_user(master, "mallory")) as mallory:
        body = {"config": config, "validateOnly": True}
        assert mallory.post("/api/v1/experiments", json=body, timeout=60).status_code == 200


def test_a_search_that_cannot_start_is_refused_at_creation(
    master: LiveMaster, monkeypatch: pytest.MonkeyPatch
) -> None:
    def overflow(self: Any, config: Any) -> None:
        raise OverflowError(34, "Numerical result out of range")

    monkeypatch.setattr(AdaptiveASHASearch, "__init__", overflow)  # the master is in-process
    config = linear_config()
    config["searcher"] = searcher("adaptive_asha", max_trials=16)
    with master.client(make_user(master, "mallory")) as mallory:
        before = experiments_stored(master)
        response = mallory.post("/api/v1/experiments", json={"config": config})
        assert_error(response, 400, "searcher: the search cannot start from this config")
        assert experiments_stored(master) == before


def test_hyperparameters_are_at_most_16_kib(master: LiveMaster) -> None:
    config = linear_config()
    config["hyperparameters"]["blob"] = {"type": "const", "val": "x" * 50_000}
    with master.client(make_user(master, "mallory")) as mallory:
        before = experiments_stored(master)
        response = mallory.post("/api/v1/experiments", json={"config": config})
        (detail,) = assert_error(response, 400, "invalid experiment config")["details"]
        assert detail["field"] == "hyperparameters"
        assert f"over {MAX_HYPERPARAMETERS_BYTES:,}" in detail["message"]
        assert experiments_stored(master) == before


def test_checkpoint_metadata_is_at_most_64_kib(master: LiveMaster) -> None:
    token = make_user(master, "mallory")
    with master.client(token) as mallory:
        created = mallory.post("/api/v1/experiments", json={"config": linear_config()})
        exp_id = created.json()["experiment"]["id"]
        with master.db() as db:
            experiment = db.get_one(Experiment, exp_id)
            uuid = make_checkpoint(db, make_trial(db, experiment), 10).uuid
        url = f"/api/v1/checkpoints/{uuid}/metadata"
        body = {"checkpoint": {"metadata": {"k": "x" * (MAX_METADATA_BYTES + 1)}}}
        assert_error(mallory.post(url, json=body), 400, "metadata")
        assert f"over {MAX_METADATA_BYTES:,}" in mallory.post(url, json=body).text
        with master.db() as db:
            assert db.get_one(Checkpoint, uuid).metadata_ == {}
        assert mallory.post(url, json={"checkpoint": {"metadata": {"k": 1}}}).is_success


def test_model_metadata_is_at_most_64_kib(master: LiveMaster) -> None:
    big = {"k": [{"a": 0}] * 20_000}  # about 160 KB of JSON
    with master.client(make_user(master, "mallory")) as mallory:
        response = mallory.post("/api/v1/models/m", json={"metadata": big})
        assert_error(response, 400, "metadata")
        assert f"over {MAX_METADATA_BYTES:,}" in response.text
        assert mallory.post("/api/v1/models/m", json={"metadata": {"k": 1}}).status_code == 200
        patch = {"model": {"metadata": big}}
        assert_error(mallory.patch("/api/v1/models/m", json=patch), 400, "metadata")
