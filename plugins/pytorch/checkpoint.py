"""The ``torch-state-dict`` checkpoint format: ``state_dict.pth`` in the checkpoint directory.

``state_dict.pth`` is one ``torch.save`` dict (Determined's layout, section 5):

- ``models_state_dict``, ``optimizers_state_dict``, ``lr_schedulers_state_dict``: lists,
  in the order the trial wrapped them (models without their DDP wrapper);
- ``scaler_state_dict``: the GradScaler's, if the trial has one;
- ``callbacks``: ``{name: callback.state_dict()}``;
- ``rng_state``: ``cpu_rng_state``, ``np_rng_state``, ``random_rng_state`` and, with CUDA,
  ``gpu_rng_state``, all as tensors and plain data so that ``torch.load(weights_only=True)``
  (the default here) reads them;
- ``batches_trained``: where training resumes; the loader skips that many batches;
- ``data_seed``: the seed of the training loader's generator, so that the resumed loader
  replays the same shuffles even in a trial built with another seed (a warm start).

Loading restores by index and refuses a checkpoint whose lists do not match the trial's.
Determined's legacy single-object keys (``model_state_dict``, ``optimizer_state_dict``,
``lr_scheduler``) and older file locations are read too.
"""

from __future__ import annotations

import os
import pickle
import random
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from detlite.errors import CheckpointError, CorruptCheckpoint
from detlite.interfaces import CheckpointFormat
from detlite.pytorch.devices import unwrap_model

if TYPE_CHECKING:
    from detlite.pytorch.callback import PyTorchCallback
    from detlite.pytorch.context import PyTorchTrialContext

__all__ = [
    "STATE_FILE",
    "TorchStateDictFormat",
    "build_state",
    "get_rng_state",
    "read_state",
    "restore_state",
    "set_rng_state",
    "write_state",
]

STATE_FILE = "state_dict.pth"
# Where Determined's older releases put the file, tried in this order after STATE_FILE.
_LEGACY_FILES = ("determined/state_dict.pth", "pedl/state_dict.pth", "checkpoint.pt")


# -- random generators -------------------------------------------------------------------------


def get_rng_state() -> dict[str, Any]:
    """Every global generator's state, in a form ``weights_only`` loading accepts."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "cpu_rng_state": torch.get_rng_state(),
        "np_rng_state": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(gauss),
        },
        "random_rng_state": [version, list(internal), gauss_next],
    }
    if torch.cuda.is_available():
        state["gpu_rng_state"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what ``get_rng_state`` returned (or Determined's tuple-valued numpy state)."""
    if "cpu_rng_state" in state:
        torch.set_rng_state(torch.as_tensor(state["cpu_rng_state"]).cpu())
    np_state = state.get("np_rng_state")
    if isinstance(np_state, Mapping):
        keys = torch.as_tensor(np_state["keys"]).cpu().numpy().astype(np.uint32)
        np.random.set_state(
            (
                np_state["kind"],
                keys,
                int(np_state["pos"]),
                int(np_state["has_gauss"]),
                float(np_state["cached_gaussian"]),
            )
        )
    elif np_state is not None:
        np.random.set_state(np_state)
    random_state = state.get("random_rng_state")
    if random_state is not None:
        version, internal, gauss_next = random_state
        random.setstate((version, tuple(internal), gauss_next))
    gpu_state = state.get("gpu_rng_state")
    if gpu_state is not None and torch.cuda.is_available():
        states = [torch.as_tensor(s).cpu() for s in gpu_state]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)
        else:
            warnings.warn(
                f"the checkpoint saved the RNG state of {len(states)} GPUs and this machine "
                f"has {torch.cuda.device_count()}; GPU random numbers will differ",
                stacklevel=2,
            )


# -- the state dict -----------------------------------------------------------------------------


def build_state(
    context: PyTorchTrialContext,
    callbacks: Mapping[str, PyTorchCallback],
    batches_trained: int,
    data_seed: int,
) -> dict[str, Any]:
    """Everything a trial needs to resume exactly, as one dict for ``torch.save``."""
    state: dict[str, Any] = {
        "models_state_dict": [unwrap_model(m).state_dict() for m in context.models],
        "optimizers_state_dict": [o.state_dict() for o in context.optimizers],
        "lr_schedulers_state_dict": [s.state_dict() for s in context.lr_schedulers],
        "callbacks": {name: cb.state_dict() for name, cb in callbacks.items()},
        "rng_state": get_rng_state(),
        "batches_trained": batches_trained,
        "data_seed": data_seed,
    }
    if context._scaler is not None:
        state["scaler_state_dict"] = context._scaler.state_dict()
    return state


def _listed(state: Mapping[str, Any], key: str, legacy: str) -> list[Any] | None:
    if key in state:
        return list(state[key])
    if legacy in state:
        return [state[legacy]]
    return None


def _check_count(what: str, saved: Sequence[Any], wrapped: Sequence[Any], path: Path) -> None:
    if len(saved) != len(wrapped):
        raise CheckpointError(
            f"the checkpoint at {path} holds {len(saved)} {what} but this trial wrapped "
            f"{len(wrapped)}; load it into the trial class (and hyperparameters) that wrote it"
        )


