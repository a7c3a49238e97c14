"""The "Queue variants" form: a sweep of one or two settings of a config, queued as one group.

Review draws it under Launch for the draft, Compare for any run (its logged config). The user
picks a setting (the common ones first: learning rate, rank, alpha, steps, optimizer, resolution;
any other field from the same box) and maybe a second one; the values come prefilled with the
advisor's suggestions (``advisor.sweeps.suggest_values``) and stay editable as text. The variants
and their names are previewed, and "Queue N variants" adds them to the queue under one new group
id (``sweep-<base name>-<yyyymmdd-hhmm>``), which Compare's "Sweep" selector opens together.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import streamlit as st

from advisor.sweeps import (
    COMMON_SETTINGS,
    SweepError,
    Variant,
    base_config,
    format_values,
    make_variants,
    parse_values,
    suggest_values,
    sweep_group_id,
    sweepable_settings,
    value_text,
)
from trainer.config.io import ConfigError
from trainer.config.schema import TrainingConfig
from trainer.jobs.folder import LaunchRefused
from trainer.jobs.queue import enqueue, entries
from trainer.jobs.queue_runner import ensure_runner
from trainer.settings import StudioSettings, load_settings
from trainer.tracking.records import RunRecord
from ui.access import config_refusal
from ui.advice import label_of
from ui.compare_actions import draft_from_run
from ui.jobs import launch_prediction
from ui.text import code, plain, plain_line

NO_SECOND = ""  # the second setting's "none" choice
TITLE = "Queue variants"


def setting_choice(path: str) -> str:
    """How the setting boxes show a setting: its label, and the path for the uncommon ones."""
    if not path:
        return "(none: vary one setting)"
    return label_of(path) if path in COMMON_SETTINGS else f"{label_of(path)} · {path}"


# ---------------------------------------------------------------------------------- the form
def render_queue_variants(base: TrainingConfig | None, key: str) -> None:
    """The form in a collapsed "Queue variants" expander (Review: the draft; None while the
    draft has errors)."""
    with st.expander(f"{TITLE}: a sweep of one or two settings", key=f"{key}_box"):
        if base is None:
            st.caption("Fix the errors above first: the variants are made from this config.")
            return
        render_sweep_form(base, key)


def render_run_variants(settings: StudioSettings, rec: RunRecord) -> None:
    """Compare: "Queue variants of this run", the form on the run's logged config (read only
    once the user asks for it)."""
    key = f"cmp:sweep:{rec.run_id[:12]}"
    if not st.toggle("Queue variants of this run", key=f"{key}:open"):
        return
    try:
        base = draft_from_run(settings, rec)
    except OSError as err:  # no config artifact yet (the run is still starting)
        st.error(f"No config logged for this run yet: {plain(err)}")
        return
    except ConfigError as err:  # logged by an older studio whose settings changed since
        st.error(f"This run's config no longer validates: {plain(err)}")
        return
    render_sweep_form(base, key)


def render_sweep_form(base: TrainingConfig | Mapping[str, Any], key: str) -> None:
    """Choose one or two settings and their values, preview the variants, queue them."""
    try:
        cfg = base_config(base)
    except SweepError as err:
        st.error(plain(err))
        return
    st.caption(
        f"Each variant is {code(cfg.name)} with other values of one or two settings; the queue "
        "trains them one at a time and Compare opens them together (Sweep)."
    )
    options = sweepable_settings()
    left, right = st.columns(2)
    first = left.selectbox(
        "Vary", options, key=f"{key}:setting1", format_func=setting_choice, help=_HELP
    )
    second = right.selectbox(
        "and (optional)",
        [NO_SECOND, *(p for p in options if p != first)],
        key=f"{key}:setting2",
        format_func=setting_choice,
    )
    axes: dict[str, list[Any]] = {}
    problems: list[str] = []
    for slot, path, column in ((1, first, left), (2, second, right)):
        if not path:
            continue
        text = _values_box(cfg, path, f"{key}:values{slot}", column)
        try:
            axes[path] = parse_values(text)
        except SweepError as err:
            problems += [f"{setting_choice(path)}: {p}" for p in err.problems]
    variants: list[Variant] = []
    if not problems:
        try:
            variants = make_variants(cfg, axes)
        except SweepError as err:
            problems = err.problems
    if problems:
        st.error("\n".join(f"- {plain_line(p)}" for p in problems), icon=":material/error:")
    else:
        _preview(variants, key)
    label = f"Queue {len(variants)} variants" if variants else "Queue variants"
    if st.button(label, key=f"{key}:queue", disabled=not variants, icon=":material/playlist_add:"):
        _queue(cfg.name, variants, key)
    result = st.session_state.get(f"{key}:result")
    if result and result[2] == [v.name for v in variants]:  # said while it is about these
        {"ok": st.success, "error": st.error}[result[0]](result[1])


_HELP = (
    "The common settings come first; any other setting of the config is further down "
    "(type to search)."
)


def _values_box(cfg: TrainingConfig, path: str, key: str, column: Any) -> str:
    """The values box of one setting, prefilled with the suggestions; filled again when the
    setting or the base's value changes (the user's edits stay otherwise)."""
    widget = f"{key}:{path}"
    suggested = format_values(suggest_values(cfg, path))
    ss = st.session_state
    if ss.get(f"{widget}:suggested") != suggested:
        ss[f"{widget}:suggested"] = suggested
        ss[widget] = suggested
    return column.text_input(
        f"Values of {label_of(path)}",
        key=widget,
        help="Separated by commas, e.g. 5e-5, 1e-4, 2e-4. A list as one value: [512, 768].",
    )


def _preview(variants: list[Variant], key: str) -> None:
    paths = list(variants[0].values) if variants else []
    rows = [
        {
            "#": n,
            "run name": v.name,
            "LoRA file": f"{v.lora_name}.safetensors",  # each variant's own: none overwrites
            **{label_of(p): value_text(v.values[p]) for p in paths},
        }
        for n, v in enumerate(variants, start=1)
    ]
    st.dataframe(rows, hide_index=True, key=f"{key}:preview")


# ------------------------------------------------------------------------------- the queueing
def queue_variants(
    settings: StudioSettings, base_name: str, variants: list[Variant], when: datetime
) -> str:
    """Add every variant to the queue under one new group id (returned), then make sure the
    queue runner is running. Raises ``LaunchRefused`` (a ``QueueError``) from the queue, and
    before anything is queued when a variant reads outside the allowed roots while the studio is
    served to a network (Launch's refusal, ``config_refusal``)."""
    for variant in variants:  # all or none: a sweep with a hole in it ranks nothing
        refused = config_refusal(variant.config.model_dump(mode="json"), settings)
        if refused:
            raise LaunchRefused(refused)
    group = sweep_group_id(base_name, when, {e.group for e in entries(settings) if e.group})
    for variant in variants:
        step_s, total_s = launch_prediction(variant.config, settings)
        enqueue(
            settings,
            variant.config,
            variant.name,
            group=group,
            predicted_s_per_step=step_s,
            predicted_total_s=total_s,
        )
    ensure_runner(settings)
    return group


def _queue(base_name: str, variants: list[Variant], key: str) -> None:
    settings, names = load_settings(), [v.name for v in variants]
    try:
        group = queue_variants(settings, base_name, variants, datetime.now())
    except (LaunchRefused, OSError) as err:  # a QueueError; a home it cannot write
        st.session_state[f"{key}:result"] = ("error", f"**Not queued:** {plain(err)}", names)
        return
    st.session_state[f"{key}:result"] = (
        "ok",
        f"**Queued {len(variants)} variants** as {code(group)}. The queue trains them one at a "
        "time (Monitor shows it); Compare opens them together under Sweep.",
        names,
    )
