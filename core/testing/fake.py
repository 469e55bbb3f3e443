"""A real but tiny framework in pure Python, for testing detlite without a deep learning one.

The model is a dict of floats, the optimizer is SGD with momentum and a checkpoint is one
JSON file. Like torch, the framework has a global random generator (``manual_seed``,
``get_rng_state``, ``set_rng_state``) that initialises weights and drives dropout, so a
resumed trial trains exactly like an uninterrupted one only if its controller saved and
restored that state along with the weights, the momentum and the batch counter.

``LinearTrial`` fits ``y = a*x + b`` to records generated from their index; ``linear_config``
and ``linear_hparams`` are an experiment config and hyperparameters for it.
"""

from __future__ import annotations

import copy
import json
import math
import random
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from detlite.errors import CheckpointError, CorruptCheckpoint
from detlite.interfaces import (
    CheckpointFormat,
    DevicePlacement,
    FrameworkAdapter,
    TrainResult,
    TrialController,
    ValidationResult,
)
from detlite.testing import FakeFrameworkPlugin  # defined there so registering it imports nothing
from detlite.trial import DistributedContext, Trial, TrialContext, TrialEnv

__all__ = [
    "STATE_FILE",
    "FakeAdapter",
    "FakeController",
    "FakeFrameworkPlugin",
    "FakeJSONFormat",
    "FakeTrial",
    "FakeTrialContext",
    "LinearTrial",
    "Model",
    "Record",
    "dropout",
    "get_rng_state",
    "linear_config",
    "linear_hparams",
    "make_record",
    "manual_seed",
    "read_state",
    "set_rng_state",
    "uniform",
]

Record = tuple[float, float]
Model = dict[str, float]

#: The file a fake checkpoint holds besides ``metadata.json``.
STATE_FILE = "fake_state.json"

# -- the framework's global random generator (torch.manual_seed and friends) ----------------

_generator = random.Random(0)


def manual_seed(seed: int) -> None:
    _generator.seed(seed)


def get_rng_state() -> list[Any]:
    """The generator's state as JSON-ready data."""
    version, internal, gauss_next = _generator.getstate()
    return [version, list(internal), gauss_next]


def set_rng_state(state: Sequence[Any]) -> None:
    version, internal, gauss_next = state
    _generator.setstate((version, tuple(internal), gauss_next))


def uniform(low: float, high: float) -> float:
    return _generator.uniform(low, high)


def dropout(value: float, p: float) -> float:
    """``value`` zeroed with probability ``p``, otherwise scaled by ``1 / (1 - p)``."""
    if p <= 0.0:
        return value
    if _generator.random() < p:
        return 0.0
    return value / (1.0 - p)


# -- the user-facing trial and its context ---------------------------------------------------


class FakeTrialContext(TrialContext):
    """A TrialContext that trains one wrapped model with SGD and momentum."""

    def __init__(self, env: TrialEnv, distributed: DistributedContext | None = None) -> None:
        super().__init__(env, distributed)
        self.model: Model | None = None
        self.velocity: Model = {}

    def wrap_model(self, params: Mapping[str, float]) -> Model:
        """Register the model's parameters; returns the dict that training updates in place."""
        if self.model is not None:
            raise RuntimeError("the fake framework trains one model per trial; wrap it once")
        self.model = {name: float(value) for name, value in params.items()}
        self.velocity = dict.fromkeys(self.model, 0.0)
        return self.model

    def require_model(self) -> Model:
        if self.model is None:
            raise RuntimeError("call context.wrap_model(...) in the trial's __init__ first")
        return self.model

    def get_lr(self) -> float:
        return float(self.get_hparam("lr"))

    def get_momentum(self) -> float:
        return float(self.env.hparams.get("momentum", 0.0))

    def step(self, grads: Mapping[str, float]) -> None:
        """One SGD step with momentum on the wrapped model."""
        model = self.require_model()
        lr, momentum = self.get_lr(), self.get_momentum()
        for name, grad in grads.items():
            if name not in model:
                raise KeyError(
                    f"gradient for unknown parameter {name!r}; the model has {sorted(model)}"
                )
            self.velocity[name] = momentum * self.velocity[name] + grad
            model[name] -= lr * self.velocity[name]


