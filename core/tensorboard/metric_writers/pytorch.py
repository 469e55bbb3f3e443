"""``TorchWriter``: Determined's TensorBoard writer for PyTorch trials.

``TorchWriter()`` (in a trial's ``__init__``, typically) opens a
``torch.utils.tensorboard.SummaryWriter`` on the current trial's TensorBoard folder
(``detlite.tensorboard.get_base_path``). The trial writes through ``.writer`` whatever a
SummaryWriter writes (``add_scalar``, ``add_image``, histograms...); the files are uploaded
with detlite's own metrics, each upload flushing the writer first, and ``detlite
tensorboard`` shows them. torch's SummaryWriter needs the ``tensorboard`` package, which
stays optional: ``pip install 'detlite[tensorboard]'``.
"""

from __future__ import annotations

import importlib.util
import weakref
from typing import TYPE_CHECKING, SupportsFloat

from detlite.errors import FrameworkUnavailable
from detlite.tensorboard._directory import get_base_path, track_writer

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

__all__ = ["TorchWriter"]

_INSTALL = {"torch": "pytorch", "tensorboard": "tensorboard"}


class TorchWriter:
    """A ``SummaryWriter`` (``.writer``) on the trial's TensorBoard folder."""

    def __init__(self) -> None:
        missing = [name for name in _INSTALL if importlib.util.find_spec(name) is None]
        if missing:
            extras = ",".join(_INSTALL[name] for name in missing)
            raise FrameworkUnavailable("TorchWriter", missing, f"pip install 'detlite[{extras}]'")
        from torch.utils.tensorboard import SummaryWriter

        directory = get_base_path()
        self.writer: SummaryWriter = SummaryWriter(log_dir=str(directory))
        track_writer(self, directory)
        # A writer dropped with its trial (test mode's, a notebook's) still writes out what
        # it buffered: SummaryWriter itself would keep it until its next timed flush.
        weakref.finalize(self, self.writer.close)

    def add_scalar(self, name: str, value: SupportsFloat, step: int) -> None:
        """The scalar ``name`` at ``step`` (Determined's ``MetricWriter`` method)."""
        self.writer.add_scalar(name, value, step)

    def reset(self) -> None:
        """Write out what is buffered (Determined's harness called this after workloads)."""
        self.writer.flush()

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
