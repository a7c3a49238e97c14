"""A config field's type, read once: the kind of widget it takes, its bounds and wizard metadata.

``analyse`` turns a field's annotation (unions, ``Literal`` choices, an ``"auto"`` option, lists,
nested row models) into a ``Spec``. It reads only the schema, so it lives apart from
``ui.widgets``, which renders a ``Spec`` with Streamlit and keeps the draft in step with it.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from trainer.config.introspection import field_bounds, field_meta, nested_model


@dataclass(frozen=True)
class Spec:
    generic: str  # dotted path with list indices as 0
    info: FieldInfo
    kind: str  # bool choice int float str int_list str_list str_or_list dict table
    optional: bool
    auto: bool
    choices: tuple[str, ...]
    low: float | None
    high: float | None
    level: str
    step: str
    archs: tuple[str, ...]
    affects: tuple[str, ...]

    @property
    def row_model(self) -> type[BaseModel]:
        model = nested_model(self.info)
        assert model is not None
        return model


def analyse(generic: str, info: FieldInfo) -> Spec:
    members = _members(info.annotation)
    optional = type(None) in members
    auto, choices, kinds = False, (), []
    for member in members:
        base = (
            typing.get_args(member)[0] if typing.get_origin(member) is typing.Annotated else member
        )
        if base is type(None):
            continue
        if typing.get_origin(base) is Literal:
            values = tuple(str(v) for v in typing.get_args(base))
            if values == ("auto",):
                auto = True
            else:
                choices = values
            continue
        kinds.append(base)
    kind = _kind(kinds, choices)
    low, high = field_bounds(info)
    meta = field_meta(info)
    return Spec(
        generic,
        info,
        kind,
        optional,
        auto,
        choices,
        low,
        high,
        meta.get("level", "advanced"),
        meta.get("step", ""),
        tuple(meta.get("archs") or ()),
        tuple(meta.get("affects") or ()),
    )


def _members(annotation: Any) -> tuple[Any, ...]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def _kind(kinds: list[Any], choices: tuple[str, ...]) -> str:
    names = []
    for kind in kinds:
        origin = typing.get_origin(kind)
        if origin is list:
            inner = typing.get_args(kind)[0]
            inner = (
                typing.get_args(inner)[0] if typing.get_origin(inner) is typing.Annotated else inner
            )
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                names.append("table")
            else:
                names.append("int_list" if inner is int else "str_list")
        elif origin is dict or kind is dict:
            names.append("dict")
        else:
            names.append(getattr(kind, "__name__", str(kind)))
    if not names:
        return "choice" if choices else "str"
    if set(names) == {"str", "str_list"}:
        return "str_or_list"
    return names[0]