def restore_state(
    state: Mapping[str, Any],
    context: PyTorchTrialContext,
    callbacks: Mapping[str, PyTorchCallback],
    path: Path,
    *,
    restore_rng: bool = True,
) -> int:
    """Load ``state`` into the wrapped objects, by index; returns ``batches_trained``."""
    models = _listed(state, "models_state_dict", "model_state_dict")
    if models is None:
        raise CorruptCheckpoint(f"{path / STATE_FILE} holds no models_state_dict")
    _check_count("models", models, context.models, path)
    optimizers = _listed(state, "optimizers_state_dict", "optimizer_state_dict")
    if optimizers is not None:
        _check_count("optimizers", optimizers, context.optimizers, path)
    schedulers = _listed(state, "lr_schedulers_state_dict", "lr_scheduler")
    if schedulers is not None:
        _check_count("LR schedulers", schedulers, context.lr_schedulers, path)

    for model, model_state in zip(context.models, models, strict=True):
        unwrap_model(model).load_state_dict(model_state)
    if optimizers is not None:
        for optimizer, optimizer_state in zip(context.optimizers, optimizers, strict=True):
            optimizer.load_state_dict(optimizer_state)
    if schedulers is not None:
        for scheduler, scheduler_state in zip(context.lr_schedulers, schedulers, strict=True):
            scheduler.load_state_dict(scheduler_state)

    scaler_state = state.get("scaler_state_dict")
    if scaler_state is not None and context._scaler is not None:
        context._scaler.load_state_dict(scaler_state)
    elif scaler_state is not None:
        warnings.warn(
            f"the checkpoint at {path} has a GradScaler state but this trial has no scaler; "
            "it was ignored",
            stacklevel=2,
        )

    saved_callbacks = dict(state.get("callbacks") or {})
    for name, callback in callbacks.items():
        if name in saved_callbacks:
            callback.load_state_dict(saved_callbacks.pop(name))
    if saved_callbacks:
        warnings.warn(
            f"the checkpoint at {path} has state for callbacks {sorted(saved_callbacks)} that "
            "this trial does not build; it was ignored",
            stacklevel=2,
        )

    if restore_rng and state.get("rng_state") is not None:
        set_rng_state(state["rng_state"])
    return int(state.get("batches_trained", 0))


# -- files ----------------------------------------------------------------------------------------


def write_state(state: Mapping[str, Any], path: Path) -> None:
    """``torch.save`` into ``path/state_dict.pth`` through a temporary file and a rename."""
    fd, tmp = tempfile.mkstemp(prefix=f".{STATE_FILE}.", suffix=".tmp", dir=path)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(dict(state), fh)
        os.replace(tmp, path / STATE_FILE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_state(path: Path, **kwargs: Any) -> dict[str, Any]:
    """``torch.load`` of the checkpoint's state file; ``weights_only`` defaults to True."""
    candidates = [path / STATE_FILE, *(path / name for name in _LEGACY_FILES)]
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        raise CorruptCheckpoint(f"{path / STATE_FILE} is missing from the checkpoint")
    kwargs.setdefault("weights_only", True)
    try:
        state = torch.load(found, **kwargs)
    except pickle.UnpicklingError as exc:
        if kwargs["weights_only"]:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(
                f"{found} holds objects other than tensors and plain data, which "
                f"torch.load(weights_only=True) refuses to unpickle ({reason}). If you trust "
                "the checkpoint, load it with weights_only=False."
            ) from exc
        raise CorruptCheckpoint(f"{found} cannot be unpickled: {exc}") from exc
    except EOFError as exc:
        raise CorruptCheckpoint(f"{found} is truncated: {exc}") from exc
    except RuntimeError as exc:
        if "zip archive" in str(exc) or "central directory" in str(exc):
            raise CorruptCheckpoint(f"{found} is not a complete torch file: {exc}") from exc
        raise
    if not isinstance(state, dict):
        raise CorruptCheckpoint(f"{found} must hold a dict, not {type(state).__name__}")
    return state


class TorchStateDictFormat(CheckpointFormat):
    """Loads a ``torch-state-dict`` checkpoint for a user.

    ``load`` rebuilds the trial that wrote it from the checkpoint's ``code/`` (unmanaged),
    restores its state and returns its first wrapped ``torch.nn.Module``, or the trial itself
    with ``return_trial=True``. Other keyword arguments (``map_location``, ``weights_only``)
    reach ``torch.load``.
    """

    name: ClassVar[str] = "torch-state-dict"
    framework: ClassVar[str] = "pytorch"

    def save(self, state: Any, path: Path) -> None:
        write_state(state, path)

    def load(
        self, path: Path, metadata: Mapping[str, Any], return_trial: bool = False, **kwargs: Any
    ) -> Any:
        from detlite.checkpoint import rebuild_trial

        built = rebuild_trial(path, metadata, **kwargs)
        built.controller.close()
        if return_trial:
            return built.trial
        models = getattr(built.context, "models", [])
        if not models:
            raise CheckpointError(
                f"the trial that wrote {path} wraps no model; load it with return_trial=True"
            )
        return unwrap_model(models[0])
