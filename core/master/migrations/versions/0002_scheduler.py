"""The scheduler's run-time state on trials, and unique metrics reports.

Revision ID: 0002
Revises: 0001
Create Date: 2025-01-02

- ``trials`` gains the columns ``detlite.master.scheduler`` keeps per trial (documented in
  ``detlite.master.orm.experiments``). The NOT NULL ones have server defaults (false, 0),
  which existing rows take; the models declare the same defaults.
- ``training_metrics`` and ``validation_metrics`` get a unique index on
  (trial_id, trial_run_id, batches_trained). Duplicates that two racing reports may have left
  are removed first, keeping the newest row of each key (the one readers showed already).

No batch mode (see ``upgrade``): SQLite adds and drops columns in place.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_NOT_NULL = (
    ("close_requested", sa.Boolean(), sa.false()),
    ("completed_batches", sa.Integer(), sa.text("0")),
    ("searcher_done", sa.Boolean(), sa.false()),
    ("allocation_stop", sa.Boolean(), sa.false()),
)
_NULLABLE: tuple[tuple[str, sa.types.TypeEngine[Any]], ...] = (
    ("pending_ops", sa.JSON()),
    ("early_exit_reason", sa.String(32)),
    ("allocation_id", sa.String(36)),
    ("allocation_handle", sa.String(255)),
    ("allocation_pids", sa.JSON()),
    ("allocation_answers", sa.JSON()),
    ("allocation_start_time", sa.DateTime(timezone=True)),
)
_METRICS = ("training_metrics", "validation_metrics")


def _unique_index(table: str) -> str:
    return f"ix_{table}_trial_id_trial_run_id_batches_trained"


def upgrade() -> None:
    # Plain ADD COLUMN on both databases. Batch mode would rebuild ``trials`` on SQLite, and
    # dropping the old table there deletes every metric, log and checkpoint row through
    # ON DELETE CASCADE (foreign keys are on, and cannot be turned off inside the migration's
    # transaction). So the NOT NULL columns keep their server defaults, as the models say.
    for name, type_, default in _NOT_NULL:
        op.add_column("trials", sa.Column(name, type_, nullable=False, server_default=default))
    for name, nullable_type in _NULLABLE:
        op.add_column("trials", sa.Column(name, nullable_type, nullable=True))

    for table in _METRICS:
        op.execute(
            sa.text(
                f"DELETE FROM {table} WHERE id NOT IN (SELECT MAX(id) FROM {table} "
                "GROUP BY trial_id, trial_run_id, batches_trained)"
            )
        )
        op.create_index(
            _unique_index(table),
            table,
            ["trial_id", "trial_run_id", "batches_trained"],
            unique=True,
        )


def downgrade() -> None:
    for table in _METRICS:
        op.drop_index(_unique_index(table), table_name=table)
    # SQLite >= 3.35 drops columns in place (no rebuild, so no cascade).
    for name in [c[0] for c in _NOT_NULL] + [c[0] for c in _NULLABLE]:
        op.drop_column("trials", name)
