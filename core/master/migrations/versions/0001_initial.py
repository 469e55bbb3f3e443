"""The initial schema: every table of the master, and the default users.

Revision ID: 0001
Revises:
Create Date: 2025-01-01

Written out in full rather than importing the ORM models, so that it keeps creating this
schema however the models change later. The default users ``admin`` (an admin) and
``determined`` are active with the empty password (a NULL hash), as in the reference.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _time(name: str, nullable: bool = False) -> sa.Column[dt.datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _state() -> sa.Column[str]:
    return sa.Column("state", sa.String(32), nullable=False)


def upgrade() -> None:
    users = op.create_table(
        "users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(255), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=True),
        sa.Column("admin", sa.Boolean(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        _time("created_at"),
        _time("modified_at"),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("username", name="uq_users_username"),
    )
    op.create_table(
        "tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        _time("created_at"),
        _time("expires_at"),
        _time("revoked_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_tokens"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_tokens_user_id_users", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("token_hash", name="uq_tokens_token_hash"),
    )
    op.create_index("ix_tokens_user_id", "tokens", ["user_id"])

    op.create_table(
        "experiments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        _state(),
        sa.Column("archived", sa.Boolean(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("notes", sa.Text(), nullable=False),
        sa.Column("context_archive", sa.LargeBinary(), nullable=True),
        sa.Column("context_path", sa.String(1024), nullable=True),
        sa.Column("progress", sa.Double(), nullable=True),
        sa.Column("searcher_state", sa.JSON(), nullable=True),
        _time("start_time"),
        _time("end_time", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_experiments"),
        sa.ForeignKeyConstraint(["owner_id"], ["users.id"], name="fk_experiments_owner_id_users"),
    )
    op.create_index("ix_experiments_owner_id", "experiments", ["owner_id"])
    op.create_index("ix_experiments_state_archived", "experiments", ["state", "archived"])

    op.create_table(
        "trials",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("experiment_id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("hparams", sa.JSON(), nullable=False),
        _state(),
        sa.Column("restarts", sa.Integer(), nullable=False),
        sa.Column("batches_trained", sa.Integer(), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("warm_start_checkpoint_uuid", sa.String(36), nullable=True),
        _time("start_time"),
        _time("end_time", nullable=True),
        sa.Column("node", sa.String(255), nullable=True),
        sa.Column("devices", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_trials"),
        sa.ForeignKeyConstraint(
            ["experiment_id"],
            ["experiments.id"],
            name="fk_trials_experiment_id_experiments",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint(
            "experiment_id", "request_id", name="uq_trials_experiment_id_request_id"
        ),
    )
    op.create_index("ix_trials_experiment_id_state", "trials", ["experiment_id", "state"])

    for table in ("training_metrics", "validation_metrics"):
        extra = [sa.Column("num_inputs", sa.Integer(), nullable=True)]
        op.create_table(
            table,
            sa.Column("id", _BIGINT_PK, nullable=False),
            sa.Column("trial_id", sa.Integer(), nullable=False),
            sa.Column("trial_run_id", sa.Integer(), nullable=False),
            sa.Column("batches_trained", sa.Integer(), nullable=False),
            sa.Column("metrics", sa.JSON(), nullable=False),
            _time("start_time", nullable=True),
            _time("end_time"),
            *(extra if table == "validation_metrics" else []),
            sa.PrimaryKeyConstraint("id", name=f"pk_{table}"),
            sa.ForeignKeyConstraint(
                ["trial_id"], ["trials.id"], name=f"fk_{table}_trial_id_trials", ondelete="CASCADE"
            ),
        )
        op.create_index(
            f"ix_{table}_trial_id_batches_trained", table, ["trial_id", "batches_trained"]
        )

    op.create_table(
        "checkpoints",
        sa.Column("uuid", sa.String(36), nullable=False),
        sa.Column("trial_id", sa.Integer(), nullable=False),
        sa.Column("experiment_id", sa.Integer(), nullable=False),
        sa.Column("batches_trained", sa.Integer(), nullable=False),
        _state(),
        sa.Column("files", sa.JSON(), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("framework", sa.String(64), nullable=False),
        sa.Column("format", sa.String(64), nullable=False),
        sa.Column("detlite_version", sa.String(64), nullable=False),
        sa.Column("validation_id", _BIGINT_PK, nullable=True),
        sa.Column("searcher_metric", sa.Double(), nullable=True),
        sa.Column("storage_id", sa.String(1024), nullable=True),
        _time("start_time"),
        _time("end_time", nullable=True),
        sa.PrimaryKeyConstraint("uuid", name="pk_checkpoints"),
        sa.ForeignKeyConstraint(
            ["trial_id"], ["trials.id"], name="fk_checkpoints_trial_id_trials", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["experiment_id"],
            ["experiments.id"],
            name="fk_checkpoints_experiment_id_experiments",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["validation_id"],
            ["validation_metrics.id"],
            name="fk_checkpoints_validation_id_validation_metrics",
            ondelete="SET NULL",
        ),
    )
    op.create_index("ix_checkpoints_experiment_id_state", "checkpoints", ["experiment_id", "state"])
    op.create_index(
        "ix_checkpoints_trial_id_batches_trained", "checkpoints", ["trial_id", "batches_trained"]
    )

    op.create_table(
        "models",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("notes", sa.Text(), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=True),
        _time("creation_time"),
        _time("last_updated_time"),
        sa.PrimaryKeyConstraint("id", name="pk_models"),
        sa.UniqueConstraint("name", name="uq_models_name"),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["users.id"], name="fk_models_owner_id_users", ondelete="SET NULL"
        ),
    )
    op.create_index("ix_models_owner_id", "models", ["owner_id"])
    op.create_index("ix_models_last_updated_time", "models", ["last_updated_time"])

    op.create_table(
        "model_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("checkpoint_uuid", sa.String(36), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("notes", sa.Text(), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=False),
        _time("creation_time"),
        _time("last_updated_time"),
        sa.PrimaryKeyConstraint("id", name="pk_model_versions"),
        sa.UniqueConstraint("model_id", "version", name="uq_model_versions_model_id_version"),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["models.id"],
            name="fk_model_versions_model_id_models",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["checkpoint_uuid"],
            ["checkpoints.uuid"],
            name="fk_model_versions_checkpoint_uuid_checkpoints",
            ondelete="RESTRICT",
        ),
    )
    op.create_index("ix_model_versions_checkpoint_uuid", "model_versions", ["checkpoint_uuid"])

    op.create_table(
        "trial_logs",
        sa.Column("id", _BIGINT_PK, nullable=False),
        sa.Column("trial_id", sa.Integer(), nullable=False),
        _time("timestamp"),
        sa.Column("level", sa.String(16), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_trial_logs"),
        sa.ForeignKeyConstraint(
            ["trial_id"], ["trials.id"], name="fk_trial_logs_trial_id_trials", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_trial_logs_trial_id_id", "trial_logs", ["trial_id", "id"])

    now = dt.datetime.now(dt.timezone.utc)
    op.bulk_insert(
        users,
        [
            {
                "username": name,
                "password_hash": None,
                "admin": admin,
                "active": True,
                "created_at": now,
                "modified_at": now,
            }
            for name, admin in (("admin", True), ("determined", False))
        ],
    )


def downgrade() -> None:
    for table in (
        "trial_logs",
        "model_versions",
        "models",
        "checkpoints",
        "validation_metrics",
        "training_metrics",
        "trials",
        "experiments",
        "tokens",
        "users",
    ):
        op.drop_table(table)
