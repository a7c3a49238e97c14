"""Sweeps: the variants of a config along one or two settings, ready to queue as one group.

A sweep takes a base config and, for one or two settings (dotted paths such as ``train.lr`` or
``datasets.0.resolution``), a list of values; its variants are the cartesian product (learning
rate × 3, rank × 2 = 6), each a full config that differs from the base only in the varied settings
and in its run name (``my_lora lr=5e-5 rank=8``) and LoRA name (``my_lora_lr5e-5_rank8``, the name
of its files: variants downloaded side by side do not overwrite each other), validated like any
config: a value out of bounds is refused with the setting, the value and the bound. ``suggest_values`` proposes the values a
sweep of a setting usually wants (learning rate ×0.5, ×1, ×2; rank half, same, double ...), so a
sweep is two clicks away. Pure: no Streamlit, no store.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import re
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import yaml
from pydantic.fields import FieldInfo

from trainer.config.introspection import (
    field_bounds,
    field_info,
    iter_fields,
    literal_choices,
    nested_model,
    unresolved_autos,
)
from trainer.config.io import ConfigError, config_from_dict
from trainer.config.paths import PathError, concrete_paths, generic_path, get_path, set_path
from trainer.config.safe_yaml import YamlShapeError, load_yaml
from trainer.config.schema import TrainingConfig

MAX_VARIANTS = 12  # a sweep is queued on one device: 12 runs is already a long night
MAX_SETTINGS = 2
MAX_VALUES_TEXT = 2000  # characters of one values box read (a list of a dozen values fits)

# The settings a sweep usually varies, in the order the form offers them, with their short
# names in a variant's name.
COMMON_SETTINGS: dict[str, str] = {
    "train.lr": "Learning rate",
    "network.linear": "Rank",
    "network.linear_alpha": "Alpha",
    "train.steps": "Steps",
    "train.optimizer": "Optimizer",
    "datasets.0.resolution": "Resolution",
}
SHORT_NAMES: dict[str, str] = {
    "train.lr": "lr",
    "network.linear": "rank",
    "network.linear_alpha": "alpha",
    "train.steps": "steps",
    "train.optimizer": "optimizer",
    "datasets.0.resolution": "res",
}
# Settings that name or file a run rather than train it: a sweep over them makes no variants.
NOT_SWEEPABLE = {"name", "intent", "preset", "logging.run_name", "logging.project_name"}
# The optimizers a sweep compares by default (prodigy wants lr 1.0, lion a 3-10x smaller one:
# neither compares fairly at the same learning rate)
OPTIMIZER_SUGGESTIONS = ("adamw8bit", "adamw", "adafactor")
# Training sizes people use; a resolution sweep suggests the current one and its neighbours.
RESOLUTION_LADDER = (64, 128, 256, 384, 512, 640, 768, 896, 1024, 1280, 1536, 2048)
_AUTO_HINT = " (or 'auto' to let the advisor decide)"
# A LoRA's name as the config's ``name`` field accepts it (it names the files)
LORA_NAME_MAX = 100
_NOT_IN_LORA_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


class SweepError(ValueError):
    """Why the sweep cannot be made; ``problems`` holds one line each, str() joins them."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


@dataclass(frozen=True)
class Variant:
    """One config of a sweep: its run name, the values it sets and the validated config (whose
    ``name``, the LoRA's file name, is the variant's own: ``lora_name``)."""

    name: str
    values: dict[str, Any]
    config: TrainingConfig = field(compare=False, repr=False)

    @property
    def lora_name(self) -> str:
        """The name of the variant's LoRA files (``my_lora_lr5e-5.safetensors``)."""
        return self.config.name


# ------------------------------------------------------------------------------ the settings
def setting_label(path: str) -> str:
    """ "Learning rate (train.lr)" for a common setting, else the dotted path itself."""
    common = COMMON_SETTINGS.get(generic_path(path))
    return f"{common} ({path})" if common else path


def short_name(path: str) -> str:
    """How a variant's name calls the setting: ``lr``, ``rank`` ..., else the field's name."""
    generic = generic_path(path)
    return SHORT_NAMES.get(generic, generic.rsplit(".", 1)[-1])


