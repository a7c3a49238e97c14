"""Configs in and out: YAML with comments, command-line overrides and readable errors.

Every problem is reported as ``dotted.path: what is wrong — how to fix it``.
"""

from __future__ import annotations

import difflib
import json
import re
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from trainer.config.fields import FieldProblems
from trainer.config.introspection import bounds_text, literal_choices, nested_model
from trainer.config.paths import PathError, set_path
from trainer.config.safe_yaml import YamlShapeError, load_yaml
from trainer.config.schema import TrainingConfig
from trainer.files import atomic_write_text

MAX_CONFIG_BYTES = 2 * 1024 * 1024
HEADER = (
    "# LoRA Studio training config. Every setting is explained above its line.\n"
    "# Check it with: python -m trainer validate THIS_FILE\n"
)


@dataclass(frozen=True)
class Problem:
    path: str
    message: str
    fix: str = ""

    def __str__(self) -> str:
        text = f"{_one_line(self.path)}: {_one_line(self.message)}"
        return text + (f" — {_one_line(self.fix)}" if self.fix else "")


def _one_line(text: str) -> str:
    """Text with line breaks and other control characters escaped: one problem, one line."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


class ConfigError(Exception):
    """One or more problems with a config; str() lists them one per line."""

    def __init__(self, problems: Sequence[Problem], source: str | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        super().__init__("\n".join(str(p) for p in self.problems))


# ------------------------------------------------------------------------------------- reading
def _binary(source: str) -> ConfigError:
    problem = Problem(
        source,
        "is binary data, not a YAML text file",
        "choose the .yaml file you saved or exported",
    )
    return ConfigError([problem], source)


def parse_yaml(text: str | bytes, source: str = "config") -> dict[str, Any]:
    """The mapping in a YAML document, or a ConfigError saying what is wrong with the file."""
    if isinstance(text, bytes):
        if b"\x00" in text[:8192]:
            raise _binary(source)
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as err:
            raise ConfigError(
                [
                    Problem(
                        source, f"is not UTF-8 text (byte {err.start})", "save the file as UTF-8"
                    )
                ],
                source,
            ) from None
    if "\x00" in text:
        raise _binary(source)
    try:
        data = load_yaml(text)
    except yaml.YAMLError as err:
        raise ConfigError([_yaml_problem(err, source)], source) from None
    if data is None:
        raise ConfigError(
            [Problem(source, "is empty", "start from a preset, e.g. presets/demo_sd15.yaml")],
            source,
        )
    if not isinstance(data, dict):
        raise ConfigError(
            [
                Problem(
                    source,
                    f"holds a {type(data).__name__}, not settings",
                    "the top level must be 'key: value' lines such as 'model:' and 'train:'",
                )
            ],
            source,
        )
    _refuse_alias_tricks(data, source)
    return data


MAX_YAML_NODES = 100_000  # far above any real config; stops "billion laughs" alias bombs


def _refuse_alias_tricks(data: Any, source: str) -> None:
    """A ConfigError for a document that refers to itself or expands to a huge tree (YAML
    aliases can do both in a few bytes); either would crash or stall validation."""
    seen = 0
    stack: list[tuple[Any, frozenset[int]]] = [(data, frozenset())]
    while stack:
        node, parents = stack.pop()
        seen += 1
        if seen > MAX_YAML_NODES:
            problem = "expands to too many values (YAML aliases repeated over and over)"
            raise ConfigError([Problem(source, problem, "write the settings out plainly")], source)
        if isinstance(node, dict | list):
            if id(node) in parents:
                problem = "refers to itself (a recursive YAML alias such as '&a [*a]')"
                raise ConfigError([Problem(source, problem, "remove the alias")], source)
            inner = parents | {id(node)}
            children = [*node.keys(), *node.values()] if isinstance(node, dict) else node
            stack.extend((child, inner) for child in children)


def _yaml_problem(err: yaml.YAMLError, source: str) -> Problem:
    mark = getattr(err, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    what = getattr(err, "problem", None) or str(err).splitlines()[0]
    if isinstance(err, YamlShapeError):
        return Problem(f"{source}{where}", what, "keep one of each key and nest plainly")
    return Problem(
        f"{source}{where}",
        f"is not valid YAML ({what})",
        "check the indentation (spaces, not tabs) and quote values containing ':' or '#'",
    )


def read_config_text(path: str | Path) -> bytes:
    file = Path(path)
    if not file.exists():
        raise ConfigError([Problem(str(file), "does not exist", "check the path")], str(file))
    if file.is_dir():
        raise ConfigError(
            [Problem(str(file), "is a folder, not a config file", "name a .yaml file")], str(file)
        )
    if file.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError(
            [
                Problem(
                    str(file),
                    "is larger than 2 MB, too big to be a config",
                    "name the .yaml config, not a model or data file",
                )
            ],
            str(file),
        )
    return file.read_bytes()


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> TrainingConfig:
    source = str(path)
    return config_from_dict(parse_yaml(read_config_text(path), source), overrides, source)


def loads_config(text: str | bytes, overrides: Iterable[str] = ()) -> TrainingConfig:
    return config_from_dict(parse_yaml(text), overrides)


def config_from_dict(
    data: dict[str, Any], overrides: Iterable[str] = (), source: str | None = None
) -> TrainingConfig:
    data = apply_overrides(data, overrides)
    try:
        return TrainingConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(problems_from_validation(err), source) from None


# ------------------------------------------------------------------------------------ overrides
def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply 'dotted.key=value' settings (values parsed as YAML) to a copy of the data."""
    data = json.loads(json.dumps(data, default=str))
    overrides = list(overrides)
    if any(item.startswith("datasets.") for item in overrides) and "datasets" not in data:
        data["datasets"] = [{}]  # the default: one dataset, so datasets.0.x addresses it
    problems = []
    for item in overrides:
        try:
            _set_dotted(data, item)
        except (ValueError, PathError) as err:
            problems.append(
                Problem(
                    item.partition("=")[0] or item,
                    str(err).split(" — ")[0],
                    str(err).partition(" — ")[2],
                )
            )
    if problems:
        raise ConfigError(problems, "--set")
    _refuse_alias_tricks(data, "--set")  # '--set x=&a [*a]' is as much a YAML document
    return data


