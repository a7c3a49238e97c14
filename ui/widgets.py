"""Schema → widgets: every config field rendered from its type, bounds and wizard metadata.

Each widget is keyed by its dotted path (``cfg:train.lr``; an "auto" field adds the checkbox
``auto:train.lr``), labelled, and carries the field's description as help. The draft in
``ui.state`` is the source of truth: a widget is (re)seeded from it whenever the draft changed
elsewhere (an applied fix, an import, undo) or the widget was not on screen, and writes back
through an ``on_change`` callback. Input that cannot be read (text in a resolution list, broken
YAML) is kept in the widget and explained right under it; the draft keeps its last good value.
Numbers are typed as text and read by ``ui.number_text``: a number that cannot be read or is out
of range is refused with what was typed, and the field shows the value in force again.
Problems of the whole config (bounds, cross-field rules) are shown under the field they name.
What widget a field takes is read from its type by ``ui.field_spec`` (a ``Spec``).
"""

from __future__ import annotations

import copy
import functools
import math
import re
from typing import Any

import streamlit as st
import yaml
from pydantic import BaseModel

from trainer.config.fields import ARCH_DEFAULTS
from trainer.config.introspection import field_meta, iter_fields
from trainer.config.paths import generic_path
from trainer.config.safe_yaml import load_yaml
from ui import state
from ui.advice import explain_field, label_of, short_value
from ui.field_gates import gate_note, off_switch
from ui.field_spec import Spec, analyse
from ui.number_text import format_number, number_bounds, parse_number
from ui.preflight import follow_run_length, run_length
from ui.steps_epochs import EPOCHS, offered, render_run_length, store
from ui.text import plain

ERRORS = "field_errors"  # path -> message for input that could not be read
_SHADOW = "_shadow:"  # path -> the draft value the widget was last seeded with
_BASE = "_base:"  # table path -> rows the data editor was created with
ARCH_LABELS = {"sd15": "SD1.5", "sdxl": "SDXL", "flux": "Flux"}
LEVELS = ("basic", "advanced", "expert")
CHOICE_LABELS = {"model.arch": ARCH_LABELS}
AUTO_FALLBACKS: dict[str, Any] = {
    "train.steps": 1000,
    "train.lr": 1e-4,
    "train.batch_size": 1,
    "network.linear": 16,
    "network.linear_alpha": 16.0,
}
_MISSING = object()
NUMBER_KINDS = ("int", "float")
TABLE_ROW_PX = 35  # the data editor's row height
# Column widths (px): the prompt (a required text) and its negative show whole in the wizard's
# column; the per-prompt overrides, numbers of 75 px ("small"), scroll into view beside them.
TABLE_TEXT_PX = {True: 280, False: 160}  # by required
# Column headers short enough for a narrow column (the full description is the column's help).
TABLE_LABELS = {
    "neg": "Negative prompt",
    "guidance_scale": "Guidance",
    "sample_steps": "Steps",
    "network_multiplier": "LoRA strength",
}


def widget_key(path: str) -> str:
    return f"cfg:{path}"


def auto_key(path: str) -> str:
    return f"auto:{path}"


# ---------------------------------------------------------------------------------- field specs
@functools.cache
def spec(generic: str) -> Spec:
    info = dict(iter_fields())[generic]
    return analyse(generic, info)


def spec_of(path: str) -> Spec:
    return spec(generic_path(path))


def applies(generic: str, arch: str) -> bool:
    archs = spec(generic).archs
    return not archs or arch in archs


@functools.cache
def step_fields(step: str) -> tuple[str, ...]:
    return tuple(path for path, info in iter_fields() if field_meta(info).get("step") == step)


# ------------------------------------------------------------------------------- conversions
def _help(s: Spec) -> str:
    """The field's explanation at the user's level (what, works with, watch for), else its
    description; plus what it affects."""
    experience = (state.meta().get("intent") or {}).get("experience", "beginner")
    text = explain_field(s.generic, experience) or s.info.description or ""
    if s.affects:
        text += f"\n\nAffects: {', '.join(s.affects)}."
    if s.optional:
        text += " Leave empty for none."
    return text.strip()


def _to_widget(s: Spec, value: Any) -> Any:
    if s.kind in NUMBER_KINDS:
        return format_number(value)  # the value in force, exactly (out of range included)
    if s.kind == "bool":
        return bool(value)
    if s.kind == "choice":
        return str(value)
    if s.kind in ("int_list", "str_list", "str_or_list"):
        if value in (None, "auto"):
            return ""
        items = value if isinstance(value, list) else [value]
        return ", ".join(str(v) for v in items)
    if s.kind == "dict":
        return yaml.safe_dump(value, default_flow_style=False, sort_keys=False) if value else ""
    return "" if value is None else str(value)


