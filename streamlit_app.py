"""LoRA Studio: the router and the frame. Run with `make run` (or `streamlit run streamlit_app.py`)."""

from __future__ import annotations

import streamlit as st

st.set_page_config(page_title="LoRA Studio", page_icon="🎛️", layout="wide")

PAGES = [
    st.Page("pages/home.py", title="Home", icon="🏠", default=True),
]

st.navigation(PAGES).run()
