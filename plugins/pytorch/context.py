"""``PyTorchTrialContext``: what a PyTorchTrial wraps its objects with, and how it steps.

Managed contexts (the harness) move wrapped models to the rank's device and, when the
trial runs on more than one process, wrap them in ``DistributedDataParallel``. Unmanaged
contexts (loading a checkpoint, ``create_trial_instance``) pass every object through
untouched.

Automatic mixed precision is on when ``optimizations.mixed_precision`` is not ``"O0"`` or
the trial calls ``context.experimental.use_amp()``:

- ``train_batch`` and the evaluation methods run under ``torch.autocast``: ``float16`` on
  CUDA, ``bfloat16`` on the CPU;
- on CUDA a ``torch.amp.GradScaler`` is made (unless ``wrap_scaler`` gave one):
  ``context.backward`` scales the loss with it, ``step_optimizer`` steps through it
  (unscaling first when it clips gradients), and the controller calls ``scaler.update()``
  once after every batch in which an optimizer stepped. bfloat16 has float32's range, so
  the CPU needs no scaler and gets none;
- the scaler's state is saved in checkpoints.

A scaler given to ``wrap_scaler`` without automatic AMP is the user's, as in Determined:
the trial scales the loss (``context.backward(scaler.scale(loss))``), passes
``scaler=`` to ``step_optimizer`` and calls ``scaler.update()``; detlite checkpoints it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from detlite.errors import InvalidExperiment
from detlite.pytorch.devices import to_device
from detlite.pytorch.lr_scheduler import LRScheduler
from detlite.pytorch.reducer import MetricReducer, as_metric_reducer
from detlite.trial import DistributedContext, TrialContext, TrialEnv

__all__ = ["PyTorchExperimentalContext", "PyTorchTrialContext"]

_PLATEAU_HINT = """\
ReduceLROnPlateau steps on a validation metric, so detlite cannot step it for you: wrap it
with LRScheduler.StepMode.MANUAL_STEP and step it from a callback, for example

    class StepOnPlateau(det.pytorch.PyTorchCallback):
        def __init__(self, scheduler):
            self.scheduler = scheduler

        def on_validation_end(self, metrics):
            self.scheduler.step(metrics["validation_loss"])