def sweepable_settings() -> list[str]:
    """Every setting a sweep may vary: the common ones first, then every other field of the
    schema (generic paths, datasets as item 0), leaving out names and whole tables."""
    others = [
        path
        for path, info in iter_fields()
        if path not in NOT_SWEEPABLE
        and path not in COMMON_SETTINGS
        and not (_is_list(info) and nested_model(info) is not None)
    ]
    return [*COMMON_SETTINGS, *others]


def _is_list(info: FieldInfo) -> bool:
    return _list_item_type(info) is not None


def _list_item_type(info: FieldInfo) -> Any:
    for annotation in (info.annotation, *typing.get_args(info.annotation)):
        if typing.get_origin(annotation) is list:
            args = typing.get_args(annotation)
            return args[0] if args else Any
    return None


def _info(path: str) -> FieldInfo:
    try:
        return field_info(path)
    except KeyError:
        raise SweepError([f"{path} is not a setting of the config"]) from None


def base_config(base: TrainingConfig | Mapping[str, Any]) -> TrainingConfig:
    """The base as a validated config (a draft or a run's config as a dict is checked here)."""
    if isinstance(base, TrainingConfig):
        return base
    try:
        return config_from_dict(dict(base))
    except ConfigError as err:
        raise SweepError([f"the base config is not valid: {p}" for p in err.problems]) from None


def current_value(cfg: TrainingConfig, path: str) -> Any:
    """The base's value of a setting as a sweep varies it (a list with one item as the item)."""
    value = get_path(cfg, _first_concrete(path, cfg))
    if isinstance(value, list) and len(value) == 1:
        return value[0]
    return value


def _first_concrete(path: str, cfg: TrainingConfig) -> str:
    return concrete_paths(generic_path(path), len(cfg.datasets))[0]


# ----------------------------------------------------------------------------- suggestions
def suggest_values(base: TrainingConfig | Mapping[str, Any], path: str) -> list[Any]:
    """The values a sweep of ``path`` usually wants, the current one among them: a number
    ×0.5, ×1, ×2 (the learning rate, rank, alpha, steps; whole numbers rounded), the current
    optimizer and two common others, the resolution and its neighbours among the usual sizes,
    both truth values for a switch, the current word and two others for a choice. A value the
    setting does not accept is left out; "auto" is answered by the schema's default."""
    cfg = base_config(base)
    generic = generic_path(path)
    info = _info(generic)
    current = current_value(cfg, generic)
    if current == "auto":
        current = info.get_default(call_default_factory=True)
        current = current[0] if isinstance(current, list) and len(current) == 1 else current
    if generic == "train.optimizer":
        found = [current, *OPTIMIZER_SUGGESTIONS]
    elif generic == "datasets.0.resolution" and isinstance(current, int):
        found = _ladder_neighbours(current)
    elif isinstance(current, bool):
        found = [current, not current]
    elif isinstance(current, int | float) and current != 0:
        found = [_scaled(current, factor) for factor in (0.5, 1, 2)]
    elif choices := literal_choices(info):
        found = [current, *(c for c in choices if c != "auto")]
    else:
        found = [current]
    low, high = field_bounds(info)
    kept = [v for v in _unique(found) if _within(v, low, high)]
    return kept[:3]


def _scaled(value: int | float, factor: float) -> int | float:
    if isinstance(value, int):
        return max(1, round(value * factor)) if value > 0 else round(value * factor)
    return float(f"{value * factor:.6g}")


def _ladder_neighbours(size: int) -> list[int]:
    below = [s for s in RESOLUTION_LADDER if s < size]
    above = [s for s in RESOLUTION_LADDER if s > size]
    return [*below[-1:], size, *above[:1]]


def _within(value: Any, low: Any, high: Any) -> bool:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return True
    return (low is None or value >= low) and (high is None or value <= high)


def _unique(values: Iterable[Any]) -> list[Any]:
    found: list[Any] = []
    for value in values:
        if value not in found:
            found.append(value)
    return found


