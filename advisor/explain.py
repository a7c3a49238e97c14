"""Explanations of every setting and every wizard step, at three levels of detail.

Each explanation has three parts: what it does, how it interacts with other settings, and what
to watch for. They are generated from the schema (description, step, level, what it affects,
architectures, bounds, choices, default), from the validation rules that read the field, and
from the hand-written table in ``explain_table`` for the settings that matter most.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from functools import cache

from advisor import rules
from advisor.explain_table import FIELDS, STEPS, Text
from trainer.config.fields import WIZARD_STEPS
from trainer.config.introspection import bounds_text, field_meta, iter_fields, literal_choices
from trainer.config.paths import generic_path

LEVELS = ("beginner", "intermediate", "advanced")
AFFECT_WORDS = {
    "quality": "what the results look like",
    "speed": "how long training takes",
    "memory": "how much GPU memory it needs",
    "disk": "how much disk space it uses",
}


@dataclass(frozen=True)
class Explanation:
    what: str
    interactions: str
    watch_for: str

    def text(self) -> str:
        return f"{self.what}\nInteractions: {self.interactions}\nWatch for: {self.watch_for}"


def _level(text: Text, level: str) -> str:
    return text if isinstance(text, str) else text[LEVELS.index(level)]


def _generic(path: str) -> str:
    """datasets.3.flip_x → datasets.0.flip_x (explanations are per field, not per item);
    sample.prompts.2.seed → sample.prompts (the table of prompts is one setting)."""
    key = generic_path(path)
    while key not in _fields() and "." in key:
        key = key.rsplit(".", 1)[0]
    return key


@cache
def _fields() -> dict[str, typing.Any]:
    return dict(iter_fields())


def field_paths() -> list[str]:
    return list(_fields())


def field_step(path: str) -> str:
    """The wizard step a setting belongs to ('advanced' when unknown)."""
    info = _fields().get(_generic(path))
    return field_meta(info).get("step", "advanced") if info is not None else "advanced"


@cache
def _related_rules(path: str) -> tuple[rules.Rule, ...]:
    return tuple(r for r in rules.RULES.values() if path in {_generic(p) for p in r.paths})


# ------------------------------------------------------------------------------------ fields
def explain_field(path: str, level: str = "beginner") -> Explanation:
    """What ``path`` does, its interactions and what to watch for, at ``level``."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {', '.join(LEVELS)}")
    key = _generic(path)
    info = _fields().get(key)
    if info is None:
        raise KeyError(f"unknown setting {path}")
    curated = FIELDS.get(key, {})
    return Explanation(
        what=_level(curated["what"], level)
        if "what" in curated and level == "beginner"
        else _what(key, info, level),
        interactions=_interactions(key, level, curated),
        watch_for=_watch(key, info, level, curated),
    )


def _what(path: str, info: typing.Any, level: str) -> str:
    text = info.description or path
    meta = field_meta(info)
    affects = [AFFECT_WORDS[a] for a in meta.get("affects", [])]
    if level == "beginner":
        first = text.split(". ")[0].rstrip(".") + "."
        return first + (f" It changes {_join(affects)}." if affects else "")
    default = info.get_default(call_default_factory=True)
    more = f" Default: {default!r}."
    choices = literal_choices(info)
    if choices == ["auto"]:
        more += " Or 'auto': the advisor decides."
    elif choices:
        more += f" Choices: {', '.join(choices)}."
    if level == "intermediate":
        return text + more
    archs = meta.get("archs")
    where = f" Applies to {', '.join(archs)} only." if archs else ""
    bounds = bounds_text(info)
    return (
        f"{text}{more}{where}"
        + (f" Range: {bounds.removeprefix('use ')}." if bounds else "")
        + f" Setting `{path}` (wizard step '{meta.get('step')}', {meta.get('level')} level)."
    )


def _interactions(path: str, level: str, curated: dict[str, Text]) -> str:
    related = _related_rules(path)
    others = sorted({_generic(p) for r in related for p in r.paths} - {path})
    parts = [_level(curated["interactions"], level)] if "interactions" in curated else []
    if level == "beginner":
        if not parts:
            parts.append(
                f"Works together with {_join(_labels(others[:3]))}."
                if others
                else f"Part of the '{_step_title(path)}' step; it works on its own."
            )
        return " ".join(parts)
    if others:
        parts.append(f"Related settings: {', '.join(others[:8])}.")
    if level == "advanced" and related:
        parts.append("Checked by: " + "; ".join(f"{r.id} ({r.summary})" for r in related[:6]) + ".")
    if not parts:
        parts.append(f"Independent of other settings in the '{_step_title(path)}' step.")
    return " ".join(parts)


def _watch(path: str, info: typing.Any, level: str, curated: dict[str, Text]) -> str:
    if "watch" in curated:
        text = _level(curated["watch"], level)
        return text if level != "advanced" else text + _rules_watch(path)
    meta = field_meta(info)
    affects = meta.get("affects", [])
    default = info.get_default(call_default_factory=True)
    if level == "beginner":
        if "memory" in affects:
            return "If training runs out of memory, this is one of the settings to lower."
        if affects:
            return f"Changing it changes {_join([AFFECT_WORDS[a] for a in affects])}."
        return f"The default ({default!r}) suits most runs."
    bounds = bounds_text(info)
    base = f"Default {default!r}" + (f"; {bounds}" if bounds else "") + "."
    if meta.get("level") == "expert":
        base += " An expert setting: change it only for a reason you can test."
    return base + _rules_watch(path)


def _rules_watch(path: str) -> str:
    related = _related_rules(path)
    return (
        (" The review warns when: " + "; ".join(r.summary for r in related[:4]) + ".")
        if related
        else ""
    )


def _labels(paths: list[str]) -> list[str]:
    return [p.rsplit(".", 1)[-1].replace("_", " ") for p in paths]


def _join(words: list[str]) -> str:
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


def _step_title(path: str) -> str:
    step = field_meta(_fields()[path]).get("step", "advanced")
    return WIZARD_STEPS[step][0]


# ------------------------------------------------------------------------------------- steps
def step_fields(step: str) -> list[str]:
    return [p for p, info in _fields().items() if field_meta(info).get("step") == step]


def explain_step(step: str, level: str = "beginner") -> Explanation:
    """What a wizard step covers, its interactions and what to watch for, at ``level``."""
    if step not in WIZARD_STEPS:
        raise KeyError(f"unknown wizard step {step}")
    title, description = WIZARD_STEPS[step]
    paths = step_fields(step)
    basic = [p for p in paths if field_meta(_fields()[p]).get("level") == "basic"]
    if level == "beginner":
        what = f"{title}: {description}"
        if basic:
            what += f" The key settings: {_join(_labels(basic[:5]))}."
    elif level == "intermediate":
        what = f"{title}: {description} Settings: {', '.join(_labels(paths))}."
    else:
        what = f"{title} ({step}): {description} Fields: {', '.join(paths)}."
    curated = STEPS[step]
    watch = _level(curated["watch"], level)
    if level == "advanced":
        checks = sorted({r.id for p in paths for r in _related_rules(p)})
        if checks:
            watch += f" Rules reading this step: {', '.join(checks)}."
    return Explanation(what, _level(curated["interactions"], level), watch)
