"""The error boundaries: one around every page, one between the pages and the advisor.

``page_boundary`` (the router wraps each page's run in it): an exception no page handled becomes
a short message on the page, and its traceback goes to the studio's log (the server's console,
through ``logging``), never to the browser, which could show server paths and the code. Streamlit's
own display of uncaught errors is switched off too (``client.showErrorDetails = "none"`` in
``.streamlit/config.toml``), for what runs outside a page (fragments, the sidebar).

The UI calls the advisor plainly; a bug there must neither take a whole page down nor be hidden
behind a guessed answer. Where the UI shows what the advisor said, the call runs inside
``advisor_boundary``: an exception becomes a short ``st.error`` in place of that part, its
traceback goes to the studio's log, and the rest of the page renders.

    with advisor_boundary("predicting this run") as outcome:
        prediction = predict(cfg, hw)
    if outcome.failed:
        ...  # nothing to show for this part; the message is already on the page
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import streamlit as st
from streamlit.errors import FragmentHandledException

log = logging.getLogger(__name__)
# "raise": after the message, let a page's error through to Streamlit as well, so a test suite's
# "no exception on the page" checks still see page bugs (the browser still gets no details).
PAGE_ERRORS_VAR = "STUDIO_PAGE_ERRORS"


@dataclass
class Outcome:
    failed: bool = False


@contextmanager
def advisor_boundary(doing: str) -> Iterator[Outcome]:
    """Run the block; on an exception show "The advisor failed while <doing>", log the traceback
    and carry on after the block (``Outcome.failed`` tells the caller)."""
    outcome = Outcome()
    try:
        yield outcome
    except Exception:
        outcome.failed = True
        log.exception("The advisor failed while %s", doing)
        st.error(
            f"The advisor failed while {doing}. This part is left out; the details are in the "
            "studio's log.",
            icon=":material/error:",
        )


@contextmanager
def page_boundary(page: str) -> Iterator[None]:
    """Run a page; on an exception show a plain message (no traceback, no exception text: it may
    hold server paths) and log the traceback. ``st.stop``/``st.rerun`` pass through (they are not
    ``Exception``s), and so does an error a fragment already reported."""
    try:
        yield
    except FragmentHandledException:
        raise
    except Exception:
        log.exception("The %s page failed", page)
        st.error(
            f"Something went wrong on the {page} page, so it stopped here. The details are in "
            "the studio's log (the console it was started from); reload the page or open another "
            "one to go on.",
            icon=":material/error:",
        )
        if os.environ.get(PAGE_ERRORS_VAR) == "raise":
            raise  # tests and development: the error reaches Streamlit (AppTest's at.exception)
