"""``Determined``, ``ExperimentReference`` and ``TrialReference`` against a live master, on
SQLite and PostgreSQL: login and master resolution, checkpoint ranking (ties, direction rules,
COMPLETED only), ``select_checkpoint``'s argument rules, lifecycle calls, ``wait``,
listings, ``create_experiment`` and the metrics readers.

Rows come from ``tests.master.factories`` (checkpoints and validations need no worker), and
experiments also through the API where it exists.
"""

from __future__ import annotations

import base64
import io
import json
import stat
import tarfile
from pathlib import Path
from typing import Any

import pytest

from detlite.api import ExperimentState
from detlite.api.enums import CheckpointState
from detlite.errors import (
    CheckpointNotFound,
    Conflict,
    DetliteError,
    Forbidden,
    InvalidExperimentConfig,
    NotFound,
)
from detlite.experimental import (
    Checkpoint,
    Determined,
    ExperimentPaused,
    ExperimentReference,
    InvalidCheckpointSelection,
    MetricNotFound,
    Model,
    ModelOrderBy,
    ModelSortBy,
    NoCheckpointFound,
    TrialReference,
    WaitTimeout,
)
from detlite.testing.fake import linear_config
from tests.master.conftest import LiveMaster
from tests.master.factories import (
    experiment_config,
    make_checkpoint,
    make_experiment,
    make_trial,
    make_validation,
)

# tests/conftest.py gives every test its own token cache and no master from the environment.


def uuids(checkpoints: list[Checkpoint]) -> list[str]:
    return [c.uuid for c in checkpoints]


def checkpoint_at(
    master: LiveMaster, trial: Any, batches: int, metrics: dict[str, Any] | None, **kw: Any
) -> str:
    """A checkpoint of ``trial`` at ``batches``, validated with ``metrics`` unless None."""
    with master.db() as db:
        validation = make_validation(db, trial, batches, metrics) if metrics is not None else None
        return make_checkpoint(db, trial, batches, validation=validation, **kw).uuid


