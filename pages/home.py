"""Home: what the studio is, where it keeps things, and whether the demo models are ready."""

from __future__ import annotations

import streamlit as st

from trainer.demo.tiny import build_all
from trainer.settings import load_settings
from ui.navigation import leave_legacy_pages_mode
from ui.status import studio_status

leave_legacy_pages_mode()  # a fresh server opened at this page's URL: see ui/navigation.py

settings = load_settings()
status = studio_status(settings)

st.title("LoRA Studio")
st.write(
    "Train LoRA adapters for SD1.5, SDXL and Flux with a guide at every step: hardware check, "
    "a wizard that explains each setting, honest predictions, a live monitor and run comparison."
)

st.subheader("Studio status")
left, right = st.columns(2)
with left:
    st.markdown(f"**Studio home**  \n`{status.home}`")
    kind = "local SQLite store" if status.local_store else "tracking server"
    st.markdown(f"**MLflow tracking** ({kind})  \n`{status.tracking_uri}`")
    if status.local_store and not status.store_exists:
        st.caption("The store is created with your first run.")
with right:
    st.markdown("**Demo models** (tiny, train on a CPU in about a minute)")
    for name, built in status.demo.items():
        mark = ":material/check_circle: ready" if built else ":material/pending: not built yet"
        st.markdown(f"- {name}: {mark}")
    if not all(status.demo.values()) and st.button(
        "Build demo models and dataset", key="build_demo"
    ):
        with st.spinner("Building tiny SD1.5, SDXL and Flux pipelines and a demo dataset..."):
            build_all(settings.home)
        st.rerun()

if status.public_bind:
    st.warning(
        f"The studio is bound to {settings.host}, which other machines can reach. "
        "Set STUDIO_HOST=127.0.0.1 unless you mean to share it."
    )
