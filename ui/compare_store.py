"""The compare page's reads of the store, cached: the runs, the advisor's view of them, and the
version number that a rating or note bumps so the next render reads the store again.

A local SQLite store is read in bulk each time (fast); any other store (``mlflow server``) through
one ``RunCache`` per tracking URI shared by all sessions, which re-reads only the runs
that may have changed (new, running, just rated) and the whole store every few minutes or when
``refresh`` is called."""

from __future__ import annotations

import hashlib
from typing import Any

import streamlit as st

from advisor.runs import as_runs
from trainer.settings import load_settings
from trainer.tracking.connect import sqlite_path, store_identity
from trainer.tracking.records import RunRecord
from trainer.tracking.run_cache import RunCache
from ui.store_errors import store_boundary

VERSION_KEY = "cmp:version"


FULL_EVERY_S = 300.0  # a server store is read in full this often (runs deleted elsewhere go)


@st.cache_resource(show_spinner=False)
def run_cache(tracking_uri: str) -> RunCache:
    """The runs read so far from the store at ``tracking_uri`` (one holder per URI), with the
    last full read of a server store kept in ``<home>/cache/runs/`` so that a restarted studio
    shows them at once (and reads the store again in the background)."""
    snapshot = None
    if sqlite_path(tracking_uri) is None:
        digest = hashlib.sha256(tracking_uri.encode()).hexdigest()[:16]  # no URI in clear
        snapshot = load_settings().home / "cache" / "runs" / f"{digest}.json"
    return RunCache(tracking_uri, full_every_s=FULL_EVERY_S, snapshot=snapshot)


def load_runs(tracking_uri: str, version: int = 0) -> list[RunRecord]:
    """All runs of the store, newest first (``version`` is bumped when a rating/note changes;
    the rated run itself is read again, see ``trainer.tracking.run_cache.mark_changed``). Read
    again at once when a local store's file was replaced; a store that does not answer is
    reported on the page, which stops there."""
    with store_boundary():
        return _cached_runs(tracking_uri, version, store_identity(tracking_uri))


@st.cache_data(ttl=30, show_spinner=False)
def _cached_runs(tracking_uri: str, version: int, store: tuple[int, int] | None) -> list[RunRecord]:
    return run_cache(tracking_uri).runs()


load_runs.clear = _cached_runs.clear  # type: ignore[attr-defined]  # as if load_runs were cached


def refresh(tracking_uri: str) -> None:
    """Read the whole store again on the next render (the "Refresh" of the compare page)."""
    run_cache(tracking_uri).invalidate()
    bump()


def render_refresh(tracking_uri: str) -> None:
    """A "Refresh" button: every run is read again (runs deleted elsewhere go, edits made in the
    MLflow UI show); otherwise a server store is re-read in full every few minutes."""
    st.button(
        "Refresh runs",
        key="cmp:refresh",
        icon=":material/refresh:",
        help="Read every run of the store again.",
        on_click=refresh,
        args=(tracking_uri,),
    )


def updated(tracking_uri: str, run_id: str) -> None:
    """Read one run again now (after the page changed it) and show it on the next render."""
    run_cache(tracking_uri).update(run_id)
    bump()


def past_runs(tracking_uri: str, version: int = 0) -> list[Any]:
    """The runs as the advisor's ``PastRun``s with their configs parsed once (500 runs: ~0.4 s
    to parse, ~1 ms to recommend from afterwards); read again when the store's file changed."""
    return _past_runs(tracking_uri, version, store_identity(tracking_uri))


@st.cache_resource(ttl=30, show_spinner=False)
def _past_runs(tracking_uri: str, version: int, store: tuple[int, int] | None) -> list[Any]:
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
    db = sqlite_path(tracking_uri)
    if db is None or not db.is_file():
        return None
    return past_runs(tracking_uri, version())
