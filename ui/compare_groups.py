"""Compare opens a sweep together: runs queued as variants of one config carry the same group tag
(``studio.group``); the "Sweep" selector picks all runs of a group at once, ranked by the chosen
metric (validation loss when the runs have it: its best checkpoint's, else the loss; lower is
better) and then by the user's star ratings, so the best variant comes first (the baseline of the
comparison). Runs whose values are within noise of each other (under 1% apart) are not called
best: the page says they are too close to call and asks for the samples' ratings."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import streamlit as st

from trainer.tracking.layout import METRIC_VAL_LOSS, TAG_BEST_VAL_LOSS, TAG_GROUP
from trainer.tracking.records import RunRecord
from ui.compare_table import PICKED_KEY, differing_settings, rating_text
from ui.text import plain_line

NONE = "(no sweep)"
GROUP_KEY = "cmp:group"
METRIC_KEY = "cmp:group_metric"
RATING = "rating"
# metrics a sweep is ranked by, lower is better, in the order they are offered
METRICS = {
    METRIC_VAL_LOSS: "validation loss (best checkpoint)",
    "loss_smoothed": "smoothed loss",
    "loss": "final loss",
}
METRIC_LABELS = {**METRICS, RATING: "your rating (★)"}
# Losses closer than this share of the best are noise: a diffusion loss moves more than 1% from
# one drawn noise to the next, so such a ranking says nothing about the LoRA
TOO_CLOSE_SHARE = 0.01
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# ----------------------------------------------------------------------------------- pure parts
def group_of(rec: RunRecord) -> str | None:
    """The sweep a run belongs to (its group tag), None for a run launched on its own."""
    return rec.tags.get(TAG_GROUP) or None


def sweep_groups(records: Iterable[RunRecord]) -> dict[str, list[RunRecord]]:
    """``{group: its runs}``, the group with the newest run first."""
    found: dict[str, list[RunRecord]] = {}
    for rec in records:
        group = group_of(rec)
        if group:
            found.setdefault(group, []).append(rec)
    return dict(sorted(found.items(), key=lambda item: -_newest(item[1])))


def _newest(records: list[RunRecord]) -> float:
    return max((r.start_time or _EPOCH).timestamp() for r in records)


def metric_choices(records: Iterable[RunRecord]) -> list[str]:
    """The metrics at least one of the runs logged (in the order of ``METRICS``), then the
    rating; the first is the default ranking."""
    records = list(records)
    logged = [m for m in METRICS if any(_value(r, m) is not None for r in records)]
    return [*logged, RATING]


def _value(rec: RunRecord, metric: str) -> float | None:
    """The run's value of ``metric``: the last one logged, except the validation loss, whose
    best (the checkpoint the run marked best) is what the variant can deliver."""
    value: Any = rec.metrics.get(metric)
    if metric == METRIC_VAL_LOSS and rec.tags.get(TAG_BEST_VAL_LOSS):
        with contextlib.suppress(ValueError):  # a tag edited by hand: the last value then
            value = float(rec.tags[TAG_BEST_VAL_LOSS])
    return value if isinstance(value, int | float) and math.isfinite(value) else None


def rank_runs(records: Iterable[RunRecord], metric: str) -> list[RunRecord]:
    """The runs best first: by ``metric`` (lower is better; runs without it last), equal values
    by the user's rating (more stars first); by ``RATING``: more stars first, then the best
    loss. Unrated runs count as 0 stars; the earlier run wins a full tie."""
    fallback = next((m for m in METRICS if m != metric), "loss")

    def metric_key(rec: RunRecord, name: str) -> tuple[bool, float]:
        value = _value(rec, name)
        return value is None, value if value is not None else 0.0

    def key(rec: RunRecord) -> tuple[Any, ...]:
        stars = -(rec.rating or 0)
        started = (rec.start_time or _EPOCH).timestamp()
        if metric == RATING:
            losses = tuple(metric_key(rec, m) for m in METRICS)
            return stars, *losses, started
        return *metric_key(rec, metric), stars, *metric_key(rec, fallback), started

    return sorted(records, key=key)


def spread_share(records: Iterable[RunRecord], metric: str) -> tuple[float, int] | None:
    """``(share, count)``: how far apart the runs' values of ``metric`` are, relative to the
    best (0.002 = 0.2%), over the runs from the best to the last one within noise of it
    (``TOO_CLOSE_SHARE``), and how many runs that is; the best and the next when the next is
    not within noise. None when fewer than two runs have the metric or for the rating."""
    if metric == RATING:
        return None
    values = sorted(v for r in records if (v := _value(r, metric)) is not None)
    if len(values) < 2:
        return None
    best = values[0]
    scale = abs(best) or 1.0
    close = [v for v in values if (v - best) / scale < TOO_CLOSE_SHARE]
    last = close[-1] if len(close) > 1 else values[1]
    return (last - best) / scale, max(2, len(close))


def too_close_note(records: list[RunRecord], metric: str) -> str | None:
    """What the page says when the best run is within noise of the next: "these runs are within
    0.2% of each other: too close to call; look at the samples and rate them"; None when the
    ranking is clear (or ranked by rating)."""
    found = spread_share(records, metric)
    if found is None or found[0] >= TOO_CLOSE_SHARE:
        return None
    share, count = found
    apart = "the same" if share == 0 else f"within {_percent(share)} of each other"
    who = "these runs are" if count == len(records) else f"the best {count} runs are"
    return (
        f"On {METRIC_LABELS[metric]}, {who} {apart}: too close to call (a diffusion loss moves "
        "more than that with the noise drawn). Look at the samples below and rate them; "
        f"'Rank by: {METRIC_LABELS[RATING]}' then ranks them."
    )


def _percent(share: float) -> str:
    percent = share * 100
    return "under 0.1%" if percent < 0.05 else f"{percent:.1f}%"


def sweep_caption(group: str, members: list[RunRecord], metric: str) -> str:
    """The line above a sweep's table: how many runs, ranked by what, and the best, unless the
    best is within noise of the next (then only which run is listed first)."""
    first = rank_runs(members, metric)[0]
    ranked = f"{len(members)} runs of {plain_line(group)}, ranked by {METRIC_LABELS[metric]}"
    if too_close_note(members, metric):
        return (
            f"{ranked}; first, though not a clear best: {plain_line(first.name)} (too close to "
            "call, see below)."
        )
    return f"{ranked}; best: **{plain_line(first.name)}**. They are picked below, the best first."


def ranked_rows(records: list[RunRecord], metric: str) -> list[dict[str, Any]]:
    """The table of a sweep: rank, name, the settings its variants differ in, the metrics,
    rating and status."""
    settings, _ = differing_settings(records)
    rows = []
    for rank, rec in enumerate(rank_runs(records, metric), start=1):
        rows.append(
            {
                "rank": rank,
                "name": rec.name,
                **{label: rec.params.get(path) for path, label in settings.items()},
                **{METRICS[m]: _value(rec, m) for m in METRICS if m in metric_choices(records)},
                "rating": rating_text(rec.rating),
                "status": rec.status,
                "run id": rec.run_id,
            }
        )
    return rows


# ----------------------------------------------------------------------------------- on the page
def render_sweep_picker(records: list[RunRecord]) -> list[RunRecord]:
    """The "Sweep" selector, shown when some of ``records`` (the filtered runs) carry a group:
    choosing a sweep (or another ranking) picks all its runs, best first, for the comparison
    below, and shows them ranked. Returns the chosen sweep's runs (empty: no sweep chosen)."""
    groups = sweep_groups(records)
    if not groups:
        return []
    ss = st.session_state
    if ss.get(GROUP_KEY) not in (NONE, *groups):
        ss[GROUP_KEY] = NONE  # that sweep's runs were filtered out or deleted
    members = groups.get(ss.get(GROUP_KEY, NONE), [])
    metrics = metric_choices(members or records)
    if ss.get(METRIC_KEY) not in metrics:
        ss[METRIC_KEY] = metrics[0]
    left, right = st.columns([2, 1])
    left.selectbox(
        "Sweep",
        [NONE, *groups],
        key=GROUP_KEY,
        format_func=lambda g: g if g == NONE else f"{g} ({len(groups[g])} runs)",
        on_change=_pick_group,
        args=(groups,),
        help="Variants queued together: picks all of them, the best first.",
    )
    right.selectbox(
        "Rank by",
        metrics,
        key=METRIC_KEY,
        format_func=METRIC_LABELS.get,
        on_change=_pick_group,
        args=(groups,),
        help="Lower is better for a loss; equal values go to the run you rated higher.",
    )
    if members:
        import pandas as pd  # ~0.75 s: only once a sweep is chosen

        metric = ss[METRIC_KEY]
        st.caption(sweep_caption(ss[GROUP_KEY], members, metric))
        st.dataframe(
            pd.DataFrame(ranked_rows(members, metric)), hide_index=True, key="cmp:group_table"
        )
        note = too_close_note(members, metric)
        if note:
            st.info(note, icon=":material/balance:")
    return members


def _pick_group(groups: dict[str, list[RunRecord]]) -> None:
    # a callback: it runs before the page renders again, so the run picker (not drawn yet in
    # that render) takes these picks
    ss = st.session_state
    members = groups.get(ss.get(GROUP_KEY, NONE))
    if not members:
        return
    metric = ss.get(METRIC_KEY)
    if metric not in metric_choices(members):
        metric = metric_choices(members)[0]
    ss[PICKED_KEY] = [rec.run_id for rec in rank_runs(members, metric)]
