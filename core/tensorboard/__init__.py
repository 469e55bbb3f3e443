"""``det.tensorboard``: TensorBoard event files, and the trial's folder for them.

- ``detlite.tensorboard.events``: event files written and read without TensorFlow, for
  the scalars detlite records itself (``train/<metric>``, ``val/<metric>``).
- ``get_base_path()``: the current trial's TensorBoard folder. Whatever writes event files
  there is uploaded with detlite's own and shown by ``detlite tensorboard``.
- ``detlite.tensorboard.metric_writers.pytorch.TorchWriter``: Determined's writer for
  PyTorch trials, a ``torch.utils.tensorboard.SummaryWriter`` on that folder (imported on
  its own: it needs torch and the ``tensorboard`` extra).
"""

from __future__ import annotations

from detlite.tensorboard._directory import (
    WORKER_DIR_NAME,
    flush_writers,
    get_base_path,
    track_writer,
    use_base_path,
    worker_base_path,
    writing_into,
)
from detlite.tensorboard.events import (
    FILE_VERSION,
    Event,
    EventFileError,
    EventFileWriter,
    TensorBoardUnavailable,
    crc32c,
    masked_crc32c,
    read_events,
    scalar_values,
)

__all__ = [
    "FILE_VERSION",
    "WORKER_DIR_NAME",
    "Event",
    "EventFileError",
    "EventFileWriter",
    "TensorBoardUnavailable",
    "crc32c",
    "flush_writers",
    "get_base_path",
    "masked_crc32c",
    "read_events",
    "scalar_values",
    "track_writer",
    "use_base_path",
    "worker_base_path",
    "writing_into",
]
