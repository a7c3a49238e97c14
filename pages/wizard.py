"""Wizard: the 12 steps, rendered from the config schema, with the advisor beside each step."""

from __future__ import annotations

import streamlit as st

from trainer.config.fields import WIZARD_STEPS
from ui import state
from ui.advisor_column import render_advisor_column
from ui.context import studio_context
from ui.navigation import leave_legacy_pages_mode
from ui.step_body import render_step_fields
from ui.summary import render_summary_header
from ui.text import plain
from ui.wizard import (
    render_dataset_sources,
    render_model_details,
    render_model_source,
    render_navigation,
    render_prev_next,
)

leave_legacy_pages_mode()  # a fresh server opened at this page's URL: see ui/navigation.py

st.title("Wizard")
notice = st.session_state.pop(state.NOTICE, None)
if notice:
    st.info(plain(notice), icon=":material/restore:")  # it may quote the broken file
if not state.meta().get("preflight_done"):
    st.info(
        "**Tip:** answer the preflight questions first, and the advisor fills in recommended "
        "values for your hardware and goal.",
        icon=":material/lightbulb:",
    )
    st.page_link("pages/preflight.py", label="Go to preflight", icon=":material/arrow_forward:")

context = studio_context()
render_summary_header(context)
step = render_navigation(context)
title, description = WIZARD_STEPS[step]

main, side = st.columns([2.2, 1], gap="large")
with main:
    st.header(title)
    st.caption(description)
    if step == "model":
        render_model_source()
    if step == "dataset":
        render_dataset_sources()
    render_step_fields(step, show_expert=bool(state.meta().get("show_expert")))
    if step == "model":
        render_model_details(context)
    st.divider()
    render_prev_next(step)
with side:
    render_advisor_column(step, studio_context())
