"""Dotted paths such as ``datasets.0.resolution``: the one home for reading, writing and
flattening them.

A path names, part by part, a field of a pydantic model, a key of a dict or (by its number) an item
of a list, so the same path works on a ``TrainingConfig``, on its ``model_dump()``, on a YAML
draft and on the patches the advisor proposes. Flattened, a config is ``{dotted path: text}``, the
layout of a run's MLflow params (``leaves`` keeps the values as they are); ``unflatten`` turns
such params back into nested data.

A path that leads nowhere raises ``PathError`` (a ``KeyError``) saying where it stops and why.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, MutableMapping
from typing import Any

from pydantic import BaseModel

_REQUIRED: Any = object()
_INDEX = re.compile(r"\.\d+(?=\.|$)")


class PathError(KeyError):
    """A dotted path that does not lead anywhere in the data; str() is "what is wrong — fix"."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(path, message)
        self.path = path
        self.message = message

    def __str__(self) -> str:
        return self.message


# --------------------------------------------------------------------------------- read, write
def get_path(data: Any, path: str, default: Any = _REQUIRED) -> Any:
    """The value at ``path``; ``default`` when given and the path leads nowhere, else PathError."""
    parts = path.split(".")
    node = data
    try:
        for depth in range(len(parts)):
            node = _child(node, parts, depth, path)
    except PathError:
        if default is _REQUIRED:
            raise
        return default
    return node


def set_path(data: Any, path: str, value: Any, *, create: bool = False) -> None:
    """Put ``value`` at ``path`` (a model field is set with validation).

    Without ``create`` every part but the last must exist. With it, missing (or empty) parts
    become a list when the next part is a number and a dict otherwise, and an index one past the
    end of a list appends.
    """
    parts = path.split(".")
    node = data
    for depth in range(len(parts) - 1):
        if create:
            _make_room(node, parts, depth, path)
        node = _child(node, parts, depth, path)
    _assign(node, parts, value, path, create)


def pop_path(data: Any, path: str, default: Any = None) -> Any:
    """Remove the dict key at ``path`` and return its value (``default`` if it is not there)."""
    parent, _, last = path.rpartition(".")
    node = get_path(data, parent, None) if parent else data
    return node.pop(last, default) if isinstance(node, MutableMapping) else default


def _child(node: Any, parts: list[str], depth: int, path: str) -> Any:
    """The item ``parts[depth]`` of ``node``, which ``parts[:depth]`` led to."""
    part = parts[depth]
    if isinstance(node, BaseModel):
        if part not in type(node).model_fields:
            raise _not_a_field(parts, depth, path)
        return getattr(node, part)
    if isinstance(node, Mapping):
        if part not in node:
            where = ".".join(parts[:depth]) or "the data"
            raise PathError(path, f"'{part}' is not in {where}")
        return node[part]
    if isinstance(node, list | tuple):
        return node[_index(node, parts, depth, path)]
    raise _a_value(parts, depth, path)


def _index(items: list[Any] | tuple[Any, ...], parts: list[str], depth: int, path: str) -> int:
    index = _list_index(parts, depth, path)
    if index >= len(items):
        raise _out_of_range(items, index, path, create=False)
    return index


def _list_index(parts: list[str], depth: int, path: str) -> int:
    part = parts[depth]
    if not part.isdigit():
        where = ".".join(parts[:depth])
        raise PathError(
            path,
            f"is a list, so the next part must be an index, not '{part}' — write {where}.0...",
        )
    return int(part)


def _make_room(node: Any, parts: list[str], depth: int, path: str) -> None:
    """Create the container ``parts[depth]`` of ``node`` when it is missing (``create=True``)."""
    part = parts[depth]
    empty: Any = [] if parts[depth + 1].isdigit() else {}
    if isinstance(node, MutableMapping) and node.get(part) is None:
        node[part] = empty
    elif isinstance(node, list) and part.isdigit() and int(part) == len(node):
        node.append(empty)
    elif isinstance(node, list) and part.isdigit() and int(part) > len(node):
        raise _out_of_range(node, int(part), path, create=True)


