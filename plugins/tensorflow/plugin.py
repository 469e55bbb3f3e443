"""The TensorFlow plugin's registrations. Never imports tensorflow."""

from __future__ import annotations

from detlite.hookspecs import Register, hookimpl

INSTALL = "pip install 'detlite[tensorflow]'"


@hookimpl
def detlite_register_frameworks(register: Register) -> None:
    register(
        "tensorflow",
        "detlite.tensorflow.adapter:TensorFlowAdapter",
        requires=("tensorflow",),
        install=INSTALL,
        description="TensorFlowTrial: custom TF2 training steps, SavedModel export",
    )


@hookimpl
def detlite_register_checkpoint_formats(register: Register) -> None:
    register(
        "saved_model",
        "detlite.tensorflow.checkpoint:SavedModelFormat",
        requires=("tensorflow",),
        install=INSTALL,
        description="tf.train.Checkpoint + SavedModel; Checkpoint.load(tags=...) gives the latter",
    )
