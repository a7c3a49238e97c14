"""What a page shows when the tracking store does not answer: ``store_boundary`` turns
``StoreUnreachable`` (raised within seconds by ``trainer.tracking.connect.mlflow_client``) into
its message, which names the store without its credentials and says what to do, and stops the
page there; anything else is left to the page's error boundary."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import streamlit as st

from trainer.tracking.connect import StoreUnreachable
from ui.text import plain


@contextmanager
def store_boundary() -> Iterator[None]:
    """Run the block; when the store does not answer, show why and stop this run of the page
    (or of the fragment)."""
    try:
        yield
    except StoreUnreachable as err:
        st.error(plain(err), icon=":material/cloud_off:")  # it quotes the URI and the driver
        st.stop()
