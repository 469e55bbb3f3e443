"""``LRScheduler``: a torch learning-rate scheduler and when the controller steps it.

``context.wrap_lr_scheduler(scheduler, step_mode)`` keeps one of these and returns the
original scheduler. The controller steps it after a batch whose optimizer step happened
(every ``aggregation_frequency``-th batch):

- ``STEP_EVERY_BATCH``: after every such batch;
- ``STEP_EVERY_EPOCH``: after the such batch that ends an epoch, or the first one after the
  epoch ended when ``aggregation_frequency`` does not divide the epoch length;
- ``MANUAL_STEP``: never; the trial or a callback calls ``scheduler.step(...)`` itself.
"""

from __future__ import annotations

import enum
from typing import Any

__all__ = ["LRScheduler"]


class LRScheduler:
    """A wrapped scheduler with its step mode (Determined's ``det.pytorch.LRScheduler``)."""

    class StepMode(enum.Enum):
        STEP_EVERY_EPOCH = 1
        STEP_EVERY_BATCH = 2
        MANUAL_STEP = 3

    def __init__(self, scheduler: Any, step_mode: LRScheduler.StepMode) -> None:
        if not isinstance(step_mode, LRScheduler.StepMode):
            raise TypeError(
                "step_mode must be an LRScheduler.StepMode (STEP_EVERY_EPOCH, "
                f"STEP_EVERY_BATCH or MANUAL_STEP), not {step_mode!r}"
            )
        self.scheduler = scheduler
        self._step_mode = step_mode

    @property
    def step_mode(self) -> LRScheduler.StepMode:
        return self._step_mode

    def step(self, *args: Any, **kwargs: Any) -> None:
        self.scheduler.step(*args, **kwargs)

    def get_last_lr(self) -> list[float]:
        return list(self.scheduler.get_last_lr())

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = self.scheduler.state_dict()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.scheduler.load_state_dict(state_dict)
