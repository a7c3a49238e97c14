"""Config patches: ``{dotted.path: value}`` applied to a ``TrainingConfig``.

A value of ``None`` in a patch means "back to the schema's default" (for optional fields that
default is ``None`` itself). Every patched config is validated again, so a patch can never
produce a config the trainer would refuse to load.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from functools import cache
from typing import Any

from trainer.config.introspection import field_info
from trainer.config.paths import get_path, set_path
from trainer.config.schema import TrainingConfig

Patch = dict[str, Any]


@cache
def _default(path: str) -> Any:
    return field_info(path).get_default(call_default_factory=True)


def default_of(path: str) -> Any:
    """The schema default of a dotted path (a fresh copy: defaults may be lists)."""
    return copy.deepcopy(_default(path))


def apply_patch(cfg: TrainingConfig, patch: Mapping[str, Any]) -> TrainingConfig:
    """A new config with the patch applied; raises pydantic's ValidationError when invalid."""
    if not patch:
        return cfg
    data = cfg.model_dump()
    for path, value in patch.items():
        set_path(data, path, default_of(path) if value is None else copy.deepcopy(value))
    return TrainingConfig.model_validate(data)


def try_patch(cfg: TrainingConfig, patch: Mapping[str, Any]) -> TrainingConfig | None:
    try:
        return apply_patch(cfg, patch)
    except (ValueError, KeyError, IndexError):
        return None


def changed(cfg: TrainingConfig, patch: Mapping[str, Any]) -> Patch:
    """Only the entries of ``patch`` that differ from ``cfg``."""
    out = {}
    for path, value in patch.items():
        target = default_of(path) if value is None else value
        if get_path(cfg, path) != target:
            out[path] = value
    return out


def config_diff(before: TrainingConfig, after: TrainingConfig) -> Patch:
    """Leaf paths whose values differ, as the patch turning ``before`` into ``after``."""
    return _diff(before.model_dump(mode="json"), after.model_dump(mode="json"), "")


def _diff(a: Any, b: Any, prefix: str) -> Patch:
    if isinstance(a, dict) and isinstance(b, dict):
        out: Patch = {}
        for key in a.keys() | b.keys():
            out.update(_diff(a.get(key), b.get(key), f"{prefix}{key}."))
        return out
    if (
        isinstance(a, list)
        and isinstance(b, list)
        and len(a) == len(b)
        and all(isinstance(x, dict) for x in a + b)
    ):
        out = {}
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            out.update(_diff(x, y, f"{prefix}{i}."))
        return out
    return {} if a == b else {prefix.rstrip("."): b}
