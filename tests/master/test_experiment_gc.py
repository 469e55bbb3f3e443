"""The master applies checkpoint GC through the API: when an experiment ends, and on delete.

Real files on shared_fs in tmp_path, real HTTP, both databases. ``test_gc.py`` covers the
rule itself; this covers that the endpoints call it, and that a refused deletion deletes no
file.
"""

from __future__ import annotations

from pathlib import Path

from detlite.api.enums import CheckpointState, ExperimentState
from detlite.master.orm import Checkpoint, Experiment
from tests.master.conftest import LiveMaster, assert_error
from tests.master.factories import (
    ckpt_uuid,
    experiment_config,
    make_checkpoint,
    make_experiment,
    make_trial,
)

C20, C40 = ckpt_uuid("c20"), ckpt_uuid("c40")


def test_ending_an_experiment_collects_and_deleting_it_removes_every_file(
    master: LiveMaster, tmp_path: Path
) -> None:
    storage = tmp_path / "ckpts"
    storage.mkdir()
    config = experiment_config(
        checkpoint_storage={
            "type": "shared_fs",
            "host_path": str(storage),
            "save_experiment_best": 0,
            "save_trial_best": 1,
            "save_trial_latest": 1,
        }
    )
    with master.db() as db:
        exp = make_experiment(db, config=config)
        trial = make_trial(db, exp, state=ExperimentState.PAUSED)
        for batches, metric in [(10, 0.5), (20, 0.2), (30, 0.4), (40, 0.9)]:
            make_checkpoint(
                db,
                trial,
                batches,
                uuid=ckpt_uuid(f"c{batches}"),
                searcher_metric=metric,
                write_to=storage,
            )
        exp.state = ExperimentState.PAUSED
        db.commit()
        exp_id = exp.id
    token = master.login("determined")
    with master.client(token) as client:
        # A paused experiment's trials have no workers: canceling ends it at once.
        response = client.post(f"/api/v1/experiments/{exp_id}/cancel")
        assert response.status_code == 200, response.text
        assert response.json()["experiment"]["state"] == "STATE_CANCELED"
        # Kept: the trial's best (c20) and latest (c40). Gone: c10 and c30, files and all.
        assert sorted(p.name for p in storage.iterdir()) == sorted([C20, C40])
        with master.db() as db:
            states = {row.uuid: row.state for row in db.query(Checkpoint)}
        assert states == {
            ckpt_uuid("c10"): CheckpointState.DELETED,
            C20: CheckpointState.COMPLETED,
            ckpt_uuid("c30"): CheckpointState.DELETED,
            C40: CheckpointState.COMPLETED,
        }

        # Another experiment warm-starts from c20: deleting this one is refused, and no
        # file is touched by the refusal.
        with master.db() as db:
            other = make_experiment(db, config=config)
            make_trial(db, other, warm_start_checkpoint_uuid=C20)
        refused = client.delete(f"/api/v1/experiments/{exp_id}")
        assert_error(refused, 409, f"warm-starts from its checkpoint {C20}")
        assert sorted(p.name for p in storage.iterdir()) == sorted([C20, C40])

        with master.db() as db:
            db.query(Experiment).filter_by(id=other.id).delete()
            db.commit()
        deleted = client.delete(f"/api/v1/experiments/{exp_id}")
        assert deleted.status_code == 200, deleted.text
        assert list(storage.iterdir()) == []
        with master.db() as db:
            assert db.query(Checkpoint).count() == 0
        assert_error(client.get(f"/api/v1/experiments/{exp_id}"), 404)
