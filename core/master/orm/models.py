"""The model registry: named models and their numbered versions.

A version points at a checkpoint; version numbers start at 1 and are unique per model (the
server assigns ``max(version) + 1``). Labels, notes and version metadata are the additions of
API.md improvement 14. A registered checkpoint cannot be deleted from under its versions
(the foreign key restricts), and garbage collection skips it; its experiment cannot be
deleted while it is registered (``detlite.master.queries.models`` has the rule).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from detlite.master.orm.base import SQLITE_AUTOINCREMENT, Base, utcnow

__all__ = ["Model", "ModelVersion"]


class Model(Base):
    __tablename__ = "models"
    # The registry's default order, ties broken by id (migration 0006).
    __table_args__ = (sa.Index(None, "last_updated_time", "id"), SQLITE_AUTOINCREMENT)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(255), unique=True)
    description: Mapped[str] = mapped_column(sa.Text, default="")
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    labels: Mapped[list[str]] = mapped_column(default=list)
    notes: Mapped[str] = mapped_column(sa.Text, default="")
    owner_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    creation_time: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_updated_time: Mapped[dt.datetime] = mapped_column(default=utcnow)

    versions: Mapped[list[ModelVersion]] = relationship(
        back_populates="model",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="ModelVersion.version",
    )

    def __repr__(self) -> str:
        return f"Model(name={self.name!r})"


class ModelVersion(Base):
    __tablename__ = "model_versions"
    __table_args__ = (sa.UniqueConstraint("model_id", "version"), SQLITE_AUTOINCREMENT)

    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(sa.ForeignKey("models.id", ondelete="CASCADE"))
    version: Mapped[int]
    checkpoint_uuid: Mapped[str] = mapped_column(
        sa.ForeignKey("checkpoints.uuid", ondelete="RESTRICT"), index=True
    )
    name: Mapped[str] = mapped_column(sa.String(255), default="")
    comment: Mapped[str] = mapped_column(sa.Text, default="")
    notes: Mapped[str] = mapped_column(sa.Text, default="")
    labels: Mapped[list[str]] = mapped_column(default=list)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    creation_time: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_updated_time: Mapped[dt.datetime] = mapped_column(default=utcnow)

    model: Mapped[Model] = relationship(back_populates="versions")

    def __repr__(self) -> str:
        return f"ModelVersion(model_id={self.model_id}, version={self.version})"
