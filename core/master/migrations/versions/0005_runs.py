"""Runs: the run a log line came from, the run a worker's token belongs to, the first launch.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07

- ``tokens.allocation_id`` (nullable, indexed): the allocation (one launch of a trial's
  worker group) a token was issued for. A request with such a token is a worker's, and the
  master refuses it (410, ``StaleRun``) once that allocation is no longer its trial's
  current one (``detlite.master.deps``). A login's token has none.
- ``trials.allocation_id`` gains an index: every worker request looks its allocation up.
- ``trial_logs.trial_run_id`` (nullable): the trial's run (its restart count) when the
  line was stored. Rows written before this revision have none.
- ``trials.launch_time`` (nullable): when the trial's workers were first launched;
  ``start_time`` stays its creation, ``allocation_start_time`` the current run's launch.

Plain ADD COLUMN and CREATE INDEX, no batch mode (see 0002 on SQLite's cascades).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("tokens", sa.Column("allocation_id", sa.String(36), nullable=True))
    op.create_index("ix_tokens_allocation_id", "tokens", ["allocation_id"])
    op.create_index("ix_trials_allocation_id", "trials", ["allocation_id"])
    op.add_column("trial_logs", sa.Column("trial_run_id", sa.Integer(), nullable=True))
    op.add_column("trials", sa.Column("launch_time", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    # SQLite >= 3.35 drops columns in place (no rebuild, so no cascade).
    op.drop_column("trials", "launch_time")
    op.drop_column("trial_logs", "trial_run_id")
    op.drop_index("ix_trials_allocation_id", table_name="trials")
    op.drop_index("ix_tokens_allocation_id", table_name="tokens")
    op.drop_column("tokens", "allocation_id")