def test_determined_resolves_the_master_and_caches_the_token(
    master: LiveMaster, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DETLITE_MASTER", master.url)
    monkeypatch.setenv("DET_MASTER", "http://127.0.0.1:1")  # DETLITE_MASTER wins
    d = Determined()
    assert d.master == master.url and d.user == "determined"
    auth = tmp_path / "xdg-config" / "detlite" / "auth.json"
    cached = json.loads(auth.read_text())
    assert cached["active_user"] == "determined"
    assert cached["tokens"]["determined"] == d._session.token
    assert stat.S_IMODE(auth.stat().st_mode) == 0o600
    # A second client reuses the cached token instead of logging in again.
    assert Determined()._session.token == d._session.token
    # Determined's variable alone is enough; an explicit user logs in as that user.
    monkeypatch.delenv("DETLITE_MASTER")
    monkeypatch.setenv("DET_MASTER", master.url.removeprefix("http://"))
    admin = Determined(user="admin")
    assert admin.master == master.url and admin.user == "admin"
    assert json.loads(auth.read_text())["tokens"].keys() == {"determined", "admin"}
    monkeypatch.setenv("DET_MASTER", "http://127.0.0.1:1")
    assert Determined(master.url)._session.token == d._session.token

    # References are built without a request; using a missing one is NotFound.
    experiment, trial = d.get_experiment(987654), d.get_trial(876543)
    assert isinstance(experiment, ExperimentReference) and isinstance(trial, TrialReference)
    assert repr(experiment) == "Experiment(id=987654)" and experiment.id == 987654
    assert repr(trial) == "Trial(id=876543)" and experiment._master is d._session
    with pytest.raises(NotFound):
        experiment.top_checkpoint()
    with pytest.raises(NotFound):
        trial.select_checkpoint(latest=True)
    with pytest.raises(NotFound):
        d.get_checkpoint("no-such-checkpoint")

    # The registry functions, bound to this session.
    created = d.create_model("refs-model", "first", {"k": 1})
    assert isinstance(created, Model) and created.metadata == {"k": 1}
    d.create_model("Another", "second")
    assert d.get_model("refs-model").description == "first"
    assert [m.name for m in d.get_models()] == ["Another", "refs-model"]
    names = [m.name for m in d.get_models(ModelSortBy.NAME, ModelOrderBy.DESCENDING)]
    assert names == ["refs-model", "Another"]
    assert [m.name for m in d.get_models(description="SEC")] == ["Another"]
    with pytest.raises(Conflict):
        d.create_model("refs-model")


def test_top_n_checkpoints_ranks_completed_checkpoints_per_trial(master: LiveMaster) -> None:
    with master.db() as db:
        exp = make_experiment(db)
        t1, t2, t3 = make_trial(db, exp), make_trial(db, exp), make_trial(db, exp)
        empty = make_experiment(db)
        only_active = make_experiment(db)
        t_active = make_trial(db, only_active)
    a = checkpoint_at(master, t1, 10, {"validation_loss": 0.5, "accuracy": 0.6})
    b = checkpoint_at(master, t1, 20, {"validation_loss": 0.3, "accuracy": 0.8})
    c = checkpoint_at(master, t2, 10, {"validation_loss": 0.3, "accuracy": 0.8})
    checkpoint_at(master, t2, 30, None)  # no validation: cannot be ranked
    checkpoint_at(master, t3, 10, {"validation_loss": 0.1}, state=CheckpointState.ACTIVE)
    checkpoint_at(master, t3, 15, {"validation_loss": 0.05}, state=CheckpointState.DELETED)
    checkpoint_at(master, t3, 12, {"validation_loss": 0.01}, state=CheckpointState.ERROR)
    e = checkpoint_at(master, t3, 5, {"validation_loss": 0.9, "accuracy": 0.1})
    checkpoint_at(master, t_active, 5, {"validation_loss": 0.1}, state=CheckpointState.ACTIVE)

    d = Determined(master.url)
    ref = d.get_experiment(exp.id)
    # The searcher's metric, smaller is better; b and c tie: the lower trial id comes first.
    top = ref.top_n_checkpoints(3)
    assert uuids(top) == [b, c, e]
    assert all(isinstance(x, Checkpoint) for x in top)
    assert [x.trial_id for x in top] == [t1.id, t2.id, t3.id]
    assert uuids(ref.top_n_checkpoints(2)) == [b, c]
    assert uuids(ref.top_n_checkpoints(10)) == [b, c, e]
    assert ref.top_n_checkpoints(0) == []
    assert ref.top_checkpoint().uuid == b
    # Improvement 6: sort_by alone ranks in the config's direction (smaller is better)...
    assert uuids(ref.top_n_checkpoints(3, sort_by="validation_loss")) == [b, c, e]
    assert uuids(ref.top_n_checkpoints(3, sort_by="accuracy")) == [e, a, c]
    # ... an explicit direction is followed, ties still by trial id ...
    larger = ref.top_n_checkpoints(3, sort_by="validation_loss", smaller_is_better=False)
    assert uuids(larger) == [e, a, c]
    assert uuids(ref.top_n_checkpoints(3, sort_by="accuracy", smaller_is_better=False)) == [
        b,
        c,
        e,
    ]
    # ... and smaller_is_better without sort_by is ignored, with a warning.
    with pytest.warns(UserWarning, match="smaller_is_better is ignored without sort_by"):
        assert uuids(ref.top_n_checkpoints(3, smaller_is_better=False)) == [b, c, e]
    with pytest.warns(UserWarning):
        assert ref.top_checkpoint(smaller_is_better=False).uuid == b

    with pytest.raises(MetricNotFound, match=r"'nope'.*accuracy, validation_loss") as missing:
        ref.top_checkpoint(sort_by="nope")
    assert isinstance(missing.value, KeyError) and isinstance(missing.value, DetliteError)
    assert str(missing.value).startswith("no checkpoint of experiment")
    with pytest.raises(InvalidCheckpointSelection):
        ref.top_n_checkpoints(-1)

    for exp_id in (empty.id, only_active.id):
        with pytest.raises(NoCheckpointFound, match=f"No checkpoint found for experiment {exp_id}"):
            d.get_experiment(exp_id).top_checkpoint()
    # The reference raised AssertionError here; the typed error is still one.
    with pytest.raises(AssertionError):
        d.get_experiment(empty.id).top_n_checkpoints(1)
    with pytest.raises(CheckpointNotFound):
        d.get_experiment(empty.id).top_n_checkpoints(1)


def test_select_checkpoint(master: LiveMaster) -> None:
    with master.db() as db:
        exp = make_experiment(db)
        trial, other, bare = make_trial(db, exp), make_trial(db, exp), make_trial(db, exp)
    first = checkpoint_at(master, trial, 10, {"validation_loss": 0.4})
    best = checkpoint_at(master, trial, 20, {"validation_loss": 0.2})
    newest = checkpoint_at(master, trial, 30, {"validation_loss": 0.3})
    tied = checkpoint_at(master, trial, 25, {"validation_loss": 0.2})
    active = checkpoint_at(master, trial, 40, None, state=CheckpointState.ACTIVE)
    checkpoint_at(master, trial, 50, {"validation_loss": 0.0}, state=CheckpointState.ERROR)
    checkpoint_at(master, trial, 60, {"validation_loss": 0.0}, state=CheckpointState.DELETED)
    foreign = checkpoint_at(master, other, 10, {"validation_loss": 0.1})

    d = Determined(master.url)
    ref = d.get_trial(trial.id)
    # Improvement 7: latest is the newest COMPLETED one, not the ACTIVE/ERROR/DELETED ones.
    assert ref.select_checkpoint(latest=True).uuid == newest
    # Best: equal values go to the checkpoint with more batches trained.
    assert ref.select_checkpoint(best=True).uuid == tied
    assert ref.top_checkpoint().uuid == tied
    assert ref.top_checkpoint(sort_by="validation_loss").uuid == tied
    larger = ref.select_checkpoint(best=True, sort_by="validation_loss", smaller_is_better=False)
    assert larger.uuid == first
    with pytest.warns(UserWarning, match="ignored without sort_by"):
        assert ref.select_checkpoint(best=True, smaller_is_better=False).uuid == tied
    # uuid: returned whatever its state, but only a checkpoint of this trial.
    by_uuid = ref.select_checkpoint(uuid=active)
    assert by_uuid.uuid == active and by_uuid.trial_id == trial.id
    assert ref.select_checkpoint(uuid=best).batch_number == 20
    with pytest.raises(NoCheckpointFound, match=f"belongs to trial {other.id}"):
        ref.select_checkpoint(uuid=foreign)
    with pytest.raises(NotFound):
        ref.select_checkpoint(uuid="missing-uuid")
    with pytest.raises(MetricNotFound, match="validation_loss"):
        ref.select_checkpoint(best=True, sort_by="accuracy")

    exactly_one = "Exactly one of latest, best, or uuid must be set"
    for kwargs in (
        {},
        {"latest": True, "best": True},
        {"latest": True, "uuid": best},
        {"best": True, "uuid": best},
        {"latest": True, "best": True, "uuid": best},
    ):
        with pytest.raises(InvalidCheckpointSelection, match=exactly_one) as bad:
            ref.select_checkpoint(**kwargs)
        assert isinstance(bad.value, ValueError) and isinstance(bad.value, DetliteError)
    for kwargs in (
        {"latest": True, "sort_by": "validation_loss"},
        {"latest": True, "smaller_is_better": True},
        {"uuid": best, "sort_by": "validation_loss", "smaller_is_better": True},
    ):
        with pytest.raises(InvalidCheckpointSelection, match="best=True"):
            ref.select_checkpoint(**kwargs)

    empty = d.get_trial(bare.id)
    for kwargs in ({"latest": True}, {"best": True}):
        with pytest.raises(NoCheckpointFound, match=f"No checkpoint found for trial {bare.id}"):
            empty.select_checkpoint(**kwargs)


def test_experiment_lifecycle_wait_and_listings(
    master: LiveMaster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with master.db() as db:
        done = make_experiment(db, state=ExperimentState.COMPLETED)
        paused = make_experiment(db, state=ExperimentState.PAUSED)
        admins = make_experiment(db, owner="admin")
        running = make_experiment(db)
        trials = [make_trial(db, running).id for _ in range(3)]
    d = Determined(master.url)

    assert d.get_experiment(done.id).wait(interval=0.01) is ExperimentState.COMPLETED
    assert f"Experiment {done.id} finished: COMPLETED" in capsys.readouterr().out
    with pytest.raises(ExperimentPaused, match="paused") as was_paused:
        d.get_experiment(paused.id).wait(interval=0.01)
    assert isinstance(was_paused.value, ValueError)
    with pytest.raises(WaitTimeout, match=f"Experiment {running.id} did not finish"):
        d.get_experiment(running.id).wait(interval=0.01, timeout=0.05)
    assert f"Waiting for Experiment {running.id} to complete: ACTIVE" in capsys.readouterr().out

    ref = d.get_experiment(running.id)
    assert ref.get_config()["searcher"]["metric"] == "validation_loss"
    assert [t.id for t in ref.get_trials()] == trials
    assert all(isinstance(t, TrialReference) for t in ref.get_trials())
    ref.pause()
    assert ref.get_state() is ExperimentState.PAUSED
    ref.activate()
    assert ref.get_state() is ExperimentState.ACTIVE
    with pytest.raises(Conflict):
        ref.archive()  # only an ended experiment can be archived
    # With no scheduler yet, only trials that are not running end at once: pause first.
    ref.pause()
    d.get_trial(trials[0]).kill()
    killed = d._session.get(f"/api/v1/trials/{trials[0]}")["trial"]["state"]
    assert killed == ExperimentState.CANCELED.value
    ref.cancel()
    assert ref.wait(interval=0.01) is ExperimentState.CANCELED
    ref.archive()
    assert [e.id for e in d.get_experiments(archived=True)] == [running.id]
    ref.unarchive()
    assert d.get_experiments(archived=True) == []
    ref.kill()  # a no-op once ended, as in Determined

    # Another user's experiment: readable, not changeable.
    other = d.get_experiment(admins.id)
    assert other.get_state() is ExperimentState.ACTIVE
    for action in (other.pause, other.kill, other.cancel):
        with pytest.raises(Forbidden):
            action()

    listed = d.get_experiments()
    assert sorted(e.id for e in listed) == sorted([done.id, paused.id, admins.id, running.id])
    assert all(isinstance(e, ExperimentReference) for e in listed)
    by_state = d.get_experiments(states=[ExperimentState.PAUSED, "CANCELED"])
    assert sorted(e.id for e in by_state) == sorted([paused.id, running.id])
    assert [e.id for e in d.get_experiments(users=["admin"])] == [admins.id]
    assert len(d.get_experiments(limit=2)) == 2

    ref.delete()
    with pytest.raises(NotFound):
        ref.get_config()


def test_create_experiment_and_metrics_readers(master: LiveMaster, tmp_path: Path) -> None:
    context = tmp_path / "context"
    (context / "data").mkdir(parents=True)
    (context / "model_def.py").write_text("VALUE = 1\n")
    (context / "data" / "big.bin").write_bytes(b"\0" * 1000)
    (context / "notes.txt").write_text("kept\n")
    (context / ".detignore").write_text("data/\n")
    config_file = tmp_path / "const.yaml"
    config_file.write_text(json.dumps(linear_config()))  # JSON is YAML

    d = Determined(master.url)
    created = d.create_experiment(str(config_file), context)
    assert isinstance(created, ExperimentReference)
    assert created.get_state() is ExperimentState.ACTIVE
    assert created.get_config()["searcher"]["metric"] == "validation_loss"
    b64 = d._session.get(f"/api/v1/experiments/{created.id}/model_def")["b64Tgz"]
    with tarfile.open(fileobj=io.BytesIO(base64.b64decode(b64))) as tar:
        names = {m.name.removeprefix("./") for m in tar.getmembers() if m.isfile()}
    assert names == {"model_def.py", "notes.txt"}
    (tmp_path / "ckpts").mkdir()
    paused = d.create_experiment(experiment_config(tmp_path / "ckpts"), context, activate=False)
    assert paused.get_state() is ExperimentState.PAUSED
    bad = linear_config()
    bad["searcher"]["max_length"] = {"parsecs": 3}
    with pytest.raises(InvalidExperimentConfig, match=r"searcher\.max_length"):
        d.create_experiment(bad, context)
    assert len(d.get_experiments()) == 2

    # Metrics through the reporting API, read back page by page.
    with master.db() as db:
        row = make_trial(db, make_experiment(db))
    reports = [
        {"stepsCompleted": 10 * (i + 1), "metrics": {"loss": 1.0 / (i + 1)}} for i in range(5)
    ]
    d._session.post(f"/api/v1/trials/{row.id}/metrics", json={"trainingMetrics": reports})
    d._session.post(
        f"/api/v1/trials/{row.id}/validation_metrics",
        json={"validationMetrics": {"stepsCompleted": 50, "metrics": {"validation_loss": 0.2}}},
    )
    ref = d.get_trial(row.id)
    training = list(ref.iter_metrics("training", page_size=2))
    assert [r["stepsCompleted"] for r in training] == [10, 20, 30, 40, 50]
    assert training[1]["metrics"] == {"loss": 0.5}
    assert ref.get_metrics() == training
    validation = ref.get_metrics("validation")
    assert [(r["stepsCompleted"], r["metrics"]) for r in validation] == [
        (50, {"validation_loss": 0.2})
    ]
    with pytest.raises(ValueError, match="kind"):
        ref.get_metrics("testing")  # type: ignore[arg-type]
