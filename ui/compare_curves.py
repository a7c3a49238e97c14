"""Overlaid metric curves of the picked runs: loss raw and smoothed, learning rate; step or
time axis."""

from __future__ import annotations

from typing import Any

import streamlit as st

from trainer.tracking.records import RunRecord, metric_history
from trainer.tracking.run_names import run_labels

CURVE_KEYS = ("loss", "loss_smoothed", "lr")


def curve_frame(tracking_uri: str, runs: list[RunRecord]) -> Any:
    """The picked runs' metric points, one series per run: ``run`` is the run's label, so runs
    that share a name still get a line (and a legend entry) each."""
    import pandas as pd  # ~0.75 s: only once two runs are picked

    rows, labels = [], run_labels(runs)
    for rec in runs:
        history = metric_history(tracking_uri, rec.run_id, CURVE_KEYS)
        first = min((ts for pts in history.values() for _, _, ts in pts), default=0)
        for key, points in history.items():
            for step, value, ts in points:
                rows.append(
                    {
                        "run": labels[rec.run_id],
                        "metric": key,
                        "step": step,
                        "seconds": (ts - first) / 1000,
                        "value": value,
                    }
                )
    return pd.DataFrame(rows, columns=["run", "metric", "step", "seconds", "value"])


def render_curves(tracking_uri: str, runs: list[RunRecord]) -> None:
    import altair as alt  # ~0.3 s: likewise

    data = curve_frame(tracking_uri, runs)
    if data.empty:
        st.caption("None of these runs logged loss or learning rate yet.")
        return
    axis = st.radio("Axis", ["step", "seconds"], horizontal=True, key="cmp:axis")
    loss = data[data.metric != "lr"]
    lr = data[data.metric == "lr"]
    left, right = st.columns(2)
    left.altair_chart(
        alt.Chart(loss, title="Loss (raw and smoothed)")
        .mark_line()
        .encode(
            x=alt.X(f"{axis}:Q"),
            y=alt.Y("value:Q", title="loss", scale=alt.Scale(zero=False)),
            color="run:N",
            strokeDash="metric:N",
            tooltip=["run", "metric", "step", alt.Tooltip("value:Q", format=".4f")],
        ),
        width="stretch",
    )
    if not lr.empty:
        right.altair_chart(
            alt.Chart(lr, title="Learning rate")
            .mark_line()
            .encode(
                x=alt.X(f"{axis}:Q"),
                y=alt.Y("value:Q", title="lr", axis=alt.Axis(format=".1e")),
                color="run:N",
            ),
            width="stretch",
        )
