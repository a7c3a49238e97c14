"""The one error boundary between the pages and the advisor.

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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import streamlit as st

log = logging.getLogger(__name__)


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
