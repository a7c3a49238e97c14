"""Compare: every run of the store, filtered; pick two or more to see what changed and how it did."""

from __future__ import annotations

import streamlit as st

from trainer.settings import load_settings
from ui import compare
from ui.compare_store import render_refresh
from ui.navigation import leave_legacy_pages_mode
from ui.text import plain_line

leave_legacy_pages_mode()  # a fresh server opened at this page's URL: see ui/navigation.py

settings = load_settings()
st.title("Compare runs")
render_refresh(settings.tracking_uri)

records = compare.load_runs(settings.tracking_uri, compare.version())
if not records:
    st.info("No runs yet. Train a few variants, then compare them here.")
    st.stop()

shown = compare.render_filters(records)
picked = compare.render_table(shown)

with st.expander("Based on your past runs (for the current draft)"):
    compare.render_history(settings.tracking_uri)

if len(picked) < 2:
    st.caption("Pick two or more runs to compare their configs, curves and samples.")
if len(picked) >= 2:
    st.subheader("What changed")
    compare.render_diff(picked)
    st.subheader("Curves")
    compare.render_curves(settings.tracking_uri, picked)
    st.subheader("Samples")
    compare.render_samples(settings.tracking_uri, picked)
    st.subheader("Final artifacts")
    compare.render_artifacts(settings.tracking_uri, picked)
if picked:
    compare.render_mlflow_links(settings, picked)
    st.subheader("Rate, note, reuse")
    labels = compare.run_labels(picked)
    tabs = st.tabs([plain_line(labels[r.run_id]) for r in picked])  # tab labels are markdown
    for tab, rec in zip(tabs, picked, strict=True):
        with tab:
            compare.render_rating(settings, rec)
            compare.render_reuse(settings, rec)
