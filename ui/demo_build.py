"""Home's demo buttons. "Build demo models and dataset" builds, then reruns the page, so the word
of success is carried over the rerun in the session (the button itself is gone by then: all
built). "Train the demo now" fills the draft with preflight's defaults for the demo; once a
draft exists it becomes "Start over with the demo", which replaces the draft after a
confirmation: a beginner whose real-model draft went wrong gets back to a run that works in one
place, and one undo brings the replaced draft back."""

from __future__ import annotations

import copy
from pathlib import Path

import streamlit as st

from trainer.arch.single_file import ARCH_NAMES
from trainer.demo.tiny import DEMO_ARCHS, DEMO_DATASET, build_all, ensure_demo
from ui import state
from ui.boundary import advisor_boundary
from ui.preflight import confirm
from ui.status import REVIEW_PAGE
from ui.text import code

BUILT_NOTICE = "home:demo_built"  # the success message, shown once on the next run
CONFIRMING = "home:demo_confirming"  # "Start over with the demo" waits for a yes
DEMO_HELP = (
    "Accepts preflight's defaults for the tiny demo model and demo dataset, then opens Review & "
    "launch: one more click starts the run."
)
START_OVER = "Start over with the demo"


def built_message(built: dict[str, Path]) -> str:
    """'**Built:** the demo models sd15, sdxl, flux in `<home>/models/demo` and the demo dataset
    in `<home>/datasets/demo`.'"""
    models = {name: path for name, path in built.items() if name != DEMO_DATASET}
    parents = {path.parent for path in models.values()}
    if len(parents) == 1:
        where = f"in {code(parents.pop())}"
    else:  # not one folder (never so far): each its own
        where = "(" + ", ".join(f"{name} in {code(path)}" for name, path in models.items()) + ")"
    text = f"**Built:** the demo models {', '.join(models)} {where}"
    if DEMO_DATASET in built:
        text += f" and the demo dataset in {code(built[DEMO_DATASET])}"
    return text + "."


def render_build_button(home: Path) -> None:
    """The button; after a build, the page runs again and says what was built where."""
    if st.button("Build demo models and dataset", key="build_demo"):
        with st.spinner("Building tiny SD1.5, SDXL and Flux pipelines and a demo dataset..."):
            built = build_all(home)
        st.session_state[BUILT_NOTICE] = built_message(built)
        st.rerun()


def render_built_notice() -> None:
    message = st.session_state.pop(BUILT_NOTICE, None)
    if message:
        st.success(message, icon=":material/check_circle:")


def demo_arch() -> str:
    """The draft's architecture when it has a demo model, else SD1.5 (a broken draft's)."""
    arch = str(state.get_value("model.arch", "sd15"))
    return arch if arch in DEMO_ARCHS else "sd15"


def train_demo(home: Path, fresh: bool = False) -> None:
    """Preflight's defaults on the tiny demo model and dataset, then Review & launch: a first run
    is one more click away. ``fresh``: start from a new draft rather than over the current one,
    as one undo step (the wizard's "Undo last change" brings the old draft back)."""
    arch = demo_arch()
    with st.spinner("Preparing the tiny demo model and dataset..."):
        ensure_demo(home, arch)
        ensure_demo(home, "dataset")
    kept = list(st.session_state.get(state.HISTORY) or [])
    replaced = copy.deepcopy(state.draft())
    if fresh:
        state.replace_draft(state.default_draft())  # nothing of a broken draft stays behind
    answers = {**state.meta()["intent"], "arch": arch, "demo": True}
    with advisor_boundary("recommending values for the demo") as recommending:
        confirm(answers, {})
    if fresh:  # the replaced draft is the one step to undo, not the demo's halfway states
        st.session_state[state.HISTORY] = [*kept, replaced][-state.UNDO_DEPTH :]
    if not recommending.failed:
        st.switch_page(REVIEW_PAGE)


def render_demo_button(home: Path, draft_exists: bool) -> None:
    """Train the demo now; with a draft, Start over with the demo, which asks first."""
    if not draft_exists:
        if st.button("Train the demo now", key="home:demo", icon=":material/bolt:", help=DEMO_HELP):
            train_demo(home)
        return
    if st.button(
        START_OVER,
        key="home:demo",
        icon=":material/restart_alt:",
        help=DEMO_HELP + " Replaces your draft; you are asked first.",
    ):
        st.session_state[CONFIRMING] = True


def render_start_over_confirmation(home: Path) -> None:
    """The question "Start over with the demo" asks before it replaces the draft."""
    if not st.session_state.get(CONFIRMING):
        return
    model = str(state.get_value("model.name_or_path") or "") or "no base model yet"
    with st.container(border=True, key="home_demo_confirm"):
        st.warning(
            f"**Replace your draft with the demo?** Your draft (base model {code(model)}) is "
            f"replaced by preflight's defaults for the tiny {ARCH_NAMES[demo_arch()]} demo "
            "model and demo dataset. **Undo last change** in the wizard brings your draft back (while this "
            "browser tab stays open).",
            icon=":material/warning:",
        )
        with st.container(horizontal=True):
            if st.button("Replace my draft with the demo", key="home:demo_yes", type="primary"):
                st.session_state.pop(CONFIRMING, None)
                train_demo(home, fresh=True)
            if st.button("Cancel", key="home:demo_no"):
                st.session_state.pop(CONFIRMING, None)
                st.rerun()
