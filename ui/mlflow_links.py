"""'Open in MLflow UI', the same everywhere (Monitor, Compare): links to the runs, and to their
comparison, in MLflow's machine-learning view. When the studio's MLflow UI already runs (or the
store is a team server) the links show at once; otherwise one button starts it
(``ui.mlflow_ui.ensure_server``) and the links follow, with a word on what they are."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import streamlit as st

from trainer.redaction import redact_text
from trainer.settings import StudioSettings
from ui import mlflow_ui
from ui.text import plain


def render_mlflow_links(
    settings: StudioSettings, runs: Sequence[Any], labels: dict[str, str], key: str
) -> None:
    """``runs``: anything with ``run_id`` and ``experiment_id``; ``labels``: run id -> label."""
    url_key = f"{key}:mlflow_url"
    if not st.session_state.get(url_key):
        found = mlflow_ui.running_server(settings)  # a team server, or ours still running
        if found:
            st.session_state[url_key] = found
    if not st.session_state.get(url_key) and st.button(
        "Open in MLflow UI",
        key=f"{key}:mlflow",
        icon=":material/open_in_new:",
        help="Starts MLflow's own UI for the studio's runs (about half a minute the first "
        "time), then shows a link per run.",
    ):
        with st.spinner("Starting the MLflow UI (first time: up to half a minute)…"):
            try:
                st.session_state[url_key] = mlflow_ui.ensure_server(settings)[0]
            except (OSError, RuntimeError) as err:
                why = redact_text(str(err))
                st.error(f"Could not start the MLflow UI: {plain(why)}", icon=":material/error:")
    base = st.session_state.get(url_key)
    if not base or not runs:
        return
    st.caption(f"In MLflow's own UI ({base}), each opens in a new tab:")
    cols = st.columns(len(runs) + (len(runs) > 1))
    for col, run in zip(cols, runs, strict=False):
        url = mlflow_ui.run_url(base, run.experiment_id, run.run_id)
        col.link_button(labels.get(run.run_id, run.run_id[:8]), url, icon=":material/open_in_new:")
    if len(runs) > 1:
        ids = [r.run_id for r in runs]
        url = mlflow_ui.compare_url(base, [r.experiment_id for r in runs], ids)
        cols[-1].link_button("Compare in MLflow", url, icon=":material/open_in_new:")
