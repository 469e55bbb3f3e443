"""The Keras plugin's registrations. Never imports keras."""

from __future__ import annotations

from detlite.hookspecs import Register, hookimpl

INSTALL = "pip install 'detlite[keras]'"


@hookimpl
def detlite_register_frameworks(register: Register) -> None:
    register(
        "keras",
        "detlite.keras.adapter:KerasAdapter",
        requires=("keras",),
        install=INSTALL,
        description="TFKerasTrial on Keras 3 (TensorFlow, torch or JAX backend)",
    )


@hookimpl
def detlite_register_checkpoint_formats(register: Register) -> None:
    register(
        "keras",
        "detlite.keras.checkpoint:KerasFormat",
        requires=("keras",),
        install=INSTALL,
        description="model.keras + weights; Checkpoint.load() gives the keras.Model",
    )
    register(
        "h5",
        "detlite.keras.checkpoint:LegacyH5Format",
        requires=("keras",),
        install=INSTALL,
        description="Determined's legacy determined-keras-model.h5 weights (read only)",
    )
