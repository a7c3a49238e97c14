"""The summary header on top of the wizard and review, and the sidebar's hardware summary.

Status is never colour alone: every state has an icon and a word (fits / over / errors...).
The header names the validation too while it is on (``validation_text``).
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from advisor.dataset import run_steps
from trainer.config.fields import WIZARD_STEPS
from ui import state
from ui.advice import Hardware, Prediction
from ui.boundary import advisor_boundary
from ui.context import StudioContext, hardware
from ui.steps_epochs import counted_images
from ui.text import code
from ui.widgets import ARCH_LABELS, step_fields

WIZARD_PAGE = "pages/wizard.py"
ATTENTION = ("error", "warning")  # what the status counts: suggestions and information are fine
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


def gb_text(gb: float | None) -> str:
    """'1.2 GB'; '< 0.1 GB' for the tiny demo's sizes, never a '0.0 GB' that reads as nothing."""
    if gb is None:
        return "?"
    return "< 0.1 GB" if gb < 0.05 else f"{gb:.1f} GB"


def approx_gb(gb: float) -> str:
    return f"≈ {gb_text(gb)}" if gb >= 0.05 else gb_text(gb)


def no_gpu(prediction: Prediction) -> bool:
    """The run trains on the CPU: no VRAM exists; system RAM is the memory that matters."""
    return prediction.vram_available_gb is None


def memory_text(prediction: Prediction | None, hw: Hardware) -> tuple[str, str, str]:
    """The memory headline as (label, value, note): ('Predicted VRAM', '≈ 6.1 GB', 'of 24 GB ·
    fits'); on a machine without a GPU the RAM instead, never a '0.0 GB' of VRAM: ('Predicted
    RAM', '≈ 1.2 GB', 'of 16 GB, 12 GB free · fits · CPU: no VRAM')."""
    if prediction is None:
        return "Predicted VRAM", "unavailable", "predictions unavailable"
    words = {"yes": f"{OK} fits", "tight": f"{WARN} tight", "no": f"{ERR} does not fit"}
    if no_gpu(prediction):
        if prediction.ram_gb is None:
            return "Predicted RAM", "?", f"of {hw.ram_gb:.0f} GB · CPU: no VRAM"
        value = approx_gb(prediction.ram_gb)
        fit = ram_fit(prediction.ram_gb, hw)
        note = f"of {hw.ram_gb:.0f} GB, {hw.ram_available_gb:.0f} GB free · {words[fit]}"
        return "Predicted RAM", value, f"{note} · CPU: no VRAM"
    fits = prediction.fits
    verdict = words.get(prediction.fit_word or "") or (
        "" if fits is None else words["yes"] if fits else words["no"]
    )
    value = approx_gb(prediction.vram_gb)
    return "Predicted VRAM", value, f"of {prediction.vram_available_gb:.0f} GB · {verdict}"


def ram_fit(needed_gb: float, hw: Hardware) -> str:
    """yes: fits in the RAM free now; tight: only if other programs give some back; no: more
    than the machine has."""
    if needed_gb > hw.ram_gb:
        return "no"
    return "tight" if needed_gb > hw.ram_available_gb else "yes"


def problem_steps(context: StudioContext) -> list[str]:
    """The wizard steps that hold an error or a warning, in wizard order: the steps whose
    advisor column lists it (a finding is on every step that holds one of its settings)."""
    return [
        step
        for step in WIZARD_STEPS
        if any(f.severity in ATTENTION for f in context.findings_for(set(step_fields(step))))
    ]


def step_name(step: str) -> str:
    """'9 · Training core': the step as the wizard's picker names it."""
    return f"{list(WIZARD_STEPS).index(step) + 1} · {WIZARD_STEPS[step][0]}"


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def where_text(context: StudioContext) -> str:
    """Where the errors and warnings are: 'on step 9 · Training core', 'on steps 9 · Training
    core and 12 · Model-specific'; one tied to no step is listed under Validation on Review."""
    steps = problem_steps(context)
    placed = {id(f) for s in steps for f in context.findings_for(set(step_fields(s)))}
    loose = any(f.severity in ATTENTION and id(f) not in placed for f in context.findings)
    parts = []
    if steps:
        parts.append(f"on step{'s' * (len(steps) > 1)} {_and([step_name(s) for s in steps])}")
    if loose:
        parts.append("in Review's Validation list")
    return _and(parts)


