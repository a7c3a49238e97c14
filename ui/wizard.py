"""The wizard's frame: step navigation, the expert switch, undo, and the two steps with extra
panels (where the model comes from; which images, and what is in them).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import streamlit as st

from advisor.findings import count_severities
from advisor.model_facts import HUB, ModelSource
from trainer.config.fields import WIZARD_STEPS
from trainer.models.hub import format_bytes
from ui import state
from ui.access import checked_path, refusal
from ui.advice import PLURALS
from ui.context import StudioContext, current_model_facts
from ui.datasets import analyse, dataset_folder, draft_numbers, render_report
from ui.model_panel import render_model_card, render_model_panel
from ui.model_status import model_facts
from ui.text import code, plain
from ui.widgets import ARCH_LABELS, applies, step_fields

STEPS = list(WIZARD_STEPS)
STEP_KEY = "wiz:step"
REVIEW_PAGE = "pages/review.py"
_STEP_SHADOW = "_shadow:wiz:step"
_LABEL_SHADOW = "_shadow:wiz:step_label"  # the chosen step's label as the browser was last sent it
HF_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".bin", ".sft")


# ----------------------------------------------------------------------------------- navigation
def current_step() -> str:
    step = state.meta().get("step", STEPS[0])
    return step if step in STEPS else STEPS[0]


def go_to(step: str) -> None:
    state.set_meta("step", step)


def step_of(value: Any) -> str | None:
    """The step a picker value names. Streamlit sends a select box's value as its *label*, and
    a step's label changes with its warnings; a label from before the change names no option,
    so it is read by its number ("10 · Sampling" -> sampling)."""
    if value in STEPS:
        return value
    found = re.match(r"\s*(\d+) ·", str(value or ""))
    number = int(found.group(1)) if found else 0
    return STEPS[number - 1] if 1 <= number <= len(STEPS) else None


def _on_pick() -> None:
    step = step_of(st.session_state[STEP_KEY]) or current_step()
    st.session_state[STEP_KEY] = step
    go_to(step)
    st.session_state[_STEP_SHADOW] = step


def step_label(step: str, context: StudioContext) -> str:
    title = WIZARD_STEPS[step][0]
    number = STEPS.index(step) + 1
    arch = state.get_value("model.arch", "sd15")
    if not any(applies(f, arch) for f in step_fields(step)):
        return f"{number} · {title} (not for {ARCH_LABELS[arch]})"
    counts = count_severities(context.findings_for(set(step_fields(step))))
    # Only what needs attention is counted: suggestions are optional, information is fine.
    marks = "".join(f" · {counts[s]} {PLURALS[s]}" for s in ("error", "warning") if counts[s])
    return f"{number} · {title}{marks}"


def render_navigation(context: StudioContext) -> str:
    """Step picker, progress, expert switch and undo; returns the step to show."""
    step = current_step()
    ss = st.session_state
    labels = {s: step_label(s, context) for s in STEPS}  # format_func must not read state
    # The browser shows the chosen step by the label it was last *sent*, and Streamlit sends a
    # select box's value only when the script sets it: when an edit changes that label (a warning
    # more or fewer), set it again, or the picker shows the counts from before the edit.
    stale = ss.get(_LABEL_SHADOW) != labels[step]
    if stale or STEP_KEY not in ss or ss.get(_STEP_SHADOW) != step or ss[STEP_KEY] not in STEPS:
        ss[STEP_KEY] = step
        ss[_STEP_SHADOW] = step
        ss[_LABEL_SHADOW] = labels[step]
    left, mid, right = st.columns([3, 1.3, 1], vertical_alignment="bottom")
    left.selectbox(
        "Wizard step",
        STEPS,
        key=STEP_KEY,
        format_func=labels.__getitem__,
        on_change=_on_pick,
    )
    expert = mid.toggle(
        "Show expert settings",
        value=bool(state.meta().get("show_expert")),
        key="wiz:expert",
        help="Expert settings are rarely needed; everything the trainer supports is there.",
    )
    if expert != bool(state.meta().get("show_expert")):
        state.set_meta("show_expert", expert)
    right.button(
        "Undo last change",
        key="wiz:undo",
        icon=":material/undo:",
        on_click=state.undo,
        disabled=not st.session_state.get(state.HISTORY),
    )
    position = STEPS.index(step) + 1
    st.progress(position / len(STEPS), text=f"Step {position} of {len(STEPS)}")
    return step


def render_prev_next(step: str) -> None:
    index = STEPS.index(step)
    with st.container(horizontal=True, key="wiz_prev_next"):
        if index > 0:
            st.button(
                f"← {WIZARD_STEPS[STEPS[index - 1]][0]}",
                key="wiz:prev",
                on_click=go_to,
                args=(STEPS[index - 1],),
            )
        if index < len(STEPS) - 1:
            st.button(
                f"{WIZARD_STEPS[STEPS[index + 1]][0]} →",
                key="wiz:next",
                type="primary",
                on_click=go_to,
                args=(STEPS[index + 1],),
            )
        elif st.button(
            "Review and launch →",
            key="wiz:review",
            type="primary",
            help="Check everything once more, then launch (Launch is at the top of that page).",
        ):
            st.switch_page(REVIEW_PAGE)


# ---------------------------------------------------------------------------------- model step
OK, WARN = ":material/check_circle:", ":material/warning:"
EMPTY_REF_HINT = {
    "demo": "",
    "hub": "Type a Hugging Face id below, e.g. `stabilityai/stable-diffusion-xl-base-1.0`.",
    "folder": "Type the path of a diffusers folder below (the one with model_index.json).",
    "file": "Type the path of a .safetensors checkpoint below.",
}
SOURCES = {
    "demo": "Demo model (tiny, CPU)",
    "hub": "Hugging Face id",
    "folder": "Local diffusers folder",
    "file": "Single-file checkpoint",
}


def model_source(ref: str, chosen: str | None = None) -> str:
    """Where ``ref`` comes from: demo, file, folder or hub. A relative path such as
    ``models/sd15`` looks like a Hub id; the source the user picked (``chosen``) decides."""
    if ref.startswith("demo:"):
        return "demo"
    if ref.lower().endswith(CHECKPOINT_SUFFIXES):
        return "file"
    if ref.startswith(("/", ".", "~")):
        return "folder"
    # served to a network, a path outside the allowed roots is not looked at (not even whether
    # it exists: the source picked would tell)
    if refusal(ref) is None and Path(ref).expanduser().exists():
        return "folder"
    return chosen if chosen in ("folder", "file") else "hub"


def _pick_source() -> None:
    source = st.session_state["wiz:model_source"]
    st.session_state["_shadow:wiz:model_source"] = source
    ref = str(state.get_value("model.name_or_path") or "")
    arch = state.get_value("model.arch", "sd15")
    state.choose_model_source(source)
    if source == "demo":
        state.set_value("model.name_or_path", f"demo:{arch}")
    elif ref and model_source(ref, source) != source:  # e.g. an absolute path, then "Hub id"
        state.set_value("model.name_or_path", "")


def render_model_source() -> None:
    ref = str(state.get_value("model.name_or_path") or "")
    ss = st.session_state
    chosen = state.chosen_model_source()
    source = model_source(ref, chosen) if ref else (chosen or "hub")
    if ss.get("wiz:model_source") != source or ss.get("_shadow:wiz:model_source") != source:
        ss["wiz:model_source"] = ss["_shadow:wiz:model_source"] = source
    st.segmented_control(
        "Where does the base model come from?",
        list(SOURCES),
        format_func=SOURCES.get,
        key="wiz:model_source",
        required=True,
        on_change=_pick_source,
    )
    if not ref:
        st.caption(EMPTY_REF_HINT[source])
        return
    icon, text = check_model_ref(ref, state.get_value("model.arch", "sd15"))
    st.markdown(f"{icon} {text}")


def check_model_ref(ref: str, arch: str = "sd15") -> tuple[str, str]:
    """(icon, words) about a model reference: found and ready, or what is wrong and the fix."""
    kind = model_source(ref, state.chosen_model_source())
    if kind == "demo":
        return OK, "Tiny demo model: built in the studio home on first use; no download."
    if kind == "hub" and not HF_ID.match(ref):
        return WARN, "**Not a Hugging Face id:** write it as `owner/name`."
    facts = current_model_facts()
    if facts is None or facts.ref != ref.strip():
        facts = model_facts(ref, arch, expect=kind)
    if facts.kind == HUB:
        return hub_ref_status(facts)
    if facts.problem:  # it quotes the path as typed; served to a network, maybe the refusal
        return ":material/error:", plain(facts.problem)
    size = format_bytes(facts.total_bytes)
    warning = f" {plain(facts.warning)}" if facts.warning else ""
    return OK, f"Found ({size}): {plain(facts.note)}.{warning}"


def hub_ref_status(facts: ModelSource) -> tuple[str, str]:
    """One line about a Hub id: what stands between it and a run (the panel below has more)."""
    total = format_bytes(facts.total_bytes)
    if facts.problem:
        return ":material/error:", plain(facts.problem)
    if not facts.checked:
        return ":material/cloud_off:", "The Hub was not asked (offline); the cached copy is used."
    if facts.gated and facts.access is False and facts.needs_download:
        return ":material/lock:", (
            "**Gated:** sign in below and accept its licence on the model page, then download it."
        )
    if facts.needs_download:
        return ":material/download:", (
            f"On the Hugging Face Hub: **{format_bytes(facts.download_bytes)} to download** "
            f"(of {total}) before a run can start."
        )
    return ":material/check_circle:", f"On the Hugging Face Hub and cached ({total}): ready."


def render_model_details(context: StudioContext) -> None:
    """Below the model fields: the Hub panel for a Hub id, then the model card."""
    arch = str(state.get_value("model.arch", "sd15"))
    facts = context.model
    if facts is not None and facts.kind == HUB:
        render_model_panel(facts.ref, arch, key="wiz")
    render_model_card(arch, context)


# -------------------------------------------------------------------------------- dataset step
def render_dataset_sources() -> None:
    """Per dataset: demo or folder, add/remove, and the analysis of what is in it."""
    datasets = state.get_value("datasets") or []
    for index in range(len(datasets)):
        folder = str(state.get_value(f"datasets.{index}.folder_path") or "")
        with st.container(border=True, key=f"dataset_box_{index}"):
            head, tail = st.columns([4, 1], vertical_alignment="center")
            head.markdown(
                f"**Dataset {index + 1}**"
                + (" (regularisation)" if datasets[index].get("is_reg") else "")
            )
            if len(datasets) > 1:
                tail.button(
                    "Remove",
                    key=f"wiz:ds_remove:{index}",
                    icon=":material/delete:",
                    on_click=state.remove_dataset,
                    args=(index,),
                )
            key = f"wiz:ds_demo:{index}"
            is_demo = folder == "demo:dataset"
            if (
                st.session_state.get(key) != is_demo
                or st.session_state.get(f"_shadow:{key}") != is_demo
            ):
                st.session_state[key] = st.session_state[f"_shadow:{key}"] = is_demo
            st.toggle(
                "Use the generated demo dataset",
                key=key,
                on_change=_toggle_demo_dataset,
                args=(index,),
            )
            render_dataset_analysis(index)
    st.button(
        "Add another dataset", key="wiz:ds_add", icon=":material/add:", on_click=state.add_dataset
    )


def _toggle_demo_dataset(index: int) -> None:
    on = st.session_state[f"wiz:ds_demo:{index}"]
    st.session_state[f"_shadow:wiz:ds_demo:{index}"] = on
    state.use_dataset_folder(index, state.DEMO_DATASET if on else "")


def render_dataset_analysis(index: int) -> None:
    ds = state.get_value(f"datasets.{index}") or {}
    ref = str(ds.get("folder_path") or "")
    if not ref:
        st.caption("Type the folder of your images below (captions in .txt files beside them).")
        return
    if ref != "demo:dataset":
        # served to a network: a folder outside the allowed roots is refused before it is
        # looked at, so the page tells nothing about the server's other folders
        folder = checked_path(ref)
        if folder is None:
            return
        if not folder.is_dir():
            st.markdown(f":material/warning: **Folder not found:** {code(ref)}")
            return
    key = f"wiz:analyse:{index}"
    ready = "trainer.data.scanning" in sys.modules  # the advisor has scanned: analyse always
    if not ready and not st.button("Analyse dataset", key=key, icon=":material/analytics:"):
        st.caption("Analyse to see image count, sizes, captions and steps per epoch.")
        return
    with st.spinner("Reading the images..."):
        report = analyse(dataset_folder(ref), ds, draft_numbers())  # as the Datasets page does
    render_report(report)
