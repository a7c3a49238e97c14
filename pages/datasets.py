"""Datasets: create from uploads or a folder, analyse, remove near-duplicates, edit captions."""

from __future__ import annotations

import streamlit as st

from trainer.settings import load_settings
from ui.dataset_captions import render_autocaption, render_captions
from ui.dataset_handoff import render_train_handoff
from ui.dataset_manager import (
    pick_dataset,
    render_analysis,
    render_broken,
    render_create,
    render_duplicates,
)
from ui.navigation import leave_legacy_pages_mode
from ui.text import code

leave_legacy_pages_mode()  # a fresh server opened at this page's URL: see ui/navigation.py

settings = load_settings()
root = settings.datasets_dir
st.title("Datasets")
st.caption(f"Datasets live in {code(root)}; removed images move to .removed/ and can be restored.")
render_create(root)
folder = pick_dataset(root)
if folder is None:
    st.stop()
render_broken(folder)  # images that cannot be decoded: listed and removable, never a crash
render_train_handoff(folder)
analysis, duplicates, captions = st.tabs(["Analysis", "Near-duplicates", "Captions"])
with analysis:
    render_analysis(folder)
with duplicates:
    render_duplicates(folder)
with captions:
    render_captions(folder)
    render_autocaption(folder, settings.home)
