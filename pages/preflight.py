"""Preflight: check the machine, answer a few questions, get a draft full of recommended values.

Detecting the hardware can take seconds: the questions and the Confirm button are drawn first,
under a running "Detecting your hardware…" status that the detected values then replace.
"""

from __future__ import annotations

import streamlit as st

from ui import state
from ui.boundary import advisor_boundary
from ui.navigation import leave_legacy_pages_mode
from ui.preflight import (
    confirm,
    detected_hardware,
    render_hardware_check,
    render_hub_status,
    render_intent,
    render_overrides,
    show_waiting,
)
from ui.preflight_why import render_done

leave_legacy_pages_mode()  # a fresh server opened at this page's URL: see ui/navigation.py

st.title("Preflight")
st.write(
    "Before the wizard: check what the studio found on this machine, then say what you are "
    "training. The advisor fills the wizard with recommended values, each marked "
    ":material/lightbulb: with its reason. You can change every one of them later."
)

st.subheader("1 · Your hardware")
hardware_area = st.container()  # filled once detection is done, below the questions' code
waiting = show_waiting(hardware_area, "Detecting your hardware…")

st.subheader("2 · What you are training")
answers = render_intent()

if state.meta().get("preflight_done") and st.session_state.get("pf:applied") is None:
    st.caption(
        ":material/info: You confirmed preflight before. Confirming again replaces the "
        "recommended values (you can undo it in the wizard)."
    )
clicked = st.button(
    "Confirm and fill the wizard", type="primary", key="pf:confirm", icon=":material/done:"
)

with hardware_area:
    hw = detected_hardware()
    waiting.empty()
    render_hardware_check(hw)
    waiting = show_waiting(st.container(), "Checking the Hugging Face Hub…")
    render_hub_status()
    waiting.empty()
    overrides = render_overrides(hw)

if clicked:  # handled after detection: the recommendations need the hardware and overrides
    with advisor_boundary("recommending values for your answers") as recommending:
        recs = confirm(answers, overrides)
    if not recommending.failed:
        st.session_state["pf:applied"] = len(recs)
        st.rerun()

applied = st.session_state.get("pf:applied")
if applied is not None:
    render_done(applied)
    st.page_link("pages/wizard.py", label="Open the wizard", icon=":material/arrow_forward:")
