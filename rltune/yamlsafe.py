"""YAML reading for every file a user gives (study specs, Cloud files, --config files).

`yaml.safe_load` silently keeps the *last* of two equal keys, so ``trials: 2`` followed later by
``trials: 500`` runs 500 trials without a word. `load` reads with a SafeLoader that refuses a
mapping holding the same key twice (merge keys ``<<`` may still be overridden, as YAML means).
"""

from __future__ import annotations

from typing import Any

import yaml

__all__ = ["DuplicateKeyError", "UniqueKeyLoader", "load"]

_MERGE_TAG = "tag:yaml.org,2002:merge"


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A mapping holds the same key twice; `problem_mark` points at the second one."""


class UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader (data only, no code) that raises DuplicateKeyError on a repeated mapping key."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, Any] = {}
            for key_node, _ in node.value:
                if key_node.tag == _MERGE_TAG:
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # unhashable key: the base class reports it
                    continue
                if first is not None:
                    raise DuplicateKeyError(
                        "while constructing a mapping", node.start_mark,
                        f"duplicate key {key!r} (first on line {first.line + 1}); "
                        "YAML would keep only the last one: remove one of them",
                        key_node.start_mark)
                seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def load(text: str) -> Any:
    """Parse YAML text like `yaml.safe_load`, refusing duplicate keys (DuplicateKeyError)."""
    return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