class FakeTrial(Trial):
    """The fake framework's Trial: the same shape as PyTorchTrial, over lists of records."""

    trial_context_class: ClassVar[type[TrialContext]] = FakeTrialContext

    @abstractmethod
    def __init__(self, context: FakeTrialContext) -> None:
        """Wrap the model with ``context.wrap_model``."""

    @abstractmethod
    def build_training_data(self) -> list[Record]:
        """Every training record; batches repeat it from the start once it runs out."""

    @abstractmethod
    def build_validation_data(self) -> list[Record]: ...

    @abstractmethod
    def train_batch(self, batch: list[Record], epoch_idx: int, batch_idx: int) -> dict[str, Any]:
        """Compute gradients, call ``context.step(grads)`` and return the batch's metrics."""

    @abstractmethod
    def evaluate_batch(self, batch: list[Record]) -> dict[str, Any]: ...


# -- the harness side: controller, adapter, checkpoint format ---------------------------------


def _mean(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Each metric averaged over the rows that report it."""
    names = list(dict.fromkeys(name for row in rows for name in row))
    return {
        name: math.fsum(float(row[name]) for row in rows if name in row)
        / sum(1 for row in rows if name in row)
        for name in names
    }


def read_state(path: Path) -> dict[str, Any]:
    """The parsed state file of a fake checkpoint directory."""
    state_path = path / STATE_FILE
    try:
        state = json.loads(state_path.read_text())
    except FileNotFoundError as exc:
        raise CorruptCheckpoint(f"{state_path} is missing from the fake-json checkpoint") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptCheckpoint(f"{state_path} is not valid JSON ({exc})") from exc
    keys = ("model", "velocity", "rng_state", "batches_trained")
    if not isinstance(state, dict) or any(key not in state for key in keys):
        raise CorruptCheckpoint(f"{state_path} must be a JSON object with {', '.join(keys)}")
    return state


class FakeController(TrialController):
    """The fake framework's training loop: batch ``k`` is records ``k*B ..`` of the data."""

    checkpoint_format: ClassVar[str] = "fake-json"
    trial: FakeTrial
    context: FakeTrialContext

    def __init__(self, trial: Trial, context: TrialContext, placement: DevicePlacement) -> None:
        if not isinstance(trial, FakeTrial) or not isinstance(context, FakeTrialContext):
            raise TypeError("FakeController runs FakeTrial subclasses with a FakeTrialContext")
        super().__init__(trial, context, placement)
        self._training: list[Record] | None = None
        self._validation: list[Record] | None = None

    def _training_data(self) -> list[Record]:
        if self._training is None:
            self._training = list(self.trial.build_training_data())
            if not self._training:
                raise ValueError("build_training_data() returned no records")
        return self._training

    def _validation_data(self) -> list[Record]:
        if self._validation is None:
            self._validation = list(self.trial.build_validation_data())
        return self._validation

    def train(self, num_batches: int) -> TrainResult:
        if num_batches < 0:
            raise ValueError(f"num_batches must be >= 0, got {num_batches}")
        data = self._training_data()
        per_slot = self.context.get_per_slot_batch_size()
        global_size = self.context.get_global_batch_size()
        rows: list[dict[str, Any]] = []
        for _ in range(num_batches):
            # Batches index the endless repetition of the data, so where training resumes
            # follows from batches_trained alone, with no loader state to save.
            first = self.batches_trained * global_size
            start = first + self.placement.rank * per_slot
            batch = [data[(start + i) % len(data)] for i in range(per_slot)]
            metrics = self.trial.train_batch(batch, first // len(data), self.batches_trained)
            rows.append(dict(metrics))
            self.batches_trained += 1
        return TrainResult(_mean(rows), rows, num_inputs=num_batches * per_slot)

    def validate(self, max_batches: int | None = None) -> ValidationResult:
        if max_batches is not None and max_batches < 1:
            raise ValueError(f"max_batches must be >= 1 or None, got {max_batches}")
        data = self._validation_data()
        size = self.context.get_per_slot_batch_size()
        batches = [data[i : i + size] for i in range(0, len(data), size)][:max_batches]
        rows = [dict(self.trial.evaluate_batch(batch)) for batch in batches]
        return ValidationResult(_mean(rows), num_inputs=sum(len(b) for b in batches))

    def save(self, path: Path) -> None:
        state = {
            "model": self.context.require_model(),
            "velocity": self.context.velocity,
            "rng_state": get_rng_state(),
            "batches_trained": self.batches_trained,
        }
        FakeJSONFormat().save(state, path)

    def load(self, path: Path, **kwargs: Any) -> None:
        state = read_state(path)
        model = self.context.require_model()
        if set(state["model"]) != set(model):
            raise CheckpointError(
                f"the checkpoint at {path} holds parameters {sorted(state['model'])} but this "
                f"trial's model has {sorted(model)}; was it written by another trial class?"
            )
        # In place: the trial holds this very dict from wrap_model().
        model.update({name: float(value) for name, value in state["model"].items()})
        self.context.velocity = {name: float(v) for name, v in state["velocity"].items()}
        set_rng_state(state["rng_state"])
        self.batches_trained = int(state["batches_trained"])


class FakeAdapter(FrameworkAdapter):
    """Runs FakeTrial subclasses on the CPU. Its version is detlite's."""

    name: ClassVar[str] = "fake"
    distribution: ClassVar[str] = "detlite"

    def owns(self, trial_class: type) -> bool:
        return isinstance(trial_class, type) and issubclass(trial_class, FakeTrial)

    def controller_for(self, trial_class: type[Trial]) -> type[TrialController]:
        if not self.owns(trial_class):
            raise TypeError(f"the fake framework does not run {trial_class.__qualname__}")
        return FakeController

    def seed(self, seed: int) -> None:
        manual_seed(seed)


class FakeJSONFormat(CheckpointFormat):
    """``fake-json``: one JSON file; loading gives the model's dict of floats."""

    name: ClassVar[str] = "fake-json"
    framework: ClassVar[str] = "fake"

    def save(self, state: Any, path: Path) -> None:
        # repr-exact floats: a loaded model equals the saved one bit for bit.
        (path / STATE_FILE).write_text(json.dumps(state))

    def load(self, path: Path, metadata: Mapping[str, Any], **kwargs: Any) -> Model:
        return {name: float(value) for name, value in read_state(path)["model"].items()}


# -- a sample trial and its experiment -------------------------------------------------------

TRUE_A = 3.0
TRUE_B = -0.5


def make_record(index: int) -> Record:
    """Record ``index`` of the synthetic data: x in [-1, 1], y = 3x - 0.5 plus fixed noise."""
    x = (index * 37 % 101) / 50.0 - 1.0
    return x, TRUE_A * x + TRUE_B + 0.05 * math.sin(index)


class LinearTrial(FakeTrial):
    """Fits ``y = a*x + b`` by SGD, with dropout on the input while training.

    Hyperparameters: ``global_batch_size``, ``lr``, and optionally ``momentum`` and
    ``dropout``. The ``data`` section may set ``train_records`` and ``validation_records``.
    """

    def __init__(self, context: FakeTrialContext) -> None:
        self.context = context
        self.dropout = float(context.env.hparams.get("dropout", 0.0))
        self.model = context.wrap_model({"a": uniform(-1.0, 1.0), "b": uniform(-1.0, 1.0)})

    def build_training_data(self) -> list[Record]:
        count = int(self.context.get_data_config().get("train_records", 20))
        return [make_record(i) for i in range(count)]

    def build_validation_data(self) -> list[Record]:
        count = int(self.context.get_data_config().get("validation_records", 12))
        # Indices far from the training ones: held-out records from the same line.
        return [make_record(10_000 + i) for i in range(count)]

    def train_batch(self, batch: list[Record], epoch_idx: int, batch_idx: int) -> dict[str, Any]:
        a, b = self.model["a"], self.model["b"]
        loss = grad_a = grad_b = 0.0
        for x, y in batch:
            seen = dropout(x, self.dropout)
            error = a * seen + b - y
            loss += error * error
            grad_a += 2.0 * error * seen
            grad_b += 2.0 * error
        n = len(batch)
        self.context.step({"a": grad_a / n, "b": grad_b / n})
        return {"loss": loss / n}

    def evaluate_batch(self, batch: list[Record]) -> dict[str, Any]:
        a, b = self.model["a"], self.model["b"]
        errors = [a * x + b - y for x, y in batch]
        return {
            "validation_loss": math.fsum(e * e for e in errors) / len(errors),
            "abs_error": math.fsum(abs(e) for e in errors) / len(errors),
        }


_LINEAR_HPARAMS: dict[str, Any] = {
    "global_batch_size": 4,
    "lr": 0.1,
    "momentum": 0.5,
    "dropout": 0.1,
}

_LINEAR_CONFIG: dict[str, Any] = {
    "description": "fake-linear",
    "entrypoint": "detlite.testing.fake:LinearTrial",
    "searcher": {
        "name": "single",
        "metric": "validation_loss",
        "smaller_is_better": True,
        "max_length": {"batches": 10},
    },
    "hyperparameters": dict(_LINEAR_HPARAMS),
    "data": {"train_records": 20, "validation_records": 12},
}


def linear_hparams() -> dict[str, Any]:
    """Concrete hyperparameters for LinearTrial (a new dict each call)."""
    return dict(_LINEAR_HPARAMS)


def linear_config() -> dict[str, Any]:
    """An experiment config for LinearTrial: single searcher, 10 batches (a new copy)."""
    return copy.deepcopy(_LINEAR_CONFIG)
