"""How every page is reached through the router (``streamlit_app.py``), even on a fresh server.

The problem: Streamlit decides once per server process, when the first session starts, whether the
app uses its old "``pages/`` directory" mode: it does whenever a ``pages/`` folder sits next to the
main script, and ours does. In that mode Streamlit lists the files of ``pages/`` itself and runs
the one the URL names *instead of* the main script. Only a call of ``st.navigation`` (made by the
router) switches the mode off, for the whole process. So the first visitor of a fresh server who
opens ``/wizard`` directly gets ``pages/wizard.py`` alone: no router, hence no page config, no
draft initialisation, no sidebar, and a navigation built from file names.

Streamlit 1.67 has no supported switch for this (``client.showSidebarNavigation`` only hides the
old navigation; the router never runs in that mode, so nothing it calls can help). Hence the one
workaround below, which every page calls first: in the old mode it switches the mode off, as
``st.navigation`` would, runs the router in its place (the router then runs the page, now in the
new mode) and ends the page's own run. It runs the router in the same script run rather than
asking for a rerun, so a click that started this run is not lost (``AppTest`` starts every run in
the old mode, so there every run takes this path). It touches Streamlit internals
(``PagesManager.uses_pages_directory``); ``tests/test_ui_navigation.py`` fails the day an upgrade
changes them, and shows whether the workaround is still needed.
"""

from __future__ import annotations

import runpy
from pathlib import Path

import streamlit as st
from streamlit.runtime.pages_manager import PagesManager

ROUTER = Path(__file__).resolve().parent.parent / "streamlit_app.py"


def leave_legacy_pages_mode() -> None:
    """Call first in every page script: if Streamlit ran the page alone, run the router instead.

    A no-op once the router has called ``st.navigation`` in this process (every later run).
    """
    if not PagesManager.uses_pages_directory:
        return
    PagesManager.uses_pages_directory = False  # what st.navigation itself does
    runpy.run_path(str(ROUTER))  # the router runs this page again, in the new mode
    st.stop()  # and the page's run on its own ends here
