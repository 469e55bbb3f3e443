"""The master's tables, as SQLAlchemy 2 typed ORM models.

``Base.metadata`` is the schema the migrations (``detlite.master.migrations``) must produce;
a test compares the two on SQLite and PostgreSQL. Import models from here.
"""

from __future__ import annotations

from detlite.master.orm.base import Base, utcnow
from detlite.master.orm.checkpoints import Checkpoint
from detlite.master.orm.experiments import Experiment, Trial
from detlite.master.orm.metrics import TrainingMetrics, TrialLog, ValidationMetrics
from detlite.master.orm.models import Model, ModelVersion
from detlite.master.orm.users import Token, User

__all__ = [
    "Base",
    "Checkpoint",
    "Experiment",
    "Model",
    "ModelVersion",
    "Token",
    "TrainingMetrics",
    "Trial",
    "TrialLog",
    "User",
    "ValidationMetrics",
    "utcnow",
]
