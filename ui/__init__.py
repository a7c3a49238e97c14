"""Streamlit helpers shared by the pages (see DESIGN.md: pages stay thin, logic lives here)."""

from __future__ import annotations


def _leave_pages_directory_mode() -> None:
    """Make the first visit of a fresh server run the router, whatever URL it opens.

    Streamlit starts every server process in its old "pages/ directory" mode because our page
    files live in ``pages/``; only a run of ``streamlit_app.py`` (which calls ``st.navigation``)
    switches it off. Until then a visitor who opens ``/wizard`` directly gets that page alone:
    no router, no sidebar, no draft initialisation. Every page imports ``ui``, so on that first
    run we switch the mode off here and rerun: the rerun goes through ``streamlit_app.py``.
    """
    try:
        from streamlit.runtime.pages_manager import PagesManager
        from streamlit.runtime.scriptrunner_utils.script_run_context import get_script_run_ctx
    except ImportError:  # pragma: no cover - a Streamlit without these internals
        return
    if PagesManager.uses_pages_directory and get_script_run_ctx() is not None:
        import streamlit as st

        PagesManager.uses_pages_directory = False
        st.rerun()


_leave_pages_directory_mode()


def _fail_fast_on_a_down_tracking_server() -> None:
    from trainer.settings import use_studio_http_defaults

    use_studio_http_defaults()


_fail_fast_on_a_down_tracking_server()
