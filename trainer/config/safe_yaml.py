"""The one YAML reader: ``yaml.safe_load`` that also refuses duplicate keys and deep nesting.

PyYAML keeps the last of two equal keys without a word (a config with ``lr`` twice trains with
whichever came last) and composes nested nodes recursively, so a few KB of ``[[[[...`` end in a
``RecursionError`` instead of a message. Both are reported here as ``yaml.MarkedYAMLError``s with
the line and column, like any other YAML mistake, so every caller's error path already handles
them. Aliases that expand into huge trees are checked after loading (``trainer.config.io``).
"""

from __future__ import annotations

from typing import Any

import yaml

MAX_YAML_DEPTH = 50  # real configs nest 5-6 levels; Python's recursion limit is far above


class YamlShapeError(yaml.MarkedYAMLError):
    """A document PyYAML would accept but the studio refuses (duplicate key, nesting too deep)."""


class _StrictLoader(yaml.SafeLoader):
    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise YamlShapeError(
                    problem=f"nested more than {MAX_YAML_DEPTH} levels deep",
                    problem_mark=self.peek_event().start_mark,
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, Any] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # '<<: *base' may repeat keys on purpose: the local value wins
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node)
                except TypeError:
                    continue  # an unhashable key: the base class reports it
                if first is not key_node:
                    line = first.start_mark.line + 1
                    raise YamlShapeError(
                        problem=f"the key {key!r} appears twice (first at line {line})",
                        problem_mark=key_node.start_mark,
                    )
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str) -> Any:
    """The document in ``text`` (plain data only), or a ``yaml.YAMLError`` saying what is wrong."""
    loader = _StrictLoader(text)  # a SafeLoader: python tags stay errors
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()
