"""The PyTorch plugin's registrations. Never imports torch: everything is by import path."""

from __future__ import annotations

from detlite.hookspecs import Register, hookimpl

INSTALL = "pip install 'detlite[pytorch]'"


@hookimpl
def detlite_register_frameworks(register: Register) -> None:
    register(
        "pytorch",
        "detlite.pytorch.adapter:PyTorchAdapter",
        requires=("torch",),
        install=INSTALL,
        description="PyTorchTrial: training loop, CUDA/CPU placement, torch.distributed",
    )


@hookimpl
def detlite_register_checkpoint_formats(register: Register) -> None:
    register(
        "torch-state-dict",
        "detlite.pytorch.checkpoint:TorchStateDictFormat",
        requires=("torch",),
        install=INSTALL,
        description="state_dict.pth; Checkpoint.load() gives the model (or the trial)",
    )
