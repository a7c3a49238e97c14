"""LoRA Studio: the router and the frame. Run with `make run` (or `streamlit run streamlit_app.py`)."""

from __future__ import annotations

import streamlit as st

from trainer.redaction import install_log_redaction
from trainer.settings import use_hub_offline_mode, use_studio_http_defaults
from trainer.startup_gc import freeze_new_imports
from trainer.tracking.connect import use_studio_store_retries
from ui.boundary import page_boundary
from ui.queue_panel import resume_queue
from ui.sidebar import render_active_runs
from ui.state import init_state
from ui.summary import render_sidebar_hardware

install_log_redaction()  # a page's logged traceback keeps no password of a tracking URI
use_studio_http_defaults()  # this process fails fast on a down tracking server (not trainers)
use_studio_store_retries()  # and says within seconds that a SQL store refuses it (wrong password)
use_hub_offline_mode()  # STUDIO_OFFLINE: before anything imports huggingface_hub (read at import)
st.set_page_config(page_title="LoRA Studio", page_icon=":material/tune:", layout="wide")

PAGES = [
    st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("pages/preflight.py", title="Preflight", icon=":material/explore:"),
    st.Page("pages/wizard.py", title="Wizard", icon=":material/auto_fix_high:"),
    st.Page("pages/review.py", title="Review & launch", icon=":material/rocket_launch:"),
    st.Page("pages/monitor.py", title="Monitor", icon=":material/monitoring:"),
    st.Page("pages/compare.py", title="Compare", icon=":material/compare:"),
    st.Page("pages/presets.py", title="Presets", icon=":material/library_books:"),
    st.Page("pages/datasets.py", title="Datasets", icon=":material/photo_library:"),
    st.Page("pages/utilities.py", title="LoRA utilities", icon=":material/build:"),
]

init_state()  # the draft config: created once per session, restored from the autosave
page = st.navigation(PAGES)
render_sidebar_hardware()
render_active_runs()  # the active run: progress and Stop, live while it trains
resume_queue()  # a queue with work and no runner (the studio restarted): start the runner
try:
    with page_boundary(page.title):  # an unexpected error: a plain message, traceback in the log
        page.run()
finally:  # the modules this run imported: out of later garbage collections (trainer.startup_gc)
    freeze_new_imports()
