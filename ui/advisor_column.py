"""The advisor beside each wizard step: what the settings do, recommendations, warnings, numbers.

Also the pieces the review reuses: the findings list with one-click fixes and the predictions.
"""

from __future__ import annotations

import hashlib
from typing import Any

import streamlit as st

from advisor.model_facts import ModelSource
from trainer.config.paths import generic_path
from trainer.models.hub import format_bytes
from trainer.settings import load_settings
from ui import advice, state
from ui.advice import Finding, Prediction
from ui.boundary import advisor_boundary
from ui.compare_history import render_history_hint
from ui.context import StudioContext, apply_fix
from ui.field_gates import off_switch
from ui.preflight import apply_recommended, recommendations_made_for, refresh_recommendations
from ui.summary import format_duration, gb_text, memory_text, no_gpu
from ui.text import plain_line
from ui.widgets import ARCH_LABELS, step_fields

BUSY_CPU_RULE = "cpu_busy"  # advisor/checks_hardware.py: its message quotes the times' caveat


def show_value(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float) and value and abs(value) < 1e-2:
        return f"{value:.1e}"
    if isinstance(value, list):
        if not value:
            return "none"
        if any(isinstance(v, dict) for v in value) or len(value) > 4:
            return f"{len(value)} entries"
        return ", ".join(str(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in value.items()) or "none"
    return "empty" if value in (None, "") else str(value)


def seconds_text(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    return f"{seconds:.2f} s" if seconds < 10 else format_duration(seconds)


def render_advisor_column(step: str, context: StudioContext) -> None:
    st.markdown("#### :material/school: Advisor")
    with advisor_boundary("advising on this step"):
        _render_column(step, context)


def _render_column(step: str, context: StudioContext) -> None:
    fields = set(step_fields(step))
    with st.container(border=True):
        st.markdown("**What these settings do**")
        st.markdown(advice.explain_step(step, context.experience))
        st.caption(f"Explained for: {context.experience} (change it in preflight).")
    with st.container(border=True):
        st.markdown("**Recommendations**")
        render_recommendations(context, fields, key_prefix=f"col:{step}")
    with st.container(border=True):
        st.markdown("**Warnings**")
        found = context.findings_for(fields)
        if not advice.problems_of(found):
            st.caption(":material/check_circle: Nothing to warn about in this step.")
        render_findings(found, key_prefix=f"col:{step}")  # information too
    with st.container(border=True):
        st.markdown("**Predictions**")
        # The busy-CPU finding quotes the same caveat: said once, under Warnings, where shown.
        said = any(f.rule == BUSY_CPU_RULE for f in found)
        render_predictions(context, compact=True, busy_said=said)
    render_history_hint(load_settings())  # "based on N similar runs…" (issue 7)
    for note in context.notes:
        st.caption(f":material/info: {note}")


def render_recommendations(
    context: StudioContext, fields: set[str] | None, key_prefix: str
) -> None:
    recs = [
        (path, rec)
        for path, rec in context.recommendations.items()
        if fields is None or generic_path(path) in fields
    ]
    differing = [
        (p, r)
        for p, r in recs
        if not state.same_value(state.get_value(p), r["value"]) and not off_switch(p)
    ]
    stale = recommendations_made_for()
    if stale:
        what, made_for = stale
        if what == "architecture":
            arch = state.get_value("model.arch")
            was, now = ARCH_LABELS.get(made_for, made_for), ARCH_LABELS.get(arch, arch)
        else:
            was, now = made_for, str(state.get_value("model.name_or_path") or "no base model")
        st.markdown(
            f":material/info: These were made for **{plain_line(was)}**; the draft is now "
            f"{plain_line(now)}."
        )
        st.button(
            f"Recommend for {plain_line(now)}",
            key=f"{key_prefix}:refresh",
            on_click=refresh_recommendations,
            icon=":material/refresh:",
            help="Asks the advisor again; nothing changes until you apply a value.",
        )
    if not recs:
        if context.recommendations:  # preflight answered: this step simply has none
            st.caption("Nothing to recommend for this step beyond the values shown.")
        else:
            st.caption("No recommendations here yet: answer the preflight questions to get some.")
        return
    for path, rec in differing:  # values may be typed or read from captions: shown as text
        value, yours = (
            plain_line(show_value(rec["value"])),
            plain_line(show_value(state.get_value(path))),
        )
        st.markdown(
            f":material/lightbulb: **{advice.label_of(path)}**: {value} "
            f"(yours: {yours})  \n{rec['reason']}"
        )
        st.button(
            f"Apply {value}",
            key=f"{key_prefix}:apply:{path}",
            on_click=apply_recommended,
            args=({path: rec["value"]},),
            help=f"Set {advice.label_of(path)} to the recommended value",
        )
    if not differing:
        st.caption(f":material/check_circle: All {len(recs)} recommended values are in use.")


def _finding_key(prefix: str, finding: Finding) -> str:
    return f"{prefix}:fix:{hashlib.sha1(finding.key.encode()).hexdigest()[:10]}"


def settings_text(paths: list[str]) -> str:
    """'Settings: Device, Steps': the settings a finding concerns, by the labels the wizard
    shows (each once: two datasets' resolutions are one 'Resolution')."""
    labels = list(dict.fromkeys(advice.label_of(p) for p in paths))
    if not labels:
        return ""
    return f"Setting{'s' * (len(labels) > 1)}: {plain_line(', '.join(labels))}"


def render_findings(found: list[Finding], key_prefix: str) -> None:
    for finding in advice.by_severity(found):
        where = settings_text(finding.paths)
        st.markdown(
            f"{advice.severity_badge(finding.severity)}**:** {finding.message}"
            + (f"  \n:gray[{where}]" if where else "")
        )
        if finding.fix:
            st.button(
                f"Fix: {finding.fix_label or _patch_text(finding.fix)}",
                key=_finding_key(key_prefix, finding),
                on_click=apply_fix,
                args=(finding.fix,),
                icon=":material/build:",
            )


def _patch_text(patch: dict[str, Any]) -> str:
    return plain_line(
        ", ".join(f"{advice.label_of(p)} = {show_value(v)}" for p, v in patch.items())
    )


def _range(span: tuple[float, float] | None) -> str:
    return f"{seconds_text(span[0])}–{seconds_text(span[1])}" if span else ""


def download_note(model: ModelSource | None) -> str:
    """'+ 4.3 GB model download to <cache>' while the base model is not fully cached."""
    if model is None or not model.needs_download:
        return ""
    return f"+ {format_bytes(model.download_bytes)} model download to `{model.cache_dir}`"


def render_predictions(
    context: StudioContext, compact: bool = False, busy_said: bool = False
) -> None:
    """The predicted memory, times and disk; ``busy_said``: the busy-CPU caveat is already
    shown above (its finding), so it is not repeated beside the times."""
    prediction: Prediction | None = context.prediction
    if prediction is None:
        st.caption(
            ":material/query_stats: Predictions unavailable: no valid settings to estimate yet "
            "(fix the errors), or the advisor failed (its message is above)."
        )
        return
    if not compact:
        for note in context.notes:
            st.caption(f":material/info: {note}")
    label, value, note = memory_text(prediction, context.hw)
    disk = download_note(context.model)
    low, high = prediction.vram_range
    ram = gb_text(prediction.ram_gb or None)
    rows = [
        ("VRAM", gb_text(prediction.vram_gb), f"{low:.1f}–{high:.1f} GB; {note}"),
        ("System RAM", ram, ""),
        ("Step time", seconds_text(prediction.step_s), _range(prediction.step_range)),
        ("Total time", seconds_text(prediction.total_s), prediction.time_split()),
        ("Disk", gb_text(prediction.disk_gb), disk),
    ]
    if no_gpu(prediction):  # no VRAM to show: the RAM row carries the headline's verdict
        rows[:2] = [("System RAM", ram, note)]
    evidence = prediction.evidence
    caveat = prediction.time_caveat  # a busy CPU: said beside the times, never hidden in them
    busy = ""
    if caveat and not busy_said:
        busy = f":orange[:material/warning:] {caveat[:1].upper()}{caveat[1:]}."
    if compact:
        lines = [f"{k}: **{v}**" + (f" ({n})" if n else "") for k, v, n in rows]
        st.markdown("  \n".join(lines + ([busy] if busy else [])))
    else:
        cols = st.columns(len(rows))
        for col, (row_label, text, note_) in zip(cols, rows, strict=True):
            col.metric(row_label, text, help=note_ or None)
        st.caption(f"{label.removeprefix('Predicted ')} {value} {note}")
        split = prediction.time_split()
        if split:
            st.caption(f"Total ≈ {seconds_text(prediction.total_s)}: {split}")
        if busy:
            st.markdown(busy)
        if disk:
            st.caption(f"Disk {gb_text(prediction.disk_gb or 0)} for the run {disk}")
    for line in evidence:  # which past runs corrected these numbers, or why none did
        st.caption(f":material/history: {line}")
    rest = [a for a in prediction.assumptions if a not in evidence]
    if rest:
        with st.expander("Assumptions behind these numbers"):
            st.markdown("\n".join(f"- {a}" for a in rest))
