"""Questions about the schema rather than about one config: every field and its dotted path,
its wizard metadata, the bounds and choices it accepts, and the answers to "auto".

The wizard, the advisor, the error messages and the docs all read the schema through these.
"""

from __future__ import annotations

import typing
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from trainer.config.fields import ARCH_DEFAULTS, DECISION_AUTOS
from trainer.config.paths import get_path
from trainer.config.schema import TrainingConfig
from trainer.config.sections.datasets import Augmentation
from trainer.config.sections.outputs import SamplePrompt

# ----------------------------------------------------------------------------- fields
SECTIONS = ("model", "network", "datasets", "train", "sample", "save", "logging", "runtime")


def iter_fields(
    model: type[BaseModel] = TrainingConfig, prefix: str = ""
) -> Iterator[tuple[str, FieldInfo]]:
    """Every leaf field as (dotted path, FieldInfo); list items appear as index 0."""
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        nested = nested_model(info)
        if nested is not None and not _is_list_of_leaf_models(info):
            index = ".0" if _is_list(info) else ""
            yield from iter_fields(nested, f"{path}{index}.")
        else:
            yield path, info


def nested_model(info: FieldInfo) -> type[BaseModel] | None:
    """The model a field holds (itself, as list items or in a union); None for plain values."""
    annotation = info.annotation
    args = getattr(annotation, "__args__", ())
    for candidate in (annotation, *args):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _is_list(info: FieldInfo) -> bool:
    return getattr(info.annotation, "__origin__", None) is list


def _is_list_of_leaf_models(info: FieldInfo) -> bool:
    # Lists the wizard edits as one table (prompts, augmentations) rather than per item.
    nested = nested_model(info)
    return _is_list(info) and nested in (SamplePrompt, Augmentation)


def field_meta(info: FieldInfo) -> dict[str, Any]:
    """The wizard metadata ``opt()`` gave a field: step, level, affects and maybe archs."""
    extra = info.json_schema_extra
    return dict(extra) if isinstance(extra, dict) else {}


def field_info(path: str) -> FieldInfo:
    """The FieldInfo at a dotted path (list indices allowed)."""
    model: type[BaseModel] = TrainingConfig
    info: FieldInfo | None = None
    for part in path.split("."):
        if part.isdigit():
            continue
        if model is None or part not in model.model_fields:
            raise KeyError(path)
        info = model.model_fields[part]
        model = nested_model(info)  # type: ignore[assignment]
    if info is None:
        raise KeyError(path)
    return info


# ------------------------------------------------------------------------------ autos
def unresolved_autos(cfg: TrainingConfig) -> list[str]:
    """Decision fields still 'auto': the advisor must answer them before a run (steps need no
    answer when train.epochs decides the run's length)."""
    decided = {"train.steps"} if cfg.train.epochs is not None else set()
    return [p for p in DECISION_AUTOS if get_path(cfg, p) == "auto" and p not in decided]


def resolved(cfg: TrainingConfig, key: str) -> Any:
    """A technical field's value with 'auto' answered by the architecture's default."""
    value = {
        "noise_scheduler": cfg.train.noise_scheduler,
        "timestep_type": cfg.train.timestep_type,
        "sampler": cfg.sample.sampler,
        "guidance_scale": cfg.sample.guidance_scale,
    }[key]
    return ARCH_DEFAULTS[cfg.model.arch][key] if value == "auto" else value


# --------------------------------------------------------------------------- accepted values
def literal_choices(info: FieldInfo | None) -> list[str]:
    """The allowed words of a field whose type is (or contains) a ``Literal``."""
    if info is None:
        return []
    found: list[str] = []
    stack = [info.annotation]
    while stack:
        annotation = stack.pop()
        if typing.get_origin(annotation) is typing.Literal:
            found.extend(str(arg) for arg in typing.get_args(annotation))
        else:
            stack.extend(typing.get_args(annotation))
    return found


def field_bounds(info: FieldInfo | None) -> tuple[Any, Any]:
    """(lowest, highest) value a numeric field accepts, from its ge/gt and le/lt; None where it
    has none. Bounds inside a union (``Annotated[int, Field(ge=1)] | "auto"``) or on the items of
    a list (``list[Annotated[int, Field(ge=64)]]``) count too."""
    if info is None:
        return None, None
    found = list(info.metadata)
    for arg in typing.get_args(info.annotation):
        for inner in getattr(arg, "__metadata__", ()):
            found.append(inner)
            found.extend(getattr(inner, "metadata", ()))
    low = high = None
    for item in found:
        for attr in ("ge", "gt"):
            if getattr(item, attr, None) is not None:
                low = getattr(item, attr)
        for attr in ("le", "lt"):
            if getattr(item, attr, None) is not None:
                high = getattr(item, attr)
    return low, high


def bounds_text(info: FieldInfo | None) -> str:
    """The field's bounds as advice: "use a value between 1 and 1024" ("" when it has none)."""
    low, high = field_bounds(info)
    if low is None and high is None:
        return ""
    if high is None:
        return f"use a value of at least {low}"
    if low is None:
        return f"use a value up to {high}"
    return f"use a value between {low} and {high}"