"""


class PyTorchExperimentalContext:
    """``context.experimental``: automatic mixed precision and the reducer alias."""

    def __init__(self, parent: PyTorchTrialContext) -> None:
        self._parent = parent

    def use_amp(self) -> torch.amp.GradScaler | None:
        """Turn on automatic mixed precision (see the module doc); returns its scaler."""
        return self._parent._enable_auto_amp()

    def wrap_reducer(
        self,
        reducer: MetricReducer | Callable[[list[Any]], Any],
        name: str | None = None,
        for_training: bool = True,
        for_validation: bool = True,
    ) -> MetricReducer:
        return self._parent.wrap_reducer(reducer, name, for_training, for_validation)


class PyTorchTrialContext(TrialContext):
    """The context a ``PyTorchTrial`` gets; attributes ``models``, ``optimizers``,
    ``lr_schedulers`` (the ``LRScheduler`` wrappers), ``device`` and ``experimental``."""

    def __init__(self, env: TrialEnv, distributed: DistributedContext | None = None) -> None:
        super().__init__(env, distributed)
        placement = env.placement
        self.device = torch.device(placement.device if placement is not None else "cpu")
        self.n_gpus = 1 if self.device.type == "cuda" else 0
        self.models: list[torch.nn.Module] = []
        self.optimizers: list[torch.optim.Optimizer] = []
        self.lr_schedulers: list[LRScheduler] = []
        self.experimental = PyTorchExperimentalContext(self)
        optimizations = env.config.optimizations
        self._managed = env.managed_training
        self._size = self.distributed.get_size()
        self._aggregation_frequency = optimizations.aggregation_frequency
        self._average_aggregated_gradients = optimizations.average_aggregated_gradients
        # Set by the controller: the global index of the batch being trained, and the
        # number of batches in an epoch (None until the training data is loaded).
        self._batch_idx = 0
        self._epoch_len: int | None = None
        self._scaler: torch.amp.GradScaler | None = None
        self._auto_amp = False
        # The scaler backward() and step_optimizer() use by themselves: automatic AMP only.
        self._auto_scaler: torch.amp.GradScaler | None = None
        self._amp_steps = 0
        self._training_reducers: list[tuple[str | None, MetricReducer]] = []
        self._validation_reducers: list[tuple[str | None, MetricReducer]] = []
        self._warned_types: set[type] = set()
        if optimizations.mixed_precision != "O0":
            self._enable_auto_amp()

    # -- wrapping --------------------------------------------------------------------------

    def wrap_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """Register a model; managed: moved to ``device``, and DDP over several processes.

        Returns what the trial should call: the DDP wrapper when there is one.
        """
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"wrap_model() takes a torch.nn.Module, not {type(model).__name__}")
        if self._managed:
            model = model.to(self.device)
            if self._size > 1:
                device_ids = [self.device.index] if self.device.type == "cuda" else None
                model = torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
        self.models.append(model)
        return model

    def wrap_optimizer(
        self, optimizer: torch.optim.Optimizer, backward_passes_per_step: int = 1
    ) -> torch.optim.Optimizer:
        """Register an optimizer for ``step_optimizer`` and checkpoints; returns it.

        ``backward_passes_per_step`` (>= 1) is accepted for compatibility: it configured
        Horovod, and DistributedDataParallel synchronises gradients by itself.
        """
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(
                f"wrap_optimizer() takes a torch.optim.Optimizer, not {type(optimizer).__name__}"
            )
        if isinstance(backward_passes_per_step, bool) or backward_passes_per_step < 1:
            raise ValueError(
                f"backward_passes_per_step must be >= 1, got {backward_passes_per_step!r}"
            )
        self.optimizers.append(optimizer)
        return optimizer

    def wrap_lr_scheduler(
        self,
        lr_scheduler: torch.optim.lr_scheduler.LRScheduler | Any,
        step_mode: LRScheduler.StepMode,
    ) -> Any:
        """Register a scheduler that the controller steps per ``step_mode``; returns it."""
        plateau = isinstance(lr_scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
        if plateau and step_mode is not LRScheduler.StepMode.MANUAL_STEP:
            raise InvalidExperiment(_PLATEAU_HINT)
        wrapper = LRScheduler(lr_scheduler, step_mode)
        optimizer = getattr(lr_scheduler, "optimizer", None)
        if optimizer is not None and not any(optimizer is o for o in self.optimizers):
            raise ValueError(
                "the scheduler's optimizer was not wrapped: call "
                "context.wrap_optimizer(optimizer) before context.wrap_lr_scheduler()"
            )
        self.lr_schedulers.append(wrapper)
        return lr_scheduler

    def wrap_scaler(self, scaler: torch.amp.GradScaler) -> torch.amp.GradScaler:
        """Register the trial's GradScaler so that it is checkpointed; returns it."""
        if self._scaler is not None and scaler is not self._scaler:
            raise ValueError("a trial uses one GradScaler; wrap_scaler() was already called")
        self._scaler = scaler
        if self._auto_amp:
            self._auto_scaler = scaler
        return scaler

    def wrap_reducer(
        self,
        reducer: MetricReducer | Callable[[list[Any]], Any],
        name: str | None = None,
        for_training: bool = True,
        for_validation: bool = True,
    ) -> MetricReducer:
        """Reduce a custom metric over batches and ranks (see ``MetricReducer``).

        With ``name`` its value is the metric ``name``; without, it must be a dict of
        metrics. Returns the reducer the trial feeds (a plain function is wrapped in one
        with ``update(value)``).
        """
        if not (for_training or for_validation):
            raise ValueError("wrap_reducer(): for_training and for_validation are both False")
        wrapped = as_metric_reducer(reducer)
        if for_training:
            self._training_reducers.append((name, wrapped))
        if for_validation:
            self._validation_reducers.append((name, wrapped))
        return wrapped

    def _enable_auto_amp(self) -> torch.amp.GradScaler | None:
        self._auto_amp = True
        if self._scaler is None and self.device.type == "cuda":
            self._scaler = torch.amp.GradScaler("cuda")
        self._auto_scaler = self._scaler
        return self._scaler

    def autocast_dtype(self) -> torch.dtype | None:
        """The dtype automatic mixed precision computes in; None when it is off."""
        if not self._auto_amp:
            return None
        return torch.float16 if self.device.type == "cuda" else torch.bfloat16

    # -- training steps ----------------------------------------------------------------------

    def to_device(self, data: Any) -> Any:
        """``data`` with every tensor on this rank's device (see ``detlite.pytorch.to_device``)."""
        return to_device(data, self.device, self._warned_types)

    def backward(
        self,
        loss: torch.Tensor,
        gradient: torch.Tensor | None = None,
        retain_graph: bool = False,
        create_graph: bool = False,
    ) -> None:
        """``loss.backward(...)``, scaled by the automatic AMP scaler when there is one."""
        if self._auto_scaler is not None:
            loss = self._auto_scaler.scale(loss)
        loss.backward(  # type: ignore[no-untyped-call]
            gradient=gradient, retain_graph=retain_graph, create_graph=create_graph
        )

    def step_optimizer(
        self,
        optimizer: torch.optim.Optimizer,
        clip_grads: Callable[[Iterable[torch.nn.Parameter]], Any] | None = None,
        auto_zero_grads: bool = True,
        scaler: torch.amp.GradScaler | None = None,
    ) -> None:
        """Step ``optimizer`` on every ``optimizations.aggregation_frequency``-th batch.

        On that batch: divide the accumulated gradients by the frequency (if
        ``average_aggregated_gradients``), call ``clip_grads(parameters)``, step (through
        ``scaler``, or the automatic AMP one), and zero the gradients if
        ``auto_zero_grads``. On the other batches gradients accumulate and nothing happens.
        """
        frequency = self._aggregation_frequency
        if frequency != 1:
            if not auto_zero_grads:
                raise InvalidExperiment(
                    "step_optimizer(auto_zero_grads=False) cannot be used with "
                    f"optimizations.aggregation_frequency = {frequency}: gradients "
                    "accumulate over the batches between steps and must be zeroed after"
                )
            if (self._batch_idx + 1) % frequency:
                return
        # Optimizers compare by identity, so `in` is the cheap identity check here.
        if optimizer not in self.optimizers:
            raise ValueError("step_optimizer() got an optimizer that wrap_optimizer() never saw")
        if frequency != 1 and self._average_aggregated_gradients:
            with torch.no_grad():
                for group in optimizer.param_groups:
                    for param in group["params"]:
                        if param.grad is not None:
                            param.grad.div_(frequency)
        if scaler is None:
            scaler = self._auto_scaler
        if clip_grads is not None:
            if scaler is not None:
                scaler.unscale_(optimizer)
            clip_grads([p for group in optimizer.param_groups for p in group["params"]])
        if scaler is None:
            optimizer.step()
        else:
            scaler.step(optimizer)
            if scaler is self._auto_scaler:
                self._amp_steps += 1
        if auto_zero_grads:
            optimizer.zero_grad()

    # -- where training is ---------------------------------------------------------------------

    def _epoch_length(self) -> int:
        if self._epoch_len is None:
            raise RuntimeError(
                "epochs are known once training has started: call this from train_batch "
                "or a callback's training hooks"
            )
        return self._epoch_len

    def is_epoch_start(self) -> bool:
        """Whether the batch being trained is the first of an epoch."""
        return self._batch_idx % self._epoch_length() == 0

    def is_epoch_end(self) -> bool:
        """Whether the batch being trained is the last of an epoch."""
        return (self._batch_idx + 1) % self._epoch_length() == 0

    def current_train_epoch(self) -> int:
        return self._batch_idx // self._epoch_length()

    def current_train_batch(self) -> int:
        self._epoch_length()
        return self._batch_idx
