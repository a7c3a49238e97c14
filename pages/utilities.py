"""Utilities: inspect, resize, convert and merge LoRA files; X/Y test grids."""

from __future__ import annotations

import streamlit as st

from trainer.settings import load_settings
from ui.lora_utilities import (
    pick_file,
    render_convert,
    render_inspect,
    render_merge,
    render_resize,
)
from ui.navigation import leave_legacy_pages_mode
from ui.xy_grid_panel import render_grid

leave_legacy_pages_mode()  # a fresh server opened at this page's URL: see ui/navigation.py

settings = load_settings()
home = settings.home
st.title("LoRA utilities")
st.caption(
    "The same tools as `python -m trainer lora inspect | resize | convert | merge`. What they make"
    " is saved beside the chosen LoRA in an `outputs` folder (never among a run's checkpoints,"
    " which the trainer rotates), or in the studio home's `outputs` folder for a LoRA kept"
    " elsewhere. Saving stays inside the studio home, and replaces an existing file only when you"
    " tick “Replace the existing file”."
)
path = pick_file(home, "LoRA file", "lu:main")
if path is None:
    st.info("Choose a LoRA file (.safetensors, or a diffusers LoRA folder).")
    st.stop()
if not render_inspect(path):
    st.stop()  # not a LoRA: the message says why; nothing below could use it
resize, convert, merge, grid = st.tabs(["Resize", "Convert", "Merge", "X/Y grid"])
with resize:
    render_resize(path, home)
with convert:
    render_convert(path, home)
with merge:
    render_merge(path, home)
with grid:
    render_grid(path, home, settings.tracking_uri)
