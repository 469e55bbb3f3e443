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
