"""The summary header on top of the wizard and review, and the sidebar's hardware summary.

Status is never colour alone: every state has an icon and a word (fits / over / errors...).
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from ui import state
from ui.advice import Hardware, Prediction
from ui.boundary import advisor_boundary
from ui.context import StudioContext, hardware
from ui.widgets import ARCH_LABELS

OK, WARN, ERR = ":material/check_circle:", ":material/warning:", ":material/error:"
INFO = ":material/info:"


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = max(0, round(seconds))
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def _item(column: Any, label: str, value: str, note: str = "") -> None:
    with column:
        st.caption(label)
        st.markdown(f"**{value}**" + (f"  \n{note}" if note else ""))


def vram_text(prediction: Prediction | None, hw: Hardware) -> tuple[str, str]:
    """('≈ 6.1 GB', 'of 24 GB · :material/check_circle: fits') — or why there is no number."""
    if prediction is None:
        return "unavailable", "predictions unavailable"
    value = f"≈ {prediction.vram_gb:.1f} GB"
    words = {"yes": f"{OK} fits", "tight": f"{WARN} tight", "no": f"{ERR} does not fit"}
    fits = prediction.fits
    verdict = words.get(prediction.fit_word or "") or (
        "" if fits is None else words["yes"] if fits else words["no"]
    )
    if prediction.vram_available_gb is None:
        return value, f"no GPU: uses system RAM ({hw.ram_available_gb:.0f} GB free) · {verdict}"
    return value, f"of {prediction.vram_available_gb:.0f} GB · {verdict}"


def status_text(context: StudioContext) -> tuple[str, str]:
    errors, warnings = len(context.errors), len(context.warnings)
    tips = len(context.findings) - errors - warnings
    if not errors and not warnings:
        return f"{OK} Ready", f"{tips} suggestion(s) to consider" if tips else "no problems found"
    parts = []
    if errors:
        parts.append(f"{ERR} {errors} error{'s' * (errors != 1)}")
    if warnings:
        parts.append(f"{WARN} {warnings} warning{'s' * (warnings != 1)}")
    return " · ".join(parts), "see the advisor column or Review"


def render_summary_header(context: StudioContext) -> None:
    draft = state.draft()
    arch = draft["model"]["arch"]
    datasets = draft.get("datasets") or [{}]
    sizes = datasets[0].get("resolution") or []
    steps = draft["train"]["steps"]
    with st.container(border=True, key="summary_header"):
        cols = st.columns([1.3, 1, 1, 1.3, 1.3])
        _item(cols[0], "Model", ARCH_LABELS.get(arch, arch), f"`{draft['model']['name_or_path']}`")
        more = f"+{len(datasets) - 1} more dataset(s)" if len(datasets) > 1 else ""
        _item(cols[1], "Resolution", ", ".join(str(s) for s in sizes) + " px", more)
        total = context.prediction.total_s if context.prediction else None
        _item(
            cols[2],
            "Steps",
            "auto" if steps == "auto" else f"{steps:,}",
            f"≈ {format_duration(total)} in all" if total else "",
        )
        value, note = vram_text(context.prediction, context.hw)
        _item(cols[3], "Predicted VRAM", value, note)
        value, note = status_text(context)
        _item(cols[4], "Status", value, note)


def render_sidebar_hardware() -> None:
    """A few lines about the machine, with a link to check or override it in preflight."""
    with st.sidebar, advisor_boundary("detecting this machine") as detecting:
        hw = hardware()
    if detecting.failed:
        return
    with st.sidebar.container(key="hardware_summary"):
        st.markdown("**This machine**")
        gpu = hw.gpu_name + (f" · {hw.vram_gb:.0f} GB for training" if hw.vram_gb else "")
        icon = ":material/memory:" if hw.gpu_kind != "cpu" else ":material/developer_board:"
        lines = [
            f"{icon} {gpu}",
            f":material/storage: RAM {hw.ram_gb:.0f} GB ({hw.ram_available_gb:.0f} GB free)",
            f":material/hard_drive: {hw.disk_free_gb:.0f} GB free disk ({hw.disk_type})",
            f":material/settings: {hw.cores} CPU cores",
        ]
        st.caption("  \n".join(lines))
        overrides = state.meta().get("profile_overrides") or {}
        if any(v not in (None, "", 0) for v in overrides.values()):
            st.caption(f"{INFO} includes your overrides from preflight")
        st.page_link("pages/preflight.py", label="Check hardware", icon=":material/tune:")
