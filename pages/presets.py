"""Presets: browse built-in and your own presets, load one into the wizard, save, import, export."""

from __future__ import annotations

import streamlit as st

from trainer.settings import load_settings
from ui import presets
from ui.navigation import leave_legacy_pages_mode

leave_legacy_pages_mode()  # a fresh server opened at this page's URL: see ui/navigation.py

settings = load_settings()
st.title("Presets")
presets.render_flash()
presets.render_browser(settings)
st.subheader("Save the current draft")
presets.render_save_draft(settings)
st.subheader("Import")
presets.render_import(settings)
st.subheader("From another trainer")
presets.render_import_other()
