"""Reading an experiment config from a mapping, a YAML file or YAML text.

Every failure, from a missing file to a YAML syntax error to an invalid field, is an
``InvalidExperimentConfig`` listing what is wrong. Plugin searchers enter here and only
here: ``searchers`` maps a searcher name to the pydantic model of its config section.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeAlias

import yaml
from pydantic import BaseModel, ValidationError

from detlite.config._errors import to_problems
from detlite.config._searcher_field import SEARCHERS_CONTEXT
from detlite.config.experiment import ExperimentConfig
from detlite.errors import ConfigProblem, InvalidExperimentConfig

__all__ = ["ConfigSource", "load_config", "parse_config_yaml", "validate_config"]

ConfigSource: TypeAlias = Mapping[str, Any] | ExperimentConfig | Path | str


#: How many nodes YAML aliases (``*name``) may add to a config in all, each alias counting
#: as the whole node it repeats: enough for any real config, while a "billion laughs"
#: document (aliases of aliases, a few hundred bytes) would expand to billions.
MAX_ALIAS_NODES = 100_000

#: Tags that build values JSON has no form for; a config holds JSON-shaped data only.
_NOT_JSON_TAGS = {
    "tag:yaml.org,2002:binary": "binary data",
    "tag:yaml.org,2002:set": "a set",
    "tag:yaml.org,2002:omap": "an ordered map",
    "tag:yaml.org,2002:pairs": "a list of pairs",
}


class _ConfigLoader(yaml.SafeLoader):
    """SafeLoader that reads ``1e-3`` as a float and refuses duplicate keys, values JSON
    cannot hold, and alias expansion beyond ``MAX_ALIAS_NODES``.

    PyYAML follows YAML 1.1, where a float needs a dot, so ``lr: 1e-3`` would arrive as a
    string; Determined's master (Go, YAML 1.2) read it as a number. A repeated key would
    silently keep only its last value. A set or binary value would pass the master's value
    rules unseen (they walk JSON containers) and break or poison what it stores. An alias
    is built once but walked, validated and stored once per use, so a small document of
    aliases to aliases would hold the master's CPU and memory for hours.
    """

    def get_single_node(self) -> yaml.Node | None:
        node: yaml.Node | None = super().get_single_node()
        if node is not None:
            _check_aliases(node)
        return node

    def construct_not_json(self, node: yaml.Node) -> Any:
        raise yaml.constructor.ConstructorError(
            None,
            None,
            f"{_NOT_JSON_TAGS[node.tag]} ({node.tag.rsplit(':', 1)[-1]}) has no JSON form; "
            "write a string, a list or a mapping instead",
            node.start_mark,
        )

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping",
                    node.start_mark,
                    f"found the key {key!r} twice",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


for _tag in _NOT_JSON_TAGS:
    _ConfigLoader.add_constructor(_tag, _ConfigLoader.construct_not_json)


def _check_aliases(root: yaml.Node) -> None:
    """ComposerError if the document's aliases add more than ``MAX_ALIAS_NODES`` nodes, or
    if an alias stands inside the node it names (a document that contains itself)."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise yaml.composer.ComposerError(
                None,
                None,
                "an alias stands inside the node it names; a config cannot contain itself",
                node.start_mark,
            )
        open_nodes.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(size(item) for item in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in node.value)
        open_nodes.discard(key)
        sizes[key] = total
        return total

    added = size(root) - len(sizes)
    if added > MAX_ALIAS_NODES:
        raise yaml.composer.ComposerError(
            None,
            None,
            f"its aliases (*name) expand to {added:,} more values, over the limit of "
            f"{MAX_ALIAS_NODES:,}; write the values out, or repeat fewer of them",
            root.start_mark,
        )


_ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def parse_config_yaml(text: str, *, source: str | None = None) -> dict[str, Any]:
    """The mapping a YAML config holds, not yet validated."""
    try:
        data = yaml.load(text, Loader=_ConfigLoader)
    except yaml.YAMLError as exc:
        raise InvalidExperimentConfig([_yaml_problem(exc)], source=source) from None
    except RecursionError:
        deep = ConfigProblem(
            "", "YAML nests too deep to read; flatten it (a config nests at most 32 levels)"
        )
        raise InvalidExperimentConfig([deep], source=source) from None
    except (ValueError, TypeError, KeyError, AttributeError, IndexError, OverflowError) as exc:
        # PyYAML's constructors raise these for a scalar their tag cannot read: a
        # timestamp like 2001-13-45, ``!!timestamp abc``, ``!!int abc``, ``!!bool maybe``,
        # an integer of more than 4,300 digits, ``!!map [a]``.
        unreadable = ConfigProblem("", f"YAML value that cannot be read: {exc!r}"[:500])
        raise InvalidExperimentConfig([unreadable], source=source) from None
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
    try:
        return ExperimentConfig.model_validate(
            data, strict=True, context={SEARCHERS_CONTEXT: dict(searchers or {})}
        )
    except ValidationError as exc:
        raise InvalidExperimentConfig(to_problems(exc, ExperimentConfig), source=source) from None


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


def _yaml_problem(exc: yaml.YAMLError) -> ConfigProblem:
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    reason = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    detail = f"{reason} ({context})" if context else reason
    return ConfigProblem("", f"YAML syntax error{where}: {detail}")


def _not_a_mapping(value: object) -> str:
    kind = "a list" if isinstance(value, list) else f"{type(value).__name__} {value!r}"[:60]
    return f"the top level must be a mapping of config fields, got {kind}"
