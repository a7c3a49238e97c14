"""Monitor: watch a run live (phase, progress, loss and LR, samples, log), stop or resume it."""

from __future__ import annotations

import streamlit as st

from trainer.settings import load_settings
from trainer.tracking.records import get_run_record
from ui.compare_actions import render_reuse
from ui.jobs import reconcile_on_load
from ui.monitor import is_active, render_live, render_run_picker
from ui.navigation import leave_legacy_pages_mode
from ui.queue_panel import render_queue

leave_legacy_pages_mode()  # a fresh server opened at this page's URL: see ui/navigation.py

settings = load_settings()
st.title("Monitor")
reconcile_on_load(settings)  # runs whose trainer died are closed, never left "running"
render_queue(settings)  # the training queue: order, start now, cancel (live while it works)

run_id = render_run_picker(settings)
if run_id is None:
    st.info("No runs yet. Set one up in the wizard, check it on the review page and launch it.")
    st.stop()

active = is_active(settings, run_id)
live = st.fragment(render_live, run_every="2s" if active else None)
live(settings, run_id, was_active=active)

with st.expander("Reuse this run"):
    render_reuse(settings, get_run_record(settings.tracking_uri, run_id))
