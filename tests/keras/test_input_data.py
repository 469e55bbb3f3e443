"""``det.keras.InputData``, ``ArrayLike`` and ``SequenceAdapter``, as Determined's Keras
examples use them.

The trial below is written in Determined 0.15's style: its data methods are annotated with
``InputData`` (evaluated when the class is defined: no ``from __future__ import
annotations``), its training data is a tf.keras-era ``Sequence`` (no ``super().__init__``
call) wrapped in a ``SequenceAdapter`` with loading options, its validation data a pair of
``ArrayLike``. It must define, pass local test mode, run a search on the embedded master
(worker processes), and load from its best checkpoint as a ``keras.Model``.
"""

from __future__ import annotations

import typing
from pathlib import Path

import keras
import numpy as np
import pytest

from detlite.api import ExperimentState
from detlite.context import import_entrypoint
from detlite.experimental import create
from detlite.experimental._embedded import stop_embedded_master
from detlite.keras import InputData, SequenceAdapter
from detlite.keras._data import as_training_data
from tests.examples import write_context

MODEL_DEF = """
import keras
import numpy as np

from detlite.keras import ArrayLike, InputData, SequenceAdapter, TFKerasTrial, TFKerasTrialContext


class Batches(keras.utils.Sequence):
    def __init__(self, x, y, batch_size):
        self.x, self.y, self.batch_size = x, y, batch_size

    def __len__(self):
        return len(self.x) // self.batch_size

    def __getitem__(self, index):
        rows = slice(index * self.batch_size, (index + 1) * self.batch_size)
        return self.x[rows], self.y[rows]


def arrays(records: int, seed: int) -> tuple[ArrayLike, ArrayLike]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((records, 4)).astype("float32")
    return x, x.sum(axis=1, keepdims=True)


class AnnotatedTrial(TFKerasTrial):
    def __init__(self, context: TFKerasTrialContext) -> None:
        self.context = context

    def build_model(self) -> keras.Model:
        model = self.context.wrap_model(
            keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        )
        model.compile(optimizer=self.context.wrap_optimizer(keras.optimizers.SGD(0.01)), loss="mse")
        return model

    def build_training_data_loader(self) -> InputData:
        x, y = arrays(32, 0)
        batches = Batches(x, y, self.context.get_per_slot_batch_size())
        return SequenceAdapter(batches, use_multiprocessing=False, workers=2, max_queue_size=4)

    def build_validation_data_loader(self) -> InputData:
        return arrays(8, 1)
"""


@pytest.fixture
def context_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return write_context(tmp_path, monkeypatch, MODEL_DEF)


def test_an_annotated_trial_defines_and_passes_test_mode(context_dir: Path) -> None:
    trial = import_entrypoint("model_def:AnnotatedTrial", context_dir)
    config = {
        "hyperparameters": {"global_batch_size": 4},
        "searcher": {"name": "single", "metric": "val_loss", "max_length": {"batches": 8}},
    }
    result = create(trial, config, local=True, test=True, context_dir=str(context_dir))
    assert result.batches_trained == 5
    assert set(result.validation_metrics) == {"val_loss"}


def test_an_annotated_trial_searches_on_a_master_and_its_best_checkpoint_loads(
    context_dir: Path,
) -> None:
    trial = import_entrypoint("model_def:AnnotatedTrial", context_dir)
    config = {
        "hyperparameters": {"global_batch_size": 4},
        "searcher": {
            "name": "random",
            "metric": "val_loss",
            "max_trials": 2,
            "max_length": {"batches": 8},
        },
    }
    try:
        ref = create(trial, config, local=True, context_dir=str(context_dir))
        assert ref.get_state() is ExperimentState.COMPLETED
        model = ref.top_checkpoint().load()
    finally:
        stop_embedded_master()
    assert isinstance(model, keras.Model)
    assert tuple(model.predict(np.ones((3, 4), "float32"), verbose=0).shape) == (3, 1)


class Counting:
    """A sequence that is not a PyDataset: ``len`` and batch indexing are enough."""

    def __init__(self) -> None:
        self.epochs = 0

    def __len__(self) -> int:
        return 3

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return np.full((2, 4), index, "float32"), np.zeros((2, 1), "float32")

    def on_epoch_end(self) -> None:
        self.epochs += 1


def test_sequence_adapter_reads_the_sequence_with_its_loading_options() -> None:
    sequence = Counting()
    adapter = SequenceAdapter(sequence, use_multiprocessing=True, workers=3, max_queue_size=5)
    assert isinstance(adapter, keras.utils.PyDataset)
    assert (adapter.use_multiprocessing, adapter.workers, adapter.max_queue_size) == (True, 3, 5)
    assert len(adapter) == 3 and adapter[2][0][0, 0] == 2
    adapter.on_epoch_end()
    assert sequence.epochs == 1
    # The controller's windows over it keep the options Keras reads.
    window = as_training_data(adapter, 2, seed=0, shuffle=False).window(2, 2)["x"]
    assert (window.use_multiprocessing, window.workers, window.max_queue_size) == (True, 3, 5)
    assert [int(window[i][0][0, 0]) for i in range(2)] == [2, 0]

    with pytest.raises(TypeError, match=r"SequenceAdapter takes a keras\.utils\.Sequence"):
        SequenceAdapter(object())
    with pytest.raises(ValueError, match="workers"):
        SequenceAdapter(sequence, workers=0)


def test_input_data_names_every_form_the_controller_reads() -> None:
    members = typing.get_args(InputData)
    assert keras.utils.PyDataset in members and SequenceAdapter in members
    assert typing.ForwardRef("tf.data.Dataset") in members
