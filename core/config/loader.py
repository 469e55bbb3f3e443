"""Reading an experiment config from a mapping, a YAML file or YAML text.

Every failure, from a missing file to a YAML syntax error to an invalid field, is an
``InvalidExperimentConfig`` listing what is wrong. Plugin searchers enter here and only
here: ``searchers`` maps a searcher name to the pydantic model of its config section.
YAML is read by ``_yaml`` (PyYAML's safe loader, stricter), imported only when YAML comes.

A process validates the same config once: ``validate_config`` keeps what it validated by
the exact input (``_kept``) and gives every later caller of the same input a copy of its
own.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeAlias

from pydantic import BaseModel, ValidationError

from detlite.config import _kept
from detlite.config._errors import to_problems
from detlite.config._searcher_field import SEARCHERS_CONTEXT
from detlite.config.experiment import ExperimentConfig
from detlite.errors import InvalidExperimentConfig

__all__ = ["ConfigSource", "load_config", "parse_config_yaml", "validate_config"]

ConfigSource: TypeAlias = Mapping[str, Any] | ExperimentConfig | Path | str


def parse_config_yaml(text: str, *, source: str | None = None) -> dict[str, Any]:
    """The mapping a YAML config holds, not yet validated."""
    from detlite.config import _yaml  # PyYAML is imported once YAML is read, not before

    data = _yaml.load(text, source=source)
    if data is None:
        problem = (
            "the config is empty; expected a mapping with at least searcher and hyperparameters"
        )
        raise InvalidExperimentConfig([problem], source=source)
    if not isinstance(data, dict):
        raise InvalidExperimentConfig([_not_a_mapping(data)], source=source)
    return data


def validate_config(
    data: Mapping[str, Any],
    *,
    searchers: Mapping[str, type[BaseModel]] | None = None,
    source: str | None = None,
) -> ExperimentConfig:
    """Validate a config mapping; plugin searcher models come in ``searchers`` by name."""
    if not isinstance(data, Mapping):
        raise InvalidExperimentConfig([_not_a_mapping(data)], source=source)
    key = _kept.key_of(data, searchers)
    if key is not None:
        found = _kept.find(key)
        if found is not None:
            return found
    try:
        config = ExperimentConfig.model_validate(
            data, strict=True, context={SEARCHERS_CONTEXT: dict(searchers or {})}
        )
    except ValidationError as exc:
        raise InvalidExperimentConfig(to_problems(exc, ExperimentConfig), source=source) from None
    if key is not None:
        _kept.keep(key, config)
    return config


def load_config(
    source: ConfigSource, *, searchers: Mapping[str, type[BaseModel]] | None = None
) -> ExperimentConfig:
    """An ExperimentConfig from a mapping, a YAML file (Path or str) or YAML text.

    A str that names no existing file and holds a newline or a ':' is read as YAML text.
    An ExperimentConfig is returned as it is.
    """
    if isinstance(source, ExperimentConfig):
        return source
    if isinstance(source, Mapping):
        return validate_config(source, searchers=searchers)
    if isinstance(source, str) and _looks_like_yaml(source):
        return validate_config(parse_config_yaml(source), searchers=searchers)
    if isinstance(source, (str, Path)):
        path = Path(source)
        return validate_config(_read(path), searchers=searchers, source=str(path))
    raise InvalidExperimentConfig([_not_a_mapping(source)])


def _looks_like_yaml(text: str) -> bool:
    try:
        if Path(text).is_file():
            return False
    except (OSError, ValueError):  # a long YAML text is no valid path at all
        return True
    return not text.strip() or "\n" in text or ":" in text


def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidExperimentConfig([f"no such file: {path}"], source=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidExperimentConfig([f"cannot read {path}: {exc}"], source=str(path)) from None
    return parse_config_yaml(text, source=str(path))


def _not_a_mapping(value: object) -> str:
    kind = "a list" if isinstance(value, list) else f"{type(value).__name__} {value!r}"[:60]
    return f"the top level must be a mapping of config fields, got {kind}"