def _set_dotted(data: dict[str, Any], item: str) -> None:
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ValueError("is not KEY=VALUE — write e.g. train.lr=1e-4")
    try:
        value = load_yaml(raw) if raw.strip() else ""
    except YamlShapeError as err:
        raise ValueError(f"{err.problem} — write the value out plainly") from None
    except yaml.YAMLError:
        value = raw
    set_path(data, key.strip(), value, create=True)


# ----------------------------------------------------------------------------------- messages
_UNION_TAG = re.compile(r"^(int|float|bool|str|none|constrained-\w+|literal\[.*\]|[\w-]+\[.*\])$")


def problems_from_validation(err: ValidationError) -> list[Problem]:
    problems: dict[str, Problem] = {}
    for detail in err.errors(include_url=False):
        for problem in _problems_from_detail(detail):
            if problem.path in problems and detail["type"] != "value_error":
                problems[problem.path] = _merge(problems[problem.path], problem)
            else:
                problems.setdefault(problem.path, problem)
    return list(problems.values())


def _merge(first: Problem, second: Problem) -> Problem:
    # A union (e.g. int | "auto") reports one error per member; say it once.
    for one, other in ((first, second), (second, first)):
        if other.message.endswith("is not one of: auto"):
            return Problem(
                one.path, one.message, f"{one.fix} (or 'auto' to let the advisor decide)".lstrip()
            )
    if first.message.startswith("expects") and second.message.startswith("expects"):
        a = first.message.split(", got ")[0]
        b = second.message.split(", got ")[0].removeprefix("expects ")
        got = first.message.partition(", got ")[2]
        return Problem(first.path, f"{a} or {b}, got {got}", first.fix)
    return first


def _problems_from_detail(detail: dict[str, Any]) -> list[Problem]:
    loc = [part for part in detail["loc"] if not (isinstance(part, str) and _UNION_TAG.match(part))]
    path = ".".join(str(part) for part in loc) or "config"
    kind, value = detail["type"], detail.get("input")
    ctx = detail.get("ctx") or {}
    info = _field_at(loc)
    if kind == "value_error" and isinstance(ctx.get("error"), FieldProblems):
        prefix = f"{path}." if path != "config" else ""
        return [_split(prefix + sub, msg) for sub, msg in ctx["error"].problems]
    if kind == "extra_forbidden":
        return [_unknown_key(loc)]
    return [Problem(path, *_describe(kind, value, ctx, info, detail["msg"]))]


def _split(path: str, message: str) -> Problem:
    message, _, fix = message.partition(" — ")
    return Problem(path, message, fix)