# --------------------------------------------------------------------------- values as text
def value_text(value: Any) -> str:
    """A value as a variant name shows it: ``5e-5``, ``0.5``, ``16``, ``adamw``, ``512``."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        plain = f"{value:.6g}"
        if abs(value) >= 1 or value == 0:
            return plain
        scientific = re.sub(r"\.?0*e([+-])0*(\d)", r"e\1\2", f"{value:.5e}")
        return scientific if len(scientific) < len(plain) else plain
    if isinstance(value, list):
        return "+".join(value_text(v) for v in value)
    return "none" if value is None else str(value)


def format_values(values: Iterable[Any]) -> str:
    """Values as the form's text box shows them: ``5e-5, 1e-4, 2e-4``."""
    return ", ".join(_typed_text(v) for v in values)


def _typed_text(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_typed_text(v) for v in value) + "]"
    if value is None:
        return "null"
    return value_text(value)


def parse_values(text: str) -> list[Any]:
    """The values typed in a box: separated by commas (a ``[...]`` list stays one value), each
    read as YAML (``5e-5`` a number, ``adamw`` a word, ``true``, ``[512, 768]``). Repeats go."""
    if len(text) > MAX_VALUES_TEXT:
        raise SweepError([f"the values are longer than {MAX_VALUES_TEXT} characters"])
    values = []
    for part in _split_top_level(text):
        try:
            value = load_yaml(part)
        except (YamlShapeError, yaml.YAMLError):
            value = part
        if isinstance(value, str) and _looks_numeric(value):
            value = float(value)  # PyYAML reads 5e-5 (no dot) as text
        if isinstance(value, dict):
            raise SweepError([f"{part!r} is not a value: write numbers or words"])
        values.append(value)
    return _unique(values)


def _looks_numeric(text: str) -> bool:
    return re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", text.strip()) is not None


def _split_top_level(text: str) -> list[str]:
    parts, depth, current = [], 0, []
    for char in text:
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char in ",;\n" and depth <= 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


# ------------------------------------------------------------------------------- the variants
def variant_name(base_name: str, values: Mapping[str, Any]) -> str:
    """``my_lora lr=5e-5 rank=8``: the base name and each varied setting's value."""
    shown = " ".join(f"{short_name(path)}={value_text(v)}" for path, v in values.items())
    return f"{base_name} {shown}".strip()


def variant_lora_name(base_name: str, values: Mapping[str, Any]) -> str:
    """``my_lora_lr5e-5_rank8``: the name of a variant's LoRA files, the base name and each
    varied setting's value, as the config's ``name`` accepts it (letters, digits, ``_ . -``; at
    most 100 characters: a long one is cut and keeps a short hash of the whole, so it stays
    distinct)."""
    parts = [f"{short_name(path)}{value_text(v)}" for path, v in values.items()]
    found = _NOT_IN_LORA_NAME.sub("_", "_".join([base_name, *parts])).strip("_")
    if len(found) > LORA_NAME_MAX:
        digest = hashlib.sha1(found.encode()).hexdigest()[:8]
        found = f"{found[: LORA_NAME_MAX - 9].rstrip('_.-')}_{digest}"
    return found or "lora"


def make_variants(
    base: TrainingConfig | Mapping[str, Any],
    axes: Mapping[str, Sequence[Any]],
    limit: int = MAX_VARIANTS,
) -> list[Variant]:
    """Every combination of the values of one or two settings (``{dotted path: values}``), in
    order (the first setting varies slowest), as validated configs named after the base's
    ``name``: the run ``my_lora lr=5e-5``, its LoRA files ``my_lora_lr5e-5``. A setting of the datasets (``datasets.0.resolution``) is set on every dataset.
    Raises ``SweepError`` with every problem: too many settings or variants, an unknown setting,
    a value the setting refuses (with its bound), a combination the config's rules refuse, or a
    decision the base still leaves to the advisor ("auto")."""
    cfg = base_config(base)
    axes = {generic_path(path): list(values) for path, values in axes.items()}
    _check_shape(axes, limit)
    problems = [
        p for path, values in axes.items() for v in values for p in _value_problems(cfg, {path: v})
    ]
    if problems:
        raise SweepError(problems)
    variants = []
    for combination in itertools.product(*axes.values()):
        values = dict(zip(axes, combination, strict=True))
        problems = _value_problems(cfg, values)
        if problems:
            raise SweepError(problems)
        config = config_from_dict(_variant_data(cfg, values))
        held = {path: current_value(config, path) for path in values}  # 1e3 steps: 1000
        name = variant_name(cfg.name, held)
        config.logging.run_name = name
        config.name = _distinct(variant_lora_name(cfg.name, held), {v.lora_name for v in variants})
        variants.append(Variant(name, held, config))
    still_auto = sorted({p for v in variants for p in unresolved_autos(v.config)})
    if still_auto:
        named = ", ".join(setting_label(p) for p in still_auto)
        raise SweepError(
            [
                f"{named} {'is' if len(still_auto) == 1 else 'are'} still 'auto' in the base "
                "config — set it (or let the advisor choose on Review) before queueing variants"
            ]
        )
    return variants