def status_text(context: StudioContext) -> tuple[str, str]:
    errors, warnings = len(context.errors), len(context.warnings)
    tips = sum(f.severity == "suggestion" for f in context.findings)  # information is no tip
    if not errors and not warnings:
        return f"{OK} Ready", f"{tips} suggestion(s) to consider" if tips else "no problems found"
    parts = []
    if errors:
        parts.append(f"{ERR} {errors} error{'s' * (errors != 1)}")
    if warnings:
        parts.append(f"{WARN} {warnings} warning{'s' * (warnings != 1)}")
    return " · ".join(parts), where_text(context)


def open_step(step: str) -> None:
    """The wizard, at ``step`` (from any page: the wizard reads its step from the draft's meta)."""
    state.set_meta("step", step)
    st.switch_page(WIZARD_PAGE)


def _render_status(column: Any, context: StudioContext) -> None:
    value, note = status_text(context)
    _item(column, "Status", value, note)
    steps = problem_steps(context)
    if not steps:
        return
    # A row of short buttons under the sentence that names the steps: the column is narrow.
    with (
        column,
        st.container(
            horizontal=True, gap="xsmall", vertical_alignment="center", key="summary_steps"
        ),
    ):
        st.caption("Open step", width="content")
        for step in steps:
            number = list(WIZARD_STEPS).index(step) + 1
            if st.button(
                str(number),
                key=f"summary:open:{step}",
                type="tertiary",
                icon=":material/arrow_forward:",
                help=f"Open the wizard at step {step_name(step)}",
            ):
                open_step(step)


def render_summary_header(context: StudioContext) -> None:
    draft = state.draft()
    arch = draft["model"]["arch"]
    datasets = draft.get("datasets") or [{}]
    sizes = datasets[0].get("resolution") or []
    with st.container(border=True, key="summary_header"):
        cols = st.columns([1.3, 1, 1, 1.3, 1.3])
        _item(cols[0], "Model", ARCH_LABELS.get(arch, arch), f"`{draft['model']['name_or_path']}`")
        more = f"+{len(datasets) - 1} more dataset(s)" if len(datasets) > 1 else ""
        _item(cols[1], "Resolution", ", ".join(str(s) for s in sizes) + " px", more)
        total = context.prediction.total_s if context.prediction else None
        _item(
            cols[2],
            "Steps",
            steps_text(context, draft),
            f"≈ {format_duration(total)} in all" if total else "",
        )
        _item(cols[3], *memory_text(context.prediction, context.hw))
        _render_status(cols[4], context)
        validation = validation_text(draft)
        if validation:
            st.caption(f":material/fact_check: {validation}", help=VALIDATION_HELP)


def steps_text(context: StudioContext, draft: dict[str, Any]) -> str:
    """The steps the run will train (``run_steps``: with epochs set, the steps they come to on
    the draft's images), 'auto', or the epochs while their images are not counted."""
    cfg = context.validated.config
    epochs = draft["train"].get("epochs")
    if cfg is not None and epochs is not None:
        with advisor_boundary("counting the steps per epoch"):
            steps = run_steps(cfg, counted_images(cfg, draft))
            return f"{epochs:,} epochs" if steps is None else f"{steps:,}"
    steps = draft["train"]["steps"]
    return "auto" if steps == "auto" else f"{steps:,}"


VALIDATION_HELP = (
    "The LoRA is scored on images it never trains on (the validation loss): it falls while the "
    "LoRA learns and rises once it starts copying its training images, and marks the best saved "
    "LoRA. Set it on the Dataset step."
)


def validation_text(draft: dict[str, Any]) -> str:
    """'Validation: 2 held-out images, every 10 steps and at each save' while validation is on
    (held-out images or a folder of its own), else the empty string."""
    section = draft.get("validation") or {}
    holdout, folder, every = (
        section.get("holdout"),
        section.get("folder_path"),
        section.get("every"),
    )
    if isinstance(holdout, int) and holdout > 0:
        images = f"{holdout:,} held-out image{'s' if holdout != 1 else ''}"
    elif folder:
        images = f"the images of {code(folder)}"
    else:
        return ""
    when = (
        f"every {every:,} step{'s' if every != 1 else ''} and at each save"
        if isinstance(every, int) and every > 0
        else "at each save and at the end"
    )
    return f"Validation: {images}, {when}"


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
