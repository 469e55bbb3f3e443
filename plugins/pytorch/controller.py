"""``PyTorchController``: the training loop the harness drives for a ``PyTorchTrial``.

``train(n)`` continues one endless, rank-sharded iterator over the training data (built
once, with ``skip = batches_trained``; rebuilt only after ``load()``). Per batch it moves
the batch to the device (unless torch's collation already left it there), calls
``train_batch`` (under autocast and DDP ``no_sync`` only when they apply), keeps the
detached metric values, and steps the LR schedulers that are due. Nothing per batch
leaves the device: metrics are reduced once per ``train()`` call.

An epoch is ``len()`` of this rank's training loader (Determined's definition, which
follows the data actually seen): ``epoch_idx = batch_idx // len(loader)``. The config's
``records_per_epoch`` only converts searcher lengths given in epochs.

``train`` and ``validate`` are collective (every rank calls them, in the same order);
``save`` is not, and runs on the chief alone.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch.nn.parallel import DistributedDataParallel

from detlite.errors import InvalidExperiment
from detlite.interfaces import DevicePlacement, TrainResult, TrialController, ValidationResult
from detlite.pytorch._metrics import as_metrics, reduce_custom, training_metrics
from detlite.pytorch._validation import evaluate_batches, evaluate_full_dataset, evaluating
from detlite.pytorch.callback import DEPRECATED_HOOKS, PyTorchCallback, overrides
from detlite.pytorch.checkpoint import build_state, read_state, restore_state, write_state
from detlite.pytorch.context import PyTorchTrialContext
from detlite.pytorch.data import DataLoader
from detlite.pytorch.devices import release_process_group, to_device
from detlite.pytorch.lr_scheduler import LRScheduler
from detlite.pytorch.trial import PyTorchTrial, evaluation_method
from detlite.trial import Trial, TrialContext

__all__ = ["PyTorchController"]

log = logging.getLogger("detlite.trial")

_HOOKS = (
    "on_training_epoch_start",
    "on_training_workload_end",
    "on_validation_start",
    "on_validation_epoch_start",
    "on_validation_step_start",
    "on_validation_step_end",
    "on_validation_epoch_end",
    "on_validation_end",
    "on_checkpoint_load_start",
    "on_checkpoint_save_start",
    "on_checkpoint_end",
)


class PyTorchController(TrialController):
    """Trains, validates, saves and loads one ``PyTorchTrial``."""

    checkpoint_format: ClassVar[str] = "torch-state-dict"
    trial: PyTorchTrial
    context: PyTorchTrialContext

    def __init__(self, trial: Trial, context: TrialContext, placement: DevicePlacement) -> None:
        if not isinstance(trial, PyTorchTrial) or not isinstance(context, PyTorchTrialContext):
            raise TypeError("PyTorchController runs PyTorchTrial subclasses")
        super().__init__(trial, context, placement)
        self._name = type(trial).__qualname__
        self._evaluation = evaluation_method(type(trial))
        if not context.models:
            raise InvalidExperiment(
                f"{self._name} wrapped no model: call context.wrap_model(model) in __init__"
            )
        self.callbacks = self._build_callbacks()
        self._hooks: dict[str, list[PyTorchCallback]] = {
            hook: [cb for cb in self.callbacks.values() if overrides(cb, hook)] for hook in _HOOKS
        }
        self._managed = context.env.managed_training
        self._size = placement.size
        self._rank = placement.rank
        self._seed = context.get_trial_seed()
        self._train_source: DataLoader | None = None
        self._train_iter: Iterator[Any] | None = None
        self._epoch_len = 0
        self._move_batches = True
        self._validation_source: DataLoader | None = None
        self._validation_loaders: dict[bool, Any] = {}
        self._closed = False
        if self._managed:
            log.info("trial %d %s", context.get_trial_id(), placement.describe())

    def _build_callbacks(self) -> dict[str, PyTorchCallback]:
        callbacks = self.trial.build_callbacks()
        if not isinstance(callbacks, dict):
            raise TypeError(
                f"{self._name}.build_callbacks() must return a dict of name -> "
                f"PyTorchCallback, not {type(callbacks).__name__}"
            )
        for name, callback in callbacks.items():
            if not isinstance(callback, PyTorchCallback):
                raise TypeError(
                    f"{self._name}.build_callbacks()[{name!r}] is a {type(callback).__name__}, "
                    "not a detlite.pytorch.PyTorchCallback"
                )
            for hook in DEPRECATED_HOOKS:
                if overrides(callback, hook):
                    warnings.warn(
                        f"callback {name!r} overrides {hook}(), which is deprecated; use "
                        f"{hook.replace('_step', '')}() instead",
                        FutureWarning,
                        stacklevel=2,
                    )
        return dict(callbacks)

    def _call(self, hook: str, *args: Any) -> None:
        for callback in self._hooks[hook]:
            getattr(callback, hook)(*args)

    # -- training ----------------------------------------------------------------------------

    def _training_iterator(self) -> Iterator[Any]:
        if self._train_iter is None:
            if self._train_source is None:
                self._train_source = self._check_loader(
                    self.trial.build_training_data_loader(), "build_training_data_loader"
                )
            loader = self._train_source.get_data_loader(
                repeat=True,
                skip=self.batches_trained,
                num_replicas=self._size,
                rank=self._rank,
                seed=self._seed,
            )
            epoch_len = len(loader)
            if epoch_len == 0:
                raise InvalidExperiment(
                    f"{self._name}.build_training_data_loader() yields no batches"
                )
            self._epoch_len = self.context._epoch_len = epoch_len
            # torch's default collation already gives CPU tensors (NumPy arrays converted),
            # which to_device would leave as they are: on the CPU it is skipped then.
            on_cpu = self.context.device.type == "cpu"
            self._move_batches = not (on_cpu and self._train_source.collate_fn is None)
            self._train_iter = iter(loader)
        return self._train_iter

    def _check_loader(self, loader: Any, method: str) -> DataLoader:
        if not isinstance(loader, DataLoader):
            raise TypeError(
                f"{self._name}.{method}() must return a detlite.pytorch.DataLoader (it takes "
                f"torch.utils.data.DataLoader's arguments), not {type(loader).__name__}"
            )
        return loader

    def _batch_context(self) -> Callable[[int], contextlib.AbstractContextManager[Any]] | None:
        """What to enter around ``train_batch``; None (the common case) when nothing."""
        context = self.context
        dtype = context.autocast_dtype()
        frequency = context._aggregation_frequency
        ddp = [m for m in context.models if isinstance(m, DistributedDataParallel)]
        accumulate = ddp if frequency > 1 else []
        if dtype is None and not accumulate:
            return None
        device_type = context.device.type

        def enter(batch_idx: int) -> contextlib.AbstractContextManager[Any]:
            stack = contextlib.ExitStack()
            if dtype is not None:
                stack.enter_context(torch.autocast(device_type, dtype=dtype))
            if accumulate and (batch_idx + 1) % frequency:
                # Gradients only accumulate on this batch: skip DDP's all-reduce.
                for model in accumulate:
                    stack.enter_context(model.no_sync())
            return stack

        return enter

    def train(self, num_batches: int) -> TrainResult:
        if num_batches < 0:
            raise ValueError(f"num_batches must be >= 0, got {num_batches}")
        context = self.context
        if not context.optimizers:
            raise InvalidExperiment(
                f"{self._name} wrapped no optimizer: call context.wrap_optimizer(optimizer) "
                "in __init__"
            )
        iterator = self._training_iterator()
        for model in context.models:
            model.train()
        for _, reducer in context._training_reducers:
            reducer.reset()
        values = self._run_batches(iterator, num_batches)
        metrics, batch_metrics = training_metrics(values, num_batches, context.device, self._size)
        reduce_custom(context._training_reducers, metrics, self._size, self._name)
        self._call("on_training_workload_end", metrics, batch_metrics)
        num_inputs = num_batches * context.get_per_slot_batch_size() * self._size
        return TrainResult(metrics, batch_metrics, num_inputs=num_inputs)

    def _run_batches(self, iterator: Iterator[Any], num_batches: int) -> dict[str, list[Any]]:
        # The per-batch path: everything it needs is bound to locals first.
        context = self.context
        train_batch = self.trial.train_batch
        device = context.device
        warned = context._warned_types
        move = self._move_batches
        epoch_len = self._epoch_len
        frequency = context._aggregation_frequency
        epoch_hooks = self._hooks["on_training_epoch_start"]
        every_batch = [
            s for s in context.lr_schedulers if s.step_mode is LRScheduler.StepMode.STEP_EVERY_BATCH
        ]
        every_epoch = [
            s for s in context.lr_schedulers if s.step_mode is LRScheduler.StepMode.STEP_EVERY_EPOCH
        ]
        schedule = bool(every_batch or every_epoch)
        around = self._batch_context()
        scaler = context._auto_scaler
        tensor = torch.Tensor
        trial_class = type(self.trial)
        values: dict[str, list[Any]] = {}
        collect = values.setdefault
        idx = self.batches_trained
        end = idx + num_batches
        try:
            while idx < end:
                batch = next(iterator)
                if move:
                    batch = to_device(batch, device, warned)
                context._batch_idx = idx
                if epoch_hooks and idx % epoch_len == 0:
                    for callback in epoch_hooks:
                        callback.on_training_epoch_start()
                if around is None:
                    out = train_batch(batch, idx // epoch_len, idx)
                else:
                    with around(idx):
                        out = train_batch(batch, idx // epoch_len, idx)
                if type(out) is not dict:
                    out = as_metrics(out, trial_class)
                for name, value in out.items():
                    collect(name, []).append(value.detach() if isinstance(value, tensor) else value)
                idx += 1
                if scaler is not None and context._amp_steps:
                    scaler.update()
                    context._amp_steps = 0
                if schedule and idx % frequency == 0:
                    for scheduler in every_batch:
                        scheduler.step()
                    if idx % epoch_len < frequency:
                        for scheduler in every_epoch:
                            scheduler.step()
        finally:
            self.batches_trained = idx
        return values

    # -- validation ----------------------------------------------------------------------------

    def _validation_loader(self, sharded: bool) -> Any:
        if sharded not in self._validation_loaders:
            if self._validation_source is None:
                self._validation_source = self._check_loader(
                    self.trial.build_validation_data_loader(), "build_validation_data_loader"
                )
            replicas, rank = (self._size, self._rank) if sharded else (1, 0)
            self._validation_loaders[sharded] = self._validation_source.get_data_loader(
                num_replicas=replicas, rank=rank, seed=self._seed
            )
        return self._validation_loaders[sharded]

    def validate(self, max_batches: int | None = None) -> ValidationResult:
        if max_batches is not None and max_batches < 1:
            raise ValueError(f"max_batches must be >= 1 or None, got {max_batches}")
        context = self.context
        if max_batches is None and context.env.test_mode:
            max_batches = 1  # test mode validates on one batch, as Determined's did
        self._call("on_validation_start")
        self._call("on_validation_step_start")
        self._call("on_validation_epoch_start")
        for _, reducer in context._validation_reducers:
            reducer.reset()
        with evaluating(context):
            if self._evaluation == "evaluate_batch":
                metrics, num_inputs, outputs = evaluate_batches(
                    self.trial,
                    context,
                    self._validation_loader(sharded=True),
                    max_batches,
                    self._size,
                    keep_outputs=bool(self._hooks["on_validation_epoch_end"]),
                )
            else:
                loader = self._validation_loader(sharded=False) if self._rank == 0 else None
                metrics, num_inputs = evaluate_full_dataset(
                    self.trial, loader, max_batches, self._size
                )
                outputs = [metrics]
        reduce_custom(context._validation_reducers, metrics, self._size, self._name)
        self._call("on_validation_epoch_end", outputs)
        self._call("on_validation_step_end", metrics)
        self._call("on_validation_end", metrics)
        return ValidationResult(metrics, num_inputs=num_inputs)

    # -- checkpoints ---------------------------------------------------------------------------

    def save(self, path: Path) -> None:
        state = build_state(self.context, self.callbacks, self.batches_trained, self._seed)
        self._call("on_checkpoint_save_start", state)
        write_state(state, Path(path))

    def checkpoint_saved(self, path: Path) -> None:
        # Only now is the directory complete (metadata.json, code/) and at its final name.
        self._call("on_checkpoint_end", str(path))

    def load(self, path: Path, **kwargs: Any) -> None:
        # Unmanaged trials keep their models where the user put them: the CPU by default.
        kwargs.setdefault("map_location", self.context.device if self._managed else "cpu")
        path = Path(path)
        state = read_state(path, **kwargs)
        self._call("on_checkpoint_load_start", state)
        self.batches_trained = restore_state(
            state, self.context, self.callbacks, path, restore_rng=self._managed
        )
        # The next train() resumes the data where the checkpoint left it, in its order.
        self._seed = int(state.get("data_seed", self._seed))
        self._train_iter = None

    def close(self) -> None:
        """Drop the data iterators; over several processes, swap the trial's DDP wrappers
        for their modules and release the process group (the last user destroys it)."""
        if self._closed:
            return
        self._closed = True
        self._train_iter = None
        self._validation_loaders.clear()
        if self._size > 1:
            self._release_ddp()
            release_process_group()

    def _release_ddp(self) -> None:
        """Replace every DDP wrapper the trial holds by its module (same weights), so that
        nothing holds the process group when it is destroyed."""
        context = self.context
        wrappers = [m for m in context.models if isinstance(m, DistributedDataParallel)]
        if not wrappers:
            return

        def unwrapped(value: Any) -> Any:
            return next((w.module for w in wrappers if value is w), value)

        context.models[:] = [unwrapped(m) for m in context.models]
        for name, value in list(vars(self.trial).items()):
            if isinstance(value, DistributedDataParallel):
                setattr(self.trial, name, unwrapped(value))
