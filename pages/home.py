"""Home: what the studio is, where to start, where it keeps things, and whether the demo models
are ready."""

from __future__ import annotations

import streamlit as st

from trainer.settings import load_settings
from trainer.tracking.reachability import store_problem
from ui import state
from ui.access import bind_address
from ui.demo_build import (
    render_build_button,
    render_built_notice,
    render_demo_button,
    render_start_over_confirmation,
)
from ui.navigation import leave_legacy_pages_mode
from ui.notify_settings import render_notify_settings
from ui.status import REVIEW_PAGE, start_here, studio_status
from ui.text import code

leave_legacy_pages_mode()  # a fresh server opened at this page's URL: see ui/navigation.py

settings = load_settings()
status = studio_status(settings, bind_address())

st.title("LoRA Studio")
st.write(
    "Train LoRA adapters for SD1.5, SDXL and Flux with a guide at every step: hardware check, "
    "a wizard that explains each setting, honest predictions, a live monitor and run comparison."
)


preflight_done = bool(state.meta().get("preflight_done"))
step = start_here(preflight_done)
with st.container(border=True, key="home_start_here"):
    st.subheader(":material/flag: Start here")
    st.write(step.why)
    with st.container(horizontal=True, vertical_alignment="center"):
        if st.button(step.label, type="primary", key="home:start"):
            st.switch_page(step.page)
        # with a draft it asks first: it replaces the draft (one undo brings it back)
        render_demo_button(settings.home, draft_exists=preflight_done)
        if preflight_done:
            st.page_link(REVIEW_PAGE, label="Review and launch", icon=":material/rocket_launch:")
    render_start_over_confirmation(settings.home)

st.subheader("Studio status")
left, right = st.columns(2)
with left:
    st.markdown(f"**Studio home**  \n{code(status.home)}")
    kind = "local SQLite store" if status.local_store else "tracking server"
    st.markdown(f"**MLflow tracking** ({kind})  \n{code(status.tracking_uri)}")
    if status.local_store and not status.store_exists:
        st.caption("The store is created with your first run.")
    if not status.local_store and (problem := store_problem(settings.tracking_uri)):
        st.error(problem, icon=":material/cloud_off:")  # redacted URI; see ui/store_errors
with right:
    st.markdown("**Demo models** (tiny: train on a CPU in a few minutes)")
    for name, built in status.demo.items():
        mark = ":material/check_circle: ready" if built else ":material/pending: not built yet"
        st.markdown(f"- {name}: {mark}")
    render_built_notice()  # after a build: what was built, and where
    if not all(status.demo.values()):
        render_build_button(settings.home)

render_notify_settings(settings)  # where a message goes when a run ends

if status.public_bind:
    where = code(status.bind_address) if status.bind_address else "every network interface"
    roots = ", ".join(code(root) for root in settings.read_roots)
    st.warning(
        f"The studio is served on {where}, which other machines can reach. Serve it on "
        "127.0.0.1 (`make run` without STUDIO_HOST) unless you mean to share it. While it is "
        f"shared, its pages read files only under {roots} (STUDIO_ALLOWED_FOLDERS adds folders)."
    )
