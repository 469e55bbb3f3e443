"""Migrations on SQLite and PostgreSQL: from empty, twice, down and up, and against the ORM."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Engine

from detlite.api.enums import CheckpointState, ExperimentState
from detlite.master import db
from detlite.master.orm import (
    Base,
    Checkpoint,
    Experiment,
    Model,
    ModelVersion,
    TrainingMetrics,
    Trial,
    TrialLog,
    User,
    ValidationMetrics,
)
from tests.master.conftest import live_master, make_settings

TABLES = {
    "users",
    "tokens",
    "experiments",
    "trials",
    "training_metrics",
    "validation_metrics",
    "checkpoints",
    "models",
    "model_versions",
    "trial_logs",
}


@pytest.fixture
def engine(database_url: str) -> Engine:
    engine = db.create_engine(database_url)
    yield engine
    engine.dispose()


def user_rows(engine: Engine) -> list[tuple[object, ...]]:
    query = sa.text("SELECT username, admin, active, password_hash FROM users ORDER BY id")
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(query)]


def test_upgrade_from_empty_creates_every_table_and_the_default_users(engine: Engine) -> None:
    assert db.current_revision(engine) is None
    assert set(sa.inspect(engine).get_table_names()) == set()
    db.upgrade(engine)
    assert db.current_revision(engine) == db.head_revision()
    assert set(sa.inspect(engine).get_table_names()) == TABLES | {"alembic_version"}
    assert set(Base.metadata.tables) == TABLES
    # Both active, admin an admin, and no password (NULL is the empty password).
    assert user_rows(engine) == [("admin", True, True, None), ("determined", False, True, None)]


def test_upgrade_twice_is_a_no_op(engine: Engine) -> None:
    db.upgrade(engine)
    before = user_rows(engine)
    db.upgrade(engine)
    assert user_rows(engine) == before
    assert db.current_revision(engine) == db.head_revision()


def test_down_to_base_and_up_again(engine: Engine) -> None:
    db.upgrade(engine)
    config = db.alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "base")
    assert set(sa.inspect(engine).get_table_names()) <= {"alembic_version"}
    db.upgrade(engine)
    assert set(sa.inspect(engine).get_table_names()) == TABLES | {"alembic_version"}


def test_orm_models_match_the_migrated_schema(engine: Engine) -> None:
    db.upgrade(engine)
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        assert compare_metadata(context, Base.metadata) == []


def test_sqlite_connections_use_wal_and_foreign_keys(sqlite_url: str) -> None:
    engine = db.create_engine(sqlite_url)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    engine.dispose()


def test_postgres_urls_use_psycopg_3() -> None:
    url = db.normalize_url("postgres://me:secret@db.example/x")
    assert url.drivername == "postgresql+psycopg"
    assert "secret" not in db.redact_url("postgresql://me:secret@db.example/x")


def _populate(session: sa.orm.Session) -> tuple[int, str]:
    owner = session.scalars(sa.select(User).where(User.username == "determined")).one()
    exp = Experiment(owner_id=owner.id, config={"searcher": {"name": "single"}}, labels=["a"])
    session.add(exp)
    session.flush()
    trial = Trial(experiment_id=exp.id, request_id="r1", hparams={"lr": 0.1}, seed=7)
    session.add(trial)
    session.flush()
    session.add(TrainingMetrics(trial_id=trial.id, batches_trained=10, metrics={"loss": 1.0}))
    val = ValidationMetrics(trial_id=trial.id, batches_trained=10, metrics={"acc": 0.5})
    session.add(val)
    session.add(TrialLog(trial_id=trial.id, message="hello", level="INFO", rank=0))
    session.flush()
    ckpt = Checkpoint(
        uuid="00000000-0000-0000-0000-000000000001",
        trial_id=trial.id,
        experiment_id=exp.id,
        batches_trained=10,
        state=CheckpointState.COMPLETED,
        files={"state.json": {"size": 2, "sha256": "ab"}},
        metadata_={"k": "v"},
        validation_id=val.id,
        searcher_metric=0.5,
    )
    session.add(ckpt)
    session.commit()
    return exp.id, ckpt.uuid


def _populate_0003(session: sa.orm.Session) -> tuple[int, str]:
    """``_populate`` plus a model version, in a schema at revision 0003: plain inserts of
    the columns that revision has (the ORM would name columns added since)."""

    def insert(table: sa.Table, **values: object) -> int:
        return int(session.execute(sa.insert(table).values(**values)).inserted_primary_key[0])

    owner = session.scalars(sa.select(User.id).where(User.username == "determined")).one()
    now = dt.datetime.now(dt.UTC)
    exp_id = insert(
        Experiment.__table__,
        owner_id=owner,
        config={"searcher": {"name": "single"}},
        labels=["a"],
        start_time=now,
    )
    trial_id = insert(
        Trial.__table__,
        experiment_id=exp_id,
        request_id="r1",
        hparams={"lr": 0.1},
        seed=7,
        start_time=now,
    )
    metrics = {"trial_id": trial_id, "batches_trained": 10, "end_time": now}
    insert(TrainingMetrics.__table__, metrics={"loss": 1.0}, **metrics)
    val_id = insert(ValidationMetrics.__table__, metrics={"acc": 0.5}, **metrics)
    log_row = {"message": "hello", "level": "INFO", "rank": 0, "timestamp": now}
    session.execute(sa.insert(TrialLog.__table__).values(trial_id=trial_id, **log_row))
    uuid = "00000000-0000-0000-0000-000000000001"
    session.execute(
        sa.insert(Checkpoint.__table__).values(
            uuid=uuid,
            trial_id=trial_id,
            experiment_id=exp_id,
            batches_trained=10,
            state=CheckpointState.COMPLETED,
            files={"state.json": {"size": 2, "sha256": "ab"}},
            metadata={"k": "v"},
            validation_id=val_id,
            searcher_metric=0.5,
        )
    )
    model_id = insert(Model.__table__, name="m", creation_time=now, last_updated_time=now)
    insert(
        ModelVersion.__table__,
        model_id=model_id,
        version=1,
        checkpoint_uuid=uuid,
        creation_time=now,
        last_updated_time=now,
    )
    session.commit()
    return exp_id, uuid


def test_rows_round_trip_with_aware_utc_times_and_cascade(engine: Engine) -> None:
    db.upgrade(engine)
    maker = db.make_sessionmaker(engine)
    with maker() as session:
        exp_id, uuid = _populate(session)
    with maker() as session:
        exp = session.get(Experiment, exp_id)
        assert exp is not None
        assert exp.state is ExperimentState.ACTIVE
        assert exp.start_time.tzinfo is not None and exp.start_time.utcoffset() == dt.timedelta(0)
        assert exp.labels == ["a"] and exp.trials[0].hparams == {"lr": 0.1}
        ckpt = session.get(Checkpoint, uuid)
        assert ckpt is not None and ckpt.state is CheckpointState.COMPLETED
        assert ckpt.metadata_ == {"k": "v"} and ckpt.files["state.json"]["size"] == 2
        # Deleting the experiment removes its trials and everything under them (ON DELETE
        # CASCADE, which SQLite honours only with foreign keys on).
        session.execute(sa.delete(Experiment).where(Experiment.id == exp_id))
        session.commit()
        for table in (Trial, TrainingMetrics, ValidationMetrics, TrialLog, Checkpoint):
            assert session.scalar(sa.select(sa.func.count()).select_from(table)) == 0


def test_naive_datetimes_are_refused(engine: Engine) -> None:
    db.upgrade(engine)
    with db.make_sessionmaker(engine)() as session:
        session.add(User(username="naive", created_at=dt.datetime(2020, 1, 1)))
        with pytest.raises(sa.exc.StatementError, match="naive datetime"):
            session.commit()


def test_model_versions_are_unique_per_model(engine: Engine) -> None:
    db.upgrade(engine)
    with db.make_sessionmaker(engine)() as session:
        _, uuid = _populate(session)
        model = Model(name="m")
        session.add(model)
        session.flush()
        session.add(ModelVersion(model_id=model.id, version=1, checkpoint_uuid=uuid))
        session.commit()
        session.add(ModelVersion(model_id=model.id, version=1, checkpoint_uuid=uuid))
        with pytest.raises(sa.exc.IntegrityError):
            session.commit()


def test_a_restarted_master_keeps_its_data(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(database_url, tmp_path)
    with live_master(settings) as first:
        token = first.login("admin")
        with first.client(token) as client:
            body = {"user": {"username": "kept"}, "password": "pw-kept"}
            assert client.post("/api/v1/users", json=body).status_code == 200
    with live_master(settings) as second:
        assert second.login("kept", "pw-kept")
        with second.client(token) as client:  # tokens survive restarts too
            assert client.get("/api/v1/auth/user").json()["user"]["username"] == "admin"


def _rows(engine: Engine) -> dict[str, list[tuple[object, ...]]]:
    with engine.connect() as conn:
        return {
            table: [
                tuple(row) for row in conn.execute(sa.text(f"SELECT * FROM {table} ORDER BY 1"))
            ]
            for table in sorted(TABLES)
        }


def _schema(engine: Engine) -> dict[str, dict[str, object]]:
    """What must survive a rebuild: columns, keys, foreign keys, indexes, unique constraints."""
    inspector = sa.inspect(engine)

    def named(items: list[dict[str, object]]) -> list[str]:
        return sorted(repr(sorted(item.items(), key=lambda kv: kv[0])) for item in items)

    return {
        table: {
            "columns": [
                (c["name"], str(c["type"]), c["nullable"], c.get("default"))
                for c in inspector.get_columns(table)
            ],
            "primary_key": inspector.get_pk_constraint(table)["constrained_columns"],
            "foreign_keys": named(list(inspector.get_foreign_keys(table))),  # type: ignore[arg-type]
            "indexes": named(list(inspector.get_indexes(table))),  # type: ignore[arg-type]
            "unique": named(list(inspector.get_unique_constraints(table))),  # type: ignore[arg-type]
        }
        for table in sorted(TABLES)
    }


def _new_experiment_id(engine: Engine) -> int:
    with db.make_sessionmaker(engine)() as session:
        owner = session.scalars(sa.select(User).where(User.username == "admin")).one()
        row = Experiment(owner_id=owner.id, config={})
        session.add(row)
        session.commit()
        return row.id


def test_0004_keeps_every_row_and_key_and_ids_stop_repeating(engine: Engine) -> None:
    db.upgrade(engine, "0003")
    maker = db.make_sessionmaker(engine)
    with maker() as session:
        exp_id, uuid = _populate_0003(session)
    newest = _new_experiment_id(engine)
    rows, schema = _rows(engine), _schema(engine)
    assert all(rows[table] for table in TABLES - {"tokens"})

    db.upgrade(engine, "0004")
    assert db.current_revision(engine) == "0004"
    assert _rows(engine) == rows
    assert _schema(engine) == schema
    # Foreign keys still cascade from the rebuilt parents (and still restrict).
    with maker() as session:
        with pytest.raises(sa.exc.IntegrityError):  # a model version holds the checkpoint
            session.execute(sa.delete(Checkpoint).where(Checkpoint.uuid == uuid))
            session.commit()
        session.rollback()
        session.execute(sa.delete(ModelVersion))
        session.execute(sa.delete(Experiment).where(Experiment.id.in_([exp_id, newest])))
        session.commit()
        for table in (Trial, TrainingMetrics, ValidationMetrics, TrialLog, Checkpoint):
            assert session.scalar(sa.select(sa.func.count()).select_from(table)) == 0
    # The newest id was deleted: the next experiment does not get it again.
    assert _new_experiment_id(engine) > newest

    # Down to 0003 (nothing to undo) and up again keeps the keys and the rows.
    kept = _rows(engine)
    config = db.alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0003")
    db.upgrade(engine, "0004")
    assert _rows(engine) == kept
    with maker() as session:
        session.execute(sa.delete(Experiment))
        session.commit()
    assert _new_experiment_id(engine) > max(row[0] for row in kept["experiments"])
