"""Overlaid metric curves of the picked runs: loss raw, smoothed and validation (``val_loss``,
from runs with validation images), learning rate; step or time axis. Every run keeps one colour
of a categorical palette in every chart, and runs whose raw loss nearly coincides get a caption
saying why (the noise drawn at each step, not the change)."""

from __future__ import annotations

from typing import Any, NamedTuple

import streamlit as st

from trainer.tracking.layout import METRIC_VAL_LOSS
from trainer.tracking.records import RunRecord, metric_history
from trainer.tracking.run_names import run_labels
from ui.text import plain

CURVE_KEYS = ("loss", "loss_smoothed", "lr", METRIC_VAL_LOSS)


class LossStyle(NamedTuple):
    label: str  # the line-style legend's entry: the metric's name ("loss_smoothed") said nothing
    dash: list[int]
    opacity: float


# How each loss curve is drawn, told apart without colour: raw faint and dashed, smoothed solid,
# validation (few points, on images never trained on) long dashes. Keyed by the metric's name.
LOSS_STYLES = {
    "loss": LossStyle("raw loss (faint, dashed)", [4, 3], 0.45),
    "loss_smoothed": LossStyle("smoothed loss (solid)", [1, 0], 1.0),
    METRIC_VAL_LOSS: LossStyle("validation loss (long dashes)", [8, 3], 1.0),
}
LINE_LEGEND_TITLE = "line style"
# Vega's category10: neighbouring runs get hues far apart (blue, orange, green, red...), never two
# shades of one colour; a run past the tenth takes the palette again from the start.
RUN_COLOURS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
# Raw loss curves closer than this (mean absolute difference over the mean loss) are "the same":
# a run's own noise moves the raw loss by far more from one step to the next.
NEAR_IDENTICAL = 0.03
MIN_SHARED_STEPS = 2
# Line widths by pick order, the baseline widest: runs of one seed draw the same curve, and the
# later runs (drawn on top, rows being in pick order) would hide the earlier ones at one width.
WIDEST_PX, NARROWER_BY_PX, THINNEST_PX = 3.5, 1.5, 1.0


def run_widths(runs: list[RunRecord]) -> dict[str, float]:
    """``{label: stroke width}`` in pick order: 3.5, 2, then 1 px (a line is 2 px by default)."""
    labels = run_labels(runs)
    return {
        labels[r.run_id]: max(THINNEST_PX, WIDEST_PX - NARROWER_BY_PX * i)
        for i, r in enumerate(runs)
    }


def run_colours(runs: list[RunRecord]) -> dict[str, str]:
    """``{label: colour}`` in pick order: the baseline blue, the next orange, and so on."""
    labels = run_labels(runs)
    return {labels[r.run_id]: RUN_COLOURS[i % len(RUN_COLOURS)] for i, r in enumerate(runs)}


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


class Overlap(NamedTuple):
    """A run whose raw loss nearly coincides with the baseline's over the steps both logged."""

    base: str
    other: str
    gap: float  # mean absolute difference over the mean loss, on the shared steps only
    steps: int  # how many steps both logged


def near_identical(data: Any, order: list[str]) -> list[Overlap]:
    """An ``Overlap`` for each run whose raw loss nearly coincides with the baseline's
    (``order[0]``) over the steps both logged: the mean absolute difference is under
    ``NEAR_IDENTICAL`` of their mean loss."""
    raw = data[data.metric == "loss"]
    series = {
        run: dict(zip(group.step, group.value, strict=True)) for run, group in raw.groupby("run")
    }
    if not order or order[0] not in series:
        return []
    base, found = series[order[0]], []
    for other in order[1:]:
        points = series.get(other, {})
        shared = sorted(base.keys() & points.keys())
        if len(shared) < MIN_SHARED_STEPS:
            continue
        mean = sum(abs(base[s]) + abs(points[s]) for s in shared) / (2 * len(shared))
        if not mean:
            continue
        gap = sum(abs(base[s] - points[s]) for s in shared) / len(shared) / mean
        if gap < NEAR_IDENTICAL:
            found.append(Overlap(order[0], other, gap, len(shared)))
    return found


def gap_text(gap: float) -> str:
    """A gap as a percentage, never "0.0%" (the curves still differ a little)."""
    text = f"{gap:.1%}"
    return "< 0.1%" if text == "0.0%" else text


