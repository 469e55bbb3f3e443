"""Where each trial's workers ran: per-rank placement and the resource manager that placed it.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30

``trials`` gains two nullable columns, filled by the scheduler at each launch (documented in
``detlite.master.orm.experiments``): ``placement`` (JSON, per rank: ``node``, ``devices`` and
what else the resource manager tells, such as Ray's ``nodeIp`` and ``nodeId``) and
``resource_manager`` (its type: ``local``, ``ray``). The summary columns ``node`` and
``devices`` exist since 0001.

Plain ADD COLUMN, no batch mode: on SQLite a batch rebuild of ``trials`` would delete every
metric, log and checkpoint row through ON DELETE CASCADE (see 0002).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("trials", sa.Column("placement", sa.JSON(), nullable=True))
    op.add_column("trials", sa.Column("resource_manager", sa.String(64), nullable=True))


def downgrade() -> None:
    # SQLite >= 3.35 drops columns in place (no rebuild, so no cascade).
    op.drop_column("trials", "resource_manager")
    op.drop_column("trials", "placement")