def _distinct(name: str, taken: set[str]) -> str:
    """``name``, or ``name_2``, ``name_3`` ... when another variant has it (two values that
    read the same in a file name, ``a b`` and ``a_b``)."""
    found, number = name, 2
    while found in taken:
        suffix = f"_{number}"
        found, number = f"{name[: LORA_NAME_MAX - len(suffix)]}{suffix}", number + 1
    return found


def _check_shape(axes: Mapping[str, list[Any]], limit: int) -> None:
    problems = []
    if not axes:
        problems.append("choose a setting to vary")
    if len(axes) > MAX_SETTINGS:
        problems.append(f"a sweep varies at most {MAX_SETTINGS} settings, got {len(axes)}")
    for path, values in axes.items():
        if generic_path(path) in NOT_SWEEPABLE:
            problems.append(f"{path} names the run; it is not a setting to sweep")
        else:
            _info(path)
        if not values:
            problems.append(f"{setting_label(path)}: give at least one value")
    count = 1
    for values in axes.values():
        count *= max(1, len(values))
    if count > limit:
        problems.append(f"{count} variants is more than {limit}: give fewer values")
    elif axes and count < 2 and not problems:
        problems.append("a sweep needs at least two variants: give a second value")
    if problems:
        raise SweepError(problems)


def _typed(path: str, value: Any) -> Any:
    """A value as the field holds it: one resolution typed as ``512`` is the list ``[512]``."""
    if _is_list(_info(path)) and not isinstance(value, list):
        return [value]
    return value


def _variant_data(cfg: TrainingConfig, values: Mapping[str, Any]) -> dict[str, Any]:
    data = cfg.model_dump(mode="json")
    for path, value in values.items():
        for concrete in concrete_paths(path, len(cfg.datasets)):
            try:
                set_path(data, concrete, copy.deepcopy(_typed(path, value)))
            except PathError as err:
                raise SweepError([f"{setting_label(path)}: {err}"]) from None
    return data


def _value_problems(cfg: TrainingConfig, values: Mapping[str, Any]) -> list[str]:
    """What the config says about these values, one line per problem naming the setting, the
    value and the bound (empty when they are accepted)."""
    try:
        config_from_dict(_variant_data(cfg, values))
    except ConfigError as err:
        lines = []
        for problem in err.problems:
            setting = _varied_setting(problem.path, values)
            fix = problem.fix.replace(_AUTO_HINT, "")
            where = (
                f"{setting_label(setting)} = {value_text(values[setting])}"
                if setting
                else f"{variant_name(cfg.name, values)}: {problem.path}"
            )
            lines.append(f"{where}: {problem.message}" + (f" — {fix}" if fix else ""))
        return lines
    return []


def _varied_setting(problem_path: str, values: Mapping[str, Any]) -> str | None:
    generic = generic_path(problem_path)
    for path in values:
        if generic == path or generic.startswith(f"{path}."):
            return path
    return None


# ---------------------------------------------------------------------------------- the group
def sweep_group_id(base_name: str, when: datetime, taken: Iterable[str] = ()) -> str:
    """A readable id for the variants' group: ``sweep-my_lora-20250101-1830`` (``-2``, ``-3``
    ... when that id is already taken)."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", base_name).strip("_.") or "lora"
    group = f"sweep-{slug[:60]}-{when:%Y%m%d-%H%M}"
    taken = set(taken)
    number = 2
    found = group
    while found in taken:
        found, number = f"{group}-{number}", number + 1
    return found