def overlap_caption(runs: list[RunRecord], pairs: list[Overlap]) -> str:
    """Why near-identical raw losses say little: the loss of one step is mostly the noise level
    drawn for it, and runs of one seed draw the same noise. The gap is said to be over the steps
    both runs logged: the final losses in the table may differ (a longer run went on)."""
    labels = run_labels(runs)
    seeds = {labels[r.run_id]: r.params.get("train.seed") for r in runs}
    base = pairs[0].base
    if len(pairs) == 1:
        [pair] = pairs
        words = (
            f"Over the {pair.steps} steps both logged, the raw losses of {base} and {pair.other} "
            f"are on average {gap_text(pair.gap)} apart."
        )
    else:
        others = " and ".join(
            f"{p.other} ({gap_text(p.gap)} apart over the {p.steps} steps both logged)"
            for p in pairs
        )
        words = f"The raw loss of {base} nearly coincides with that of {others}."
    shared = {seeds[base]} | {seeds[p.other] for p in pairs}
    seed = (
        f" These runs share seed {shared.pop()}, so each step drew the same noise in both."
        if len(shared) == 1 and None not in shared
        else ""
    )
    return (
        f"{words} A diffusion model's raw loss mostly reflects the random noise level drawn at "
        f"each step, not what a setting changed.{seed} Compare the smoothed loss and, above "
        "all, the samples below."
    )


def loss_title(loss: Any) -> str:
    """The loss chart's title: it names the validation loss when a run logged one."""
    if (loss.metric == METRIC_VAL_LOSS).any():
        return "Loss (raw, smoothed and validation)"
    return "Loss (raw and smoothed)"


def loss_frame(data: Any) -> Any:
    """The loss rows of ``curve_frame`` with a ``curve`` column: each metric's legend entry."""
    loss = data[data.metric.isin(list(LOSS_STYLES))].copy()
    loss["curve"] = loss.metric.map({m: style.label for m, style in LOSS_STYLES.items()})
    return loss


def render_curves(tracking_uri: str, runs: list[RunRecord]) -> None:
    import altair as alt  # ~0.3 s: likewise

    data = curve_frame(tracking_uri, runs)
    if data.empty:
        st.caption("None of these runs logged loss or learning rate yet.")
        return
    axis = st.radio("Axis", ["step", "seconds"], horizontal=True, key="cmp:axis")
    colours = run_colours(runs)  # the same scale in every chart: a run is one colour on the page
    colour = alt.Color(
        "run:N", title="run", scale=alt.Scale(domain=list(colours), range=list(colours.values()))
    )
    widths = run_widths(runs)
    # Channels of one field merge into one legend, which `legend=None` on any of them would hide:
    # the run legend shows each run's colour at its width, the line-style one each dash's opacity.
    width = alt.StrokeWidth(
        "run:N", title="run", scale=alt.Scale(domain=list(widths), range=list(widths.values()))
    )
    loss = loss_frame(data)
    # the legend lists the curves drawn (no 'validation' entry for runs without one)
    styles = {
        m: style for m, style in LOSS_STYLES.items() if (loss.metric == m).any()
    } or LOSS_STYLES
    lines = [style.label for style in styles.values()]
    lr = data[data.metric == "lr"]
    left, right = st.columns(2)
    left.altair_chart(
        alt.Chart(loss, title=loss_title(loss))
        .mark_line()
        .encode(
            x=alt.X(f"{axis}:Q"),
            y=alt.Y("value:Q", title="loss", scale=alt.Scale(zero=False)),
            color=colour,
            strokeDash=alt.StrokeDash(
                "curve:N",
                title=LINE_LEGEND_TITLE,
                scale=alt.Scale(domain=lines, range=[s.dash for s in styles.values()]),
            ),
            opacity=alt.Opacity(
                "curve:N",
                title=LINE_LEGEND_TITLE,
                scale=alt.Scale(domain=lines, range=[s.opacity for s in styles.values()]),
            ),
            strokeWidth=width,
            tooltip=["run", "curve", "step", alt.Tooltip("value:Q", format=".4f")],
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
                color=colour,
                strokeWidth=width,
            ),
            width="stretch",
        )
    pairs = near_identical(data, list(colours))
    if pairs:
        st.caption(":material/info: " + plain(overlap_caption(runs, pairs)))  # names runs
