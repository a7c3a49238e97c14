"""The compare page's reads of the store, cached: the runs, the advisor's view of them, and the
version number that a rating or note bumps so the next render reads the store again."""

from __future__ import annotations

from typing import Any

import streamlit as st

from trainer import tracking
from trainer.tracking import RunRecord

VERSION_KEY = "cmp:version"


@st.cache_data(ttl=30, show_spinner=False)
def load_runs(tracking_uri: str, version: int = 0) -> list[RunRecord]:
    """All runs of the store, newest first (``version`` is bumped when a rating/note changes)."""
    return tracking.list_all_runs(tracking_uri)


@st.cache_resource(ttl=30, show_spinner=False)
def past_runs(tracking_uri: str, version: int = 0) -> list[Any]:
    """The runs as the advisor's ``PastRun``s with their configs parsed once (500 runs: ~0.4 s
    to parse, ~1 ms to recommend from afterwards)."""
    from advisor.runs import as_runs

    runs = as_runs(load_runs(tracking_uri, version))
    for run in runs:
        _ = run.config  # cached_property: parsed here, once
    return runs


def version() -> int:
    return st.session_state.get(VERSION_KEY, 0)


def bump() -> None:
    st.session_state[VERSION_KEY] = version() + 1


def local_history(tracking_uri: str) -> list[Any] | None:
    """The store's runs for the advisor, when the store is a local SQLite file that exists
    (reading it then needs no MLflow import); None otherwise."""
    db = tracking.sqlite_path(tracking_uri)
    if db is None or not db.is_file():
        return None
    return past_runs(tracking_uri, version())
