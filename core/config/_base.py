"""The base class of every config model: unknown keys are errors, never ignored."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ConfigModel(BaseModel):
    """A strict, immutable piece of an experiment config."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)
