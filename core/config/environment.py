"""The container a trial runs in: ``environment`` and ``bind_mounts``.

``image`` and ``environment_variables`` may be written once or per device type
(``{cpu: ..., gpu: ...}``); either way they are stored per device type, as Determined's
master expands them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, Field, field_validator

from detlite.config._base import ConfigModel
from detlite.config._errors import problems_error, show
from detlite.config.storage import AbsolutePath, Propagation

__all__ = [
    "BindMount",
    "EnvironmentConfig",
    "EnvironmentImage",
    "EnvironmentVariables",
    "RegistryAuth",
]


def _env_var_problem(item: object) -> str | None:
    if not isinstance(item, str):
        return f"expected a string NAME=value, got {show(item)}"
    name, equals, _ = item.partition("=")
    if not equals or not name:
        return f"expected NAME=value, got {show(item)}"
    return None


def _env_var(item: str) -> str:
    problem = _env_var_problem(item)
    if problem:
        raise ValueError(problem)
    return item


EnvVar = Annotated[str, AfterValidator(_env_var)]


def _per_device(value: Any, once: type, expected: str) -> Any:
    """Expand a value written once into ``{cpu: value, gpu: value}``."""
    if isinstance(value, (Mapping, BaseModel)):
        return value
    if isinstance(value, once):
        return {"cpu": value, "gpu": value}
    raise ValueError(f"expected {expected}, got {show(value)}")


class EnvironmentImage(ConfigModel):
    cpu: str = Field(min_length=1)
    gpu: str = Field(min_length=1)


class EnvironmentVariables(ConfigModel):
    cpu: list[EnvVar] = Field(default_factory=list)
    gpu: list[EnvVar] = Field(default_factory=list)


class RegistryAuth(ConfigModel):
    """Docker registry credentials, as in Docker's AuthConfig."""

    username: str | None = None
    password: str | None = None
    auth: str | None = None
    email: str | None = None
    serveraddress: str | None = None
    identitytoken: str | None = None
    registrytoken: str | None = None


class EnvironmentConfig(ConfigModel):
    image: EnvironmentImage | None = None
    environment_variables: EnvironmentVariables = Field(default_factory=EnvironmentVariables)
    ports: dict[str, Annotated[int, Field(ge=1, le=65535)]] = Field(default_factory=dict)
    force_pull_image: bool = False
    registry_auth: RegistryAuth | None = None
    add_capabilities: list[str] = Field(default_factory=list)
    drop_capabilities: list[str] = Field(default_factory=list)
    pod_spec: dict[str, Any] | None = None

    @field_validator("image", mode="before")
    @classmethod
    def _image_per_device(cls, value: Any) -> Any:
        if value is None:
            return value
        return _per_device(value, str, "an image name or a mapping {cpu: image, gpu: image}")

    @field_validator("environment_variables", mode="before")
    @classmethod
    def _variables_per_device(cls, value: Any) -> Any:
        if isinstance(value, list):
            # Checked here, once, so a bad item is not reported under both cpu and gpu.
            problems = [((i,), p) for i, item in enumerate(value) if (p := _env_var_problem(item))]
            if problems:
                raise problems_error("environment_variables", problems)
        expected = "a list of NAME=value or a mapping {cpu: [...], gpu: [...]}"
        return _per_device(value, list, expected)


class BindMount(ConfigModel):
    host_path: AbsolutePath
    container_path: str = Field(min_length=1)
    read_only: bool = False
    propagation: Propagation = "rprivate"

    @field_validator("container_path")
    @classmethod
    def _not_working_dir(cls, value: str) -> str:
        # The trial's code is copied into the working directory; a mount there would hide it.
        if value.rstrip("/") == ".":
            raise ValueError(
                "expected a path other than '.', which is the trial's working directory"
            )
        return value
