"""Training lengths: ``{batches: N}``, ``{records: N}`` or ``{epochs: N}``."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import model_serializer, model_validator

from detlite.config._base import ConfigModel
from detlite.config._errors import did_you_mean, problems_error, show

__all__ = ["UNITS", "Length", "Unit"]

Unit = Literal["batches", "records", "epochs"]
UNITS: tuple[str, ...] = ("batches", "records", "epochs")


class Length(ConfigModel):
    """An amount of training in one unit. Written in YAML as a one-key mapping."""

    unit: Unit
    value: int

    @model_validator(mode="before")
    @classmethod
    def _from_mapping(cls, data: Any) -> Any:
        if isinstance(data, Length):
            return data
        if not isinstance(data, dict):
            raise ValueError(
                "expected a mapping with one of batches, records, epochs (e.g. {batches: 100}), "
                f"got {show(data)}"
            )
        if set(data) == {"unit", "value"}:
            return data
        keys = list(data)
        if len(keys) != 1 or keys[0] not in UNITS:
            shown = ", ".join(map(str, keys)) or "nothing"
            hint = did_you_mean(keys[0], UNITS) if len(keys) == 1 else ""
            raise ValueError(f"expected exactly one of batches, records, epochs; got {shown}{hint}")
        unit = keys[0]
        value = data[unit]
        if isinstance(value, bool) or not isinstance(value, int):
            raise problems_error(
                "Length", [((unit,), f"expected a whole number, got {show(value)}")]
            )
        if value < 0:
            raise problems_error("Length", [((unit,), f"expected a number >= 0, got {value}")])
        return {"unit": unit, "value": value}

    @model_serializer
    def _to_mapping(self) -> dict[str, int]:
        return {self.unit: self.value}

    def to_batches(self, global_batch_size: int, records_per_epoch: int = 0) -> int:
        """This length in batches, as Determined converts it (floor division)."""
        if self.unit == "batches":
            return self.value
        if global_batch_size <= 0:
            raise ValueError("global_batch_size must be > 0 to convert records or epochs")
        if self.unit == "records":
            return self.value // global_batch_size
        if records_per_epoch <= 0:
            raise ValueError("records_per_epoch must be > 0 to use lengths in epochs")
        return self.value * records_per_epoch // global_batch_size

    def __str__(self) -> str:
        return f"{self.value} {self.unit}"

    @classmethod
    def batches(cls, n: int) -> Length:
        return cls(unit="batches", value=n)