def _from_widget(s: Spec, raw: Any) -> Any:
    """The config value for what the widget holds; ValueError says what is wrong with it."""
    if s.kind in NUMBER_KINDS:
        return parse_number(raw, s.kind, number_bounds(s.info), s.optional)
    if s.kind in ("bool", "choice"):
        return raw
    text = (raw or "").strip()
    if s.kind == "int_list":
        parts = [p for p in re.split(r"[,\s]+", text) if p]
        if not parts:
            raise ValueError("needs at least one size, e.g. 512 or 512, 768")
        bad = [p for p in parts if not p.isdigit()]
        if bad:
            raise ValueError(f"'{bad[0]}' is not a whole number of pixels — write e.g. 512, 768")
        return [int(p) for p in parts]
    if s.kind in ("str_list", "str_or_list"):
        parts = [p.strip() for p in text.split(",") if p.strip()]
        if s.kind == "str_or_list":
            return None if not parts else parts[0] if len(parts) == 1 else parts
        if not parts:
            raise ValueError("needs at least one name, e.g. to_q, to_k, to_v")
        return parts
    if s.kind == "dict":
        if not text:
            return {}
        try:
            data = load_yaml(text)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" (line {mark.line + 1})" if mark else ""
            raise ValueError(
                f"is not valid YAML{where} — write one 'name: value' per line"
            ) from None
        if not isinstance(data, dict):
            raise ValueError("should be 'name: value' lines, e.g. eps: 1.0e-8")
        return data
    if s.optional and not text:
        return None
    return raw if raw is not None else ""


# -------------------------------------------------------------------------------- sync + commit
def errors() -> dict[str, str]:
    return st.session_state.setdefault(ERRORS, {})


def _sync(path: str, seeds: dict[str, Any], value: Any) -> None:
    """Seed the widgets from the draft when it changed elsewhere or they were off screen.

    After a visit to another page Streamlit may keep a widget's key with its *default* value
    (the wizard came back with an empty Base model box): a widget that differs from the draft
    is reseeded too, unless it holds input the draft refused (shown as the field's error)."""
    ss = st.session_state
    shadow = _SHADOW + path
    drifted = path not in errors() and any(ss.get(k, _MISSING) != v for k, v in seeds.items())
    if drifted or ss.get(shadow, _MISSING) != value:
        for key, seed in seeds.items():
            ss[key] = seed
        ss[shadow] = copy.deepcopy(value)
        errors().pop(path, None)


def _store(path: str, value: Any) -> None:
    if path == "model.arch":
        _after_arch_change(value)
    before = run_length()
    store(path, value)  # steps and epochs stay one run length (ui.steps_epochs)
    follow_run_length(before)  # and the advice that quotes the length follows it
    st.session_state[_SHADOW + path] = copy.deepcopy(value)
    errors().pop(path, None)


def _after_arch_change(arch: str) -> None:
    ref = str(state.get_value("model.name_or_path") or "")
    if ref.startswith("demo:") and ref != "demo:dataset":
        state.set_value("model.name_or_path", f"demo:{arch}")


def _commit(path: str) -> None:
    s = spec_of(path)
    try:
        value = _from_widget(s, st.session_state.get(widget_key(path)))
    except ValueError as err:
        if s.kind not in NUMBER_KINDS:  # the text stays in the box to be corrected
            errors()[path] = f"{err}. The last good value is kept"
            return
        # A refused number: say what was typed, and show the value in force in the box again
        # (a callback may set its own widget's value; ``_sync`` leaves a field with an error be).
        in_force = state.get_value(path)
        shown = format_number(auto_fallback(path) if in_force == "auto" else in_force)
        kept = "Auto" if in_force == "auto" else shown or "empty (not set)"
        errors()[path] = f"{err}. The value in force is still {kept}"
        st.session_state[widget_key(path)] = shown
        return
    _store(path, value)


def _commit_auto(path: str) -> None:
    if st.session_state.get(auto_key(path)):
        _store(path, "auto")
    else:
        _commit(path)


