"""Home's "Build demo models and dataset" button: it builds, then reruns the page, so the word of
success is carried over the rerun in the session (the button itself is gone by then: all built)."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from trainer.demo.tiny import DEMO_DATASET, build_all
from ui.text import code

BUILT_NOTICE = "home:demo_built"  # the success message, shown once on the next run


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