def _assign(node: Any, parts: list[str], value: Any, path: str, create: bool) -> None:
    depth = len(parts) - 1
    part = parts[depth]
    if isinstance(node, BaseModel):
        if part not in type(node).model_fields:
            raise _not_a_field(parts, depth, path)
        setattr(node, part, value)
    elif isinstance(node, MutableMapping):
        node[part] = value
    elif isinstance(node, list):
        index = _list_index(parts, depth, path)
        if index < len(node):
            node[index] = value
        elif create:
            node.append(value)
        else:
            raise _out_of_range(node, index, path, create)
    else:
        raise _a_value(parts, depth, path)


def _not_a_field(parts: list[str], depth: int, path: str) -> PathError:
    where = ".".join(parts[:depth]) or "the config"
    return PathError(path, f"'{parts[depth]}' is not a setting of {where}")


def _a_value(parts: list[str], depth: int, path: str) -> PathError:
    where = ".".join(parts[:depth])
    return PathError(path, f"cannot go into {where}, which is a value — shorten the key")


def _out_of_range(items: Any, index: int, path: str, create: bool) -> PathError:
    n = len(items)
    if create:
        use = f"use 0..{n} ({n} adds a new item)"
    else:
        use = f"use 0..{n - 1}" if n else "add an item first"
    return PathError(path, f"has {n} item(s); index {index} is out of range — {use}")


# ------------------------------------------------------------------------------------ flatten
def leaves(data: Any) -> dict[str, Any]:
    """Every leaf value by dotted path.

    Dicts (with text keys) and lists of dicts are walked, list items by index
    (``datasets.0.resolution``); other lists, empty dicts and scalars are leaves. A model is read
    as its JSON dump.
    """
    if isinstance(data, BaseModel):
        data = data.model_dump(mode="json")
    found: dict[str, Any] = {}

    def walk(value: Any, prefix: str) -> None:
        if isinstance(value, Mapping) and value and all(isinstance(k, str) for k in value):
            for key, item in value.items():
                walk(item, f"{prefix}.{key}" if prefix else key)
        elif isinstance(value, list) and value and all(isinstance(i, Mapping) for i in value):
            for index, item in enumerate(value):
                walk(item, f"{prefix}.{index}")
        else:
            found[prefix] = value

    walk(data, "")
    return found


def flatten(data: Any) -> dict[str, str]:
    """``leaves()`` as text: strings as they are, other values as compact JSON. This is the
    layout of a run's MLflow params (``train.lr`` → ``"0.0001"``)."""
    return {
        path: value if isinstance(value, str) else json.dumps(value)
        for path, value in leaves(data).items()
    }


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Nested data from ``{dotted path: value}``, in any order: a dict whose keys are all numbers
    becomes the list of its items 0, 1, ... (``datasets.0.x`` → ``datasets[0].x``)."""
    data: dict[str, Any] = {}
    for path, value in flat.items():
        parts = path.split(".")
        node = data
        for depth, part in enumerate(parts[:-1]):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                where = ".".join(parts[: depth + 1])
                raise PathError(path, f"cannot go into {where}, which is a value")
        node[parts[-1]] = value
    return _numbered_to_lists(data)


def _numbered_to_lists(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    converted = {k: _numbered_to_lists(v) for k, v in node.items()}
    keys = list(converted)
    if keys and all(k.isdigit() for k in keys):
        return [converted[str(i)] for i in range(len(keys)) if str(i) in converted]
    return converted


# ------------------------------------------------------------------------- generic and concrete
def generic_path(path: str, index: str = ".0") -> str:
    """The path with every list index replaced by ``index``: ``datasets.3.flip_x`` →
    ``datasets.0.flip_x`` (the schema lists list items as item 0); ``"[]"`` gives the documented
    form ``datasets[].flip_x`` and ``""`` drops indices (``datasets.flip_x``)."""
    return _INDEX.sub(index, path)


def concrete_paths(generic: str, n_datasets: int) -> list[str]:
    """A generic path for every dataset of a config with ``n_datasets`` (other paths as they are)."""
    if generic.startswith("datasets.0."):
        rest = generic.removeprefix("datasets.0.")
        return [f"datasets.{i}.{rest}" for i in range(n_datasets)]
    return [generic]
