"""Group commit (detlite.master._ingest): many reports per transaction, each answered only
once committed, and a bad report never takes its neighbours down with it, nor keeps what it
wrote before it failed. On both databases, with the master's own migrated schema."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from detlite.errors import Conflict
from detlite.master import db as master_db
from detlite.master._ingest import GroupCommit
from detlite.master.orm import TrainingMetrics, Trial, TrialLog
from tests.master.conftest import LiveMaster
from tests.master.factories import make_experiment, make_trial


@pytest.fixture
def maker(migrated_database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = master_db.create_engine(migrated_database_url)
    master_db.upgrade(engine)
    try:
        yield master_db.make_sessionmaker(engine)
    finally:
        engine.dispose()


def _trial_ids(maker: sessionmaker[Session], tmp_path: Path, count: int) -> list[int]:
    with maker() as db:
        experiment = make_experiment(db, storage_path=tmp_path / "ckpts")
        return [make_trial(db, experiment).id for _ in range(count)]


def _log(trial_id: int, message: str) -> Callable[[Session], str]:
    """A work that writes a log line, then fails if its message starts with "bad"."""

    def write(db: Session) -> str:
        db.execute(sa.insert(TrialLog), [{"trial_id": trial_id, "message": message}])
        if message.startswith("bad"):
            raise Conflict(f"{message} refused after it wrote")
        return message

    return write


def _messages(maker: sessionmaker[Session]) -> list[str]:
    with maker() as db:
        return sorted(db.scalars(sa.select(TrialLog.message)))


def test_a_failing_work_in_a_batch_keeps_nothing_and_spares_the_others(
    maker: sessionmaker[Session], tmp_path: Path
) -> None:
    trial_ids = _trial_ids(maker, tmp_path, 3)
    writer = GroupCommit(maker)
    held = threading.Event()
    release = threading.Event()

    def first(db: Session) -> str:
        held.set()
        release.wait(10)  # the others queue up meanwhile: they form one batch
        return "first"

    async def main() -> list[object]:
        blocker = asyncio.ensure_future(writer.submit(trial_ids[0], first))
        await asyncio.to_thread(held.wait, 10)
        works = [
            writer.submit(trial_ids[i % 3], _log(trial_ids[i % 3], name))
            for i, name in enumerate(["good-1", "bad-1", "good-2", "good-3", "bad-2"])
        ]
        tasks = [asyncio.ensure_future(work) for work in works]
        await asyncio.sleep(0.2)
        release.set()
        return await asyncio.gather(blocker, *tasks, return_exceptions=True)

    try:
        results = asyncio.run(main())
    finally:
        writer.close()
    assert results[0] == "first"
    names = ["good-1", "bad-1", "good-2", "good-3", "bad-2"]
    outcomes = dict(zip(names, results[1:], strict=True))
    assert [outcomes[name] for name in ("good-1", "good-2", "good-3")] == [
        "good-1",
        "good-2",
        "good-3",
    ]
    for name in ("bad-1", "bad-2"):
        assert isinstance(outcomes[name], Conflict)
        assert f"{name} refused" in str(outcomes[name])
    assert _messages(maker) == ["good-1", "good-2", "good-3"]


def test_close_stores_what_was_handed_over(maker: sessionmaker[Session], tmp_path: Path) -> None:
    (trial_id,) = _trial_ids(maker, tmp_path, 1)
    writer = GroupCommit(maker)

    async def main() -> list[str]:
        return await asyncio.gather(
            *[writer.submit(trial_id, _log(trial_id, f"m{i}")) for i in range(50)]
        )

    assert len(asyncio.run(main())) == 50
    writer.close()
    assert len(_messages(maker)) == 50
    with pytest.raises(RuntimeError, match="stopping"):
        asyncio.run(writer.submit(trial_id, _log(trial_id, "late")))


def test_concurrent_reports_over_http_are_all_stored_once(
    master: LiveMaster, admin_token: str, tmp_path: Path
) -> None:
    with master.db() as db:
        experiment = make_experiment(db, storage_path=tmp_path / "ckpts")
        trial_ids = [make_trial(db, experiment).id for _ in range(8)]
    steps = 25
    errors: list[str] = []

    def report(trial_id: int) -> None:
        with master.client(admin_token) as client:
            for step in range(1, steps + 1):
                body = {"trainingMetrics": {"stepsCompleted": step, "metrics": {"loss": step}}}
                answer = client.post(f"/api/v1/trials/{trial_id}/training_metrics", json=body)
                if answer.status_code != 200:
                    errors.append(answer.text)
            # and one the route must refuse: another trial's id in the body
            bad = {"trainingMetrics": {"trialId": trial_id + 1000, "stepsCompleted": 1}}
            answer = client.post(f"/api/v1/trials/{trial_id}/training_metrics", json=bad)
            if answer.status_code != 400:
                errors.append(f"expected 400, got {answer.status_code}: {answer.text}")

    threads = [threading.Thread(target=report, args=(t,)) for t in trial_ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with master.db() as db:
        query = sa.select(TrainingMetrics.trial_id, sa.func.count()).group_by(
            TrainingMetrics.trial_id
        )
        assert dict(db.execute(query).all()) == dict.fromkeys(trial_ids, steps)
        batches = db.scalars(sa.select(Trial.batches_trained).where(Trial.id.in_(trial_ids)))
        assert set(batches) == {steps}
