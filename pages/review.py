"""Review: check everything once more, fix what is wrong, save the YAML, and launch."""

from __future__ import annotations

import streamlit as st

from ui.advisor_column import render_predictions
from ui.context import studio_context
from ui.navigation import leave_legacy_pages_mode
from ui.review import (
    render_comparison,
    render_editable_summary,
    render_launch,
    render_validation,
    render_yaml,
)
from ui.summary import render_summary_header

leave_legacy_pages_mode()  # a fresh server opened at this page's URL: see ui/navigation.py

st.title("Review & launch")
context = studio_context()
render_summary_header(context)
with st.container(key="rv_launch_top"):  # Launch without scrolling past every setting
    render_launch(context, place="top")

st.subheader("Validation")
render_validation(context)

st.subheader("Your values and the advisor's")
render_comparison(context)

st.subheader("Predictions")
render_predictions(context)

st.subheader("Settings")
st.caption("The main settings of each step, editable here; the wizard has all of them.")
render_editable_summary()
st.page_link("pages/wizard.py", label="Back to the wizard", icon=":material/arrow_back:")

st.subheader("Config file")
render_yaml(context)

st.subheader("Launch")
render_launch(context, place="bottom")