def _describe(
    kind: str, value: Any, ctx: dict[str, Any], info: FieldInfo | None, msg: str
) -> tuple[str, str]:
    shown = _show(value)
    bounds = bounds_text(info)
    if kind == "missing":
        return "is required but missing", _help(info) or "add it"
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        sign = {
            "greater_than_equal": "≥",
            "greater_than": ">",
            "less_than_equal": "≤",
            "less_than": "<",
        }[kind]
        limit = next(iter(ctx.values()), "?")
        return f"must be {sign} {limit} (got {shown})", bounds or "change the value"
    if kind == "literal_error":
        choices = literal_choices(info)
        guess = difflib.get_close_matches(str(value), choices, n=1, cutoff=0.5)
        fix = f"did you mean '{guess[0]}'?" if guess else "pick one of them"
        return f"{shown} is not one of: {', '.join(choices)}", fix
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"expects a whole number, got {shown}", bounds or "write digits only, e.g. 16"
    if kind in ("float_parsing", "float_type"):
        return f"expects a number, got {shown}", bounds or "write e.g. 0.0001 or 1e-4"
    if kind in ("bool_parsing", "bool_type"):
        return f"expects true or false, got {shown}", "write true or false"
    if kind in ("string_type",):
        return f"expects text, got {shown}", 'quote it: "..."'
    if kind == "string_pattern_mismatch":
        return f"{shown} has characters that are not allowed here", _pattern_fix(info)
    if kind == "too_short" and isinstance(value, list):
        return f"needs at least {ctx.get('min_length', 1)} item(s)", "add one"
    if kind in ("string_too_short", "too_short"):
        return "is empty", f"fill it in: {_help(info)}" if _help(info) else "fill it in"
    if kind == "too_long":
        return f"has too many items (at most {ctx.get('max_length')})", "remove some"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"should be a section of 'key: value' lines, got {shown}", (
            "indent the settings under this key"
        )
    if kind == "list_type":
        return f"should be a list, got {shown}", "write it as [a, b] or as '- item' lines"
    return msg, _help(info)


def _unknown_key(loc: list[Any]) -> Problem:
    key = str(loc[-1])
    path = ".".join(str(part) for part in loc)
    model = _model_at(loc[:-1])
    valid = list(model.model_fields) if model else []
    guess = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    if guess:
        return Problem(path, f"unknown option '{key}'", f"did you mean '{guess[0]}'?")
    home = _section_holding(key)
    if home:
        return Problem(path, f"'{key}' does not belong here", f"move it under '{home}:'")
    shown = ", ".join(valid[:12]) + (", ..." if len(valid) > 12 else "")
    return Problem(path, f"unknown option '{key}'", f"remove it; options here are: {shown}")


def _section_holding(key: str) -> str | None:
    for section, info in TrainingConfig.model_fields.items():
        nested = nested_model(info)
        if nested and key in nested.model_fields:
            return f"{section}[]" if section == "datasets" else section
    return None


def _model_at(loc: Sequence[Any]) -> type[BaseModel] | None:
    model: type[BaseModel] | None = TrainingConfig
    for part in loc:
        if isinstance(part, int) or model is None:
            continue
        if part not in model.model_fields:
            return None
        model = nested_model(model.model_fields[part])
    return model


def _field_at(loc: Sequence[Any]) -> FieldInfo | None:
    model: type[BaseModel] | None = TrainingConfig
    info = None
    for part in loc:
        if isinstance(part, int):
            continue
        if model is None or part not in model.model_fields:
            return info
        info = model.model_fields[part]
        model = nested_model(info)
    return info


def _pattern_fix(info: FieldInfo | None) -> str:
    if info is not None and "hf_repo_id" in (info.description or "") + str(info.title):
        return "write it as 'user/name'"
    return "use letters, digits, '_', '-' and '.' only" + (
        f" ({_help(info)})" if info is not None and info.description else ""
    )


_SENTENCE_END = re.compile(r"(?<!\be\.g)(?<!\bi\.e)\.\s")  # not after "e.g." / "i.e."


def _help(info: FieldInfo | None) -> str:
    """The description's first sentence."""
    return _SENTENCE_END.split(info.description or "")[0].rstrip(".") if info else ""


def _show(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


# ------------------------------------------------------------------------------------- writing
def dump_yaml(cfg: TrainingConfig, comments: bool = True) -> str:
    """YAML with each field's description as a comment above it; loads back to an equal config."""
    lines: list[str] = [HEADER] if comments else []
    _emit_model(cfg, 0, lines, comments)
    return "\n".join(lines).rstrip() + "\n"


def _emit_model(obj: BaseModel, indent: int, lines: list[str], comments: bool) -> None:
    pad = " " * indent
    for name, info in type(obj).model_fields.items():
        value = getattr(obj, name)
        if comments and info.description:
            width = max(40, 96 - indent)
            lines.extend(f"{pad}# {line}" for line in textwrap.wrap(info.description, width))
        if isinstance(value, BaseModel):
            lines.append(f"{pad}{name}:")
            _emit_model(value, indent + 2, lines, comments)
        elif isinstance(value, list) and value and isinstance(value[0], BaseModel):
            lines.append(f"{pad}{name}:")
            for item in value:
                lines.append(f"{pad}  -")
                _emit_model(item, indent + 4, lines, comments)
        else:
            dumped = value.model_dump(mode="json") if isinstance(value, BaseModel) else value
            lines.append(f"{pad}{name}: {_scalar(dumped)}")
        if comments and indent == 0:
            lines.append("")


def _scalar(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=1 << 20, allow_unicode=True)
    text = text.strip()
    return text[:-3].rstrip() if text.endswith("\n...") else text


def save_config(cfg: TrainingConfig, path: str | Path, comments: bool = True) -> Path:
    return atomic_write_text(Path(path), dump_yaml(cfg, comments))
