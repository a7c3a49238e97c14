"""Monitor: watch a run live (phase, progress, loss and LR, samples, log), stop or resume it."""

from __future__ import annotations

import streamlit as st

from trainer.settings import load_settings
from ui.jobs import reconcile_on_load
from ui.monitor import is_active, render_live, render_run_picker

settings = load_settings()
st.title("Monitor")
reconcile_on_load(settings)  # runs whose trainer died are closed, never left "running"

run_id = render_run_picker(settings)
if run_id is None:
    st.info("No runs yet. Set one up in the wizard, check it on the review page and launch it.")
    st.stop()

active = is_active(settings, run_id)
live = st.fragment(render_live, run_every="2s" if active else None)
live(settings, run_id, was_active=active)

with st.expander("Reuse this run"):
    from trainer.tracking.store import get_run_record
    from ui.compare import render_reuse

    render_reuse(settings, get_run_record(settings.tracking_uri, run_id))