def auto_fallback(path: str) -> Any:
    """What an Auto field shows (and takes when Auto is unticked): advice, memory, a default."""
    rec = state.meta()["recommendations"].get(path)
    if rec and rec.get("value") not in (None, "auto"):
        return rec["value"]
    last = state.meta()["last_concrete"].get(path)
    if last not in (None, "auto"):
        return last
    s = spec_of(path)
    if s.info.default not in (None, "auto", ...):
        return s.info.default
    if s.generic == "sample.guidance_scale":
        return ARCH_DEFAULTS[state.get_value("model.arch", "sd15")]["guidance_scale"]
    if s.generic == "network.target_modules":
        return ["to_q", "to_k", "to_v", "to_out.0"]
    return AUTO_FALLBACKS.get(s.generic)


# ------------------------------------------------------------------------------------ rendering
def render_field(path: str) -> None:
    """One field: its widget, what is wrong with it, and the advisor's recommendation."""
    s = spec_of(path)
    value = state.get_value(path)
    label = label_of(path)
    switch = off_switch(path)  # e.g. the quantization type while quantization is off
    try:
        if s.kind == "table":
            _table(path, s, value, label)
        elif s.auto:
            _auto_widget(path, s, value, label)
        else:
            _sync(path, {widget_key(path): _to_widget(s, value)}, value)
            _input(path, s, label, widget_key(path), _commit, disabled=switch is not None)
    except Exception as err:  # a field must never take the page down
        st.error(f"**Error:** could not show {label} ({plain(err)}).", icon=":material/error:")
    if switch:
        st.caption(gate_note(switch))
    _messages(path, value)
    if path == EPOCHS:
        render_run_length()  # "1,200 steps = 10 epochs of 120 steps (...)"


def _input(path: str, s: Spec, label: str, key: str, commit: Any, disabled: bool = False) -> None:
    kw: dict[str, Any] = {
        "key": key,
        "help": _help(s),
        "on_change": commit,
        "args": (path,),
        "disabled": disabled,
    }
    if s.kind == "bool":
        st.toggle(label, **kw)
    elif s.kind == "choice":
        options = list(s.choices)
        current = st.session_state.get(key)
        if current not in options:  # an invalid value from a file: show it, the error explains
            options.append(current)
        names = CHOICE_LABELS.get(s.generic, {})
        kw["format_func"] = lambda o: names.get(o, o)
        if len(options) <= 4 and max(len(o) for o in options) <= 10:
            st.segmented_control(label, options, required=True, **kw)
        else:
            st.selectbox(label, options, **kw)
    elif s.kind in NUMBER_KINDS:  # text, read by ui.number_text: see why there
        hint = number_bounds(s.info).hint(s.kind)
        st.text_input(label, placeholder=f"{hint}; empty = not set" if s.optional else hint, **kw)
    elif s.kind == "dict":
        st.text_area(label, placeholder="name: value, one per line", height=90, **kw)
    else:
        hints = {
            "int_list": "e.g. 512 or 512, 768",
            "str_list": "comma-separated, e.g. to_q, to_k",
            "str_or_list": "one path, or up to three separated by commas",
        }
        placeholder = hints.get(s.kind, "empty = not set" if s.optional else None)
        st.text_input(label, placeholder=placeholder, **kw)


def _auto_widget(path: str, s: Spec, value: Any, label: str) -> None:
    is_auto = value == "auto"
    shown = auto_fallback(path) if is_auto else value
    seeds = {auto_key(path): is_auto, widget_key(path): _to_widget(s, shown)}
    _sync(path, seeds, value)
    st.checkbox(
        f"Auto: let the advisor choose the {label[:1].lower() + label[1:]}",
        key=auto_key(path),
        help="Ticked, the advisor picks the value before the run starts. Untick to set it.",
        on_change=_commit_auto,
        args=(path,),
    )
    _input(path, s, label, widget_key(path), _commit_auto, disabled=is_auto)


def _messages(path: str, value: Any) -> None:
    err = errors().get(path)
    if err:
        st.error(f"**Not accepted:** {plain(err)}.", icon=":material/error:")  # quotes the input
    for problem in state.validated().problems_at(path):
        text = _where_in(problem.path.removeprefix(path).lstrip(".")) + problem.message
        text += f" — {problem.fix}" if problem.fix else ""
        st.error(f"**Error:** {plain(text)}", icon=":material/error:")  # may quote values
    rec = offered(state.meta()["recommendations"], state.draft()).get(path)
    if rec is not None and off_switch(path) is None:  # no advice on a greyed-out value
        # its reason is markdown already (ui.advice escapes what it quotes)
        if state.same_value(rec["value"], value):
            st.caption(f":material/lightbulb: **Recommended** — {rec['reason']}")
        else:
            st.caption(
                f":material/lightbulb: **Recommended: {plain(short_value(rec['value']))}** "
                "(yours differs) "
                f"— {rec['reason']}"
            )


