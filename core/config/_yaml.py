"""Reading YAML text into a config's raw data, with PyYAML's safe loader made stricter.

Imported on first use (``loader.parse_config_yaml``): a process that only validates
mappings, such as a trial worker, which receives its config as JSON, never imports PyYAML.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from detlite.errors import ConfigProblem, InvalidExperimentConfig

__all__ = ["MAX_ALIAS_NODES", "load"]

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


def load(text: str, *, source: str | None = None) -> Any:
    """What a YAML text holds; any YAML error is an ``InvalidExperimentConfig``."""
    try:
        return yaml.load(text, Loader=_ConfigLoader)
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


def _yaml_problem(exc: yaml.YAMLError) -> ConfigProblem:
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    reason = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    detail = f"{reason} ({context})" if context else reason
    return ConfigProblem("", f"YAML syntax error{where}: {detail}")