def _where_in(rest: str) -> str:
    """'entry 2: ' for the second item of a list field ('1'), 'name: ' for a key; '' for the
    field itself (internal indices like '0' mean nothing to a user)."""
    if not rest:
        return ""
    head = rest.split(".", 1)[0]
    return f"entry {int(head) + 1}: " if head.isdigit() else f"{head}: "


# -------------------------------------------------------------------------------------- tables
def _table(path: str, s: Spec, value: Any, label: str) -> None:
    import pandas as pd  # ~0.75 s: only the few table fields need it

    ss = st.session_state
    key = widget_key(path)
    rows = value or []
    if key not in ss or ss.get(_SHADOW + path, _MISSING) != rows:
        ss.pop(key, None)  # old edits were relative to old rows
        ss[_BASE + path] = copy.deepcopy(rows)
        ss[_SHADOW + path] = copy.deepcopy(rows)
    model = s.row_model
    columns = list(model.model_fields)
    frame = pd.DataFrame(ss[_BASE + path], columns=columns)
    for name, info in model.model_fields.items():
        # A text or choice column that no row fills is all-NaN, i.e. float, and the data editor
        # refuses a text column over floats: keep such columns as objects (empty cells = None).
        if analyse(name, info).kind not in ("int", "float"):
            frame[name] = frame[name].astype(object).where(frame[name].notna(), None)
    st.markdown(f"**{label}**", help=_help(s))
    st.data_editor(
        frame,
        key=key,
        num_rows="dynamic",
        hide_index=True,
        column_config=_column_config(model),
        on_change=_commit_table,
        args=(path,),
        width="stretch",
        height=table_height(len(rows)),
        placeholder="",  # an empty cell is a setting left unset: blank, not the word "None"
        alt=label,
    )


def table_height(rows: int) -> int:
    """Pixels for the header, the rows (room for three at least, scrolling past twelve) and the
    row that adds one: 'auto' gave an empty table a sliver."""
    return TABLE_ROW_PX * (min(max(rows, 3), 12) + 2) + 3


def _column_config(model: type[BaseModel]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        sub = analyse(name, info)
        label, help_ = TABLE_LABELS.get(name) or label_of(name), info.description
        required = info.is_required()
        if sub.kind == "choice":
            config[name] = st.column_config.SelectboxColumn(
                label, options=list(sub.choices), help=help_, required=required, width="medium"
            )
        elif sub.kind in ("int", "float"):
            config[name] = st.column_config.NumberColumn(
                label,
                help=help_,
                min_value=sub.low,
                max_value=sub.high,
                step=1 if sub.kind == "int" else 0.01,
                required=required,
                width="small",
            )
        else:
            config[name] = st.column_config.TextColumn(
                label, help=help_, required=required, width=TABLE_TEXT_PX[required]
            )
    return config


def table_rows(
    base: list[dict[str, Any]], edits: dict[str, Any], model: type[BaseModel]
) -> list[dict[str, Any]]:
    """The rows after the data editor's edits (edited, added, deleted) on the rows it was given;
    empty cells dropped (optional settings), whole-number floats of integer columns as ints."""
    base = copy.deepcopy(base)
    for index, change in (edits.get("edited_rows") or {}).items():
        if int(index) < len(base):
            base[int(index)].update(change)
    base += [dict(row) for row in edits.get("added_rows") or []]
    deleted = {int(i) for i in edits.get("deleted_rows") or []}
    rows = []
    for index, row in enumerate(base):
        if index in deleted:
            continue
        clean = {k: _cell(model, k, v) for k, v in row.items() if k in model.model_fields}
        clean = {k: v for k, v in clean.items() if v is not None}
        if clean:
            rows.append(clean)
    return rows


def _cell(model: type[BaseModel], name: str, value: Any) -> Any:
    if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
        return None
    kind = analyse(name, model.model_fields[name]).kind
    if kind == "int" and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _commit_table(path: str) -> None:
    edits = st.session_state.get(widget_key(path)) or {}
    base = st.session_state.get(_BASE + path) or []
    rows = table_rows(base, edits, spec_of(path).row_model)
    state.set_value(path, rows)
    st.session_state[_SHADOW + path] = copy.deepcopy(rows)
