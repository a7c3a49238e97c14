"""The runs table: filters (architecture, intent, status, preset, date, rating, dataset, tags) and
the columns that matter, predicted vs actual time included."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, date, datetime
from typing import Any

import streamlit as st

from trainer.tracking.layout import TAG_PREDICTED, TAG_PREDICTED_TOTAL
from trainer.tracking.records import RunRecord

ANY = "(any)"
STATUSES = ("FINISHED", "RUNNING", "FAILED", "KILLED")
COLUMNS = (
    "name",
    "status",
    "arch",
    "intent",
    "preset",
    "dataset",
    "started",
    "final loss",
    "smoothed loss",
    "steps",
    "s/step",
    "predicted s/step",
    "s/step actual÷predicted",
    "duration (s)",
    "predicted total (s)",
    "time actual÷predicted",
    "rating",
    "run id",
)
_FOLDER_PARAM = re.compile(r"^datasets\.\d+\.folder_path$")
PICKED_KEY = "cmp:picked"  # the picker widget (its state goes when the user leaves the page)
REMEMBERED_PICKS = "cmp:remembered_picks"  # the picked run ids, kept for the whole session


# ------------------------------------------------------------------------------- the values
def steps_of(rec: RunRecord) -> int | None:
    value = rec.params.get("train.steps")
    return int(value) if value and value.isdigit() else None


def _float(value: Any) -> float | None:
    try:
        found = float(value)
    except (TypeError, ValueError):
        return None
    return found if found > 0 else None


def predicted_step_s(rec: RunRecord) -> float | None:
    """The advisor's s/step recorded when the studio launched the run (None for CLI runs)."""
    return _float(rec.tags.get(TAG_PREDICTED))


def predicted_total_s(rec: RunRecord) -> float | None:
    """The whole-run prediction recorded at launch, else predicted s/step × steps."""
    total = _float(rec.tags.get(TAG_PREDICTED_TOTAL))
    step, steps = predicted_step_s(rec), steps_of(rec)
    return total or (step * steps if step and steps else None)


def _ratio(actual: float | None, predicted: float | None) -> float | None:
    return round(actual / predicted, 2) if actual and predicted else None


def dataset_labels(rec: RunRecord) -> set[str]:
    """How a run's data can be picked: the folders as configured, the MLflow input names, and
    ``#<fingerprint>`` (first 12 characters; same images and captions = same fingerprint)."""
    found = {v for k, v in rec.params.items() if _FOLDER_PARAM.match(k)}
    found |= {name.split(":", 1)[-1] for name, _ in rec.datasets}
    digests = {digest for _, digest in rec.datasets}
    if rec.dataset_fingerprint:
        digests.add(rec.dataset_fingerprint)
    return found | {f"#{d[:12]}" for d in digests if d}


def table_rows(records: Iterable[RunRecord]) -> list[dict[str, Any]]:
    rows = []
    for r in records:
        pred_step, pred_total = predicted_step_s(r), predicted_total_s(r)
        step_s = r.metrics.get("s_per_step")
        rows.append(
            {
                "name": r.name,
                "status": r.status,
                "arch": r.arch,
                "intent": r.intent,
                "preset": r.preset or "",
                "dataset": ", ".join(sorted(dataset_labels(r))),
                "started": r.start_time,
                "final loss": r.metrics.get("loss"),
                "smoothed loss": r.metrics.get("loss_smoothed"),
                "steps": steps_of(r),
                "s/step": step_s,
                "predicted s/step": pred_step,
                "s/step actual÷predicted": _ratio(step_s, pred_step),
                "duration (s)": None if r.duration_s is None else round(r.duration_s, 1),
                "predicted total (s)": None if pred_total is None else round(pred_total, 1),
                "time actual÷predicted": _ratio(r.duration_s, pred_total),
                "rating": r.rating,
                "run id": r.run_id,
            }
        )
    return rows


# ------------------------------------------------------------------------------ the filters
def parse_tag_filter(text: str) -> list[tuple[str, str | None]]:
    """``"team=a, studio.device=cpu, baseline"`` → [(key, value or None for 'has the tag')]."""
    terms = []
    for part in re.split(r"[,;\n]", text or ""):
        key, sep, value = part.partition("=")
        if key.strip():
            terms.append((key.strip(), value.strip() if sep else None))
    return terms


def matches_tags(rec: RunRecord, terms: list[tuple[str, str | None]]) -> bool:
    """Every term holds (a key matches as written or with the ``studio.`` prefix)."""
    for key, value in terms:
        found = rec.tags.get(key, rec.tags.get(f"studio.{key}"))
        if found is None or (value is not None and found != value):
            return False
    return True


def filter_runs(
    records: Iterable[RunRecord],
    *,
    arch: str = ANY,
    intent: str = ANY,
    status: str = ANY,
    preset: str = ANY,
    since: date | None = None,
    min_rating: int = 0,
    datasets: Iterable[str] = (),
    tags: str = "",
) -> list[RunRecord]:
    """The runs that pass every filter (ANY / None / 0 / empty switch a filter off)."""
    start = datetime(since.year, since.month, since.day, tzinfo=UTC) if since else None
    wanted, terms = set(datasets), parse_tag_filter(tags)
    return [
        r
        for r in records
        if (arch == ANY or r.arch == arch)
        and (intent == ANY or r.intent == intent)
        and (status == ANY or r.status == status)
        and (preset == ANY or (r.preset or "") == preset)
        and (start is None or (r.start_time is not None and r.start_time >= start))
        and (min_rating == 0 or (r.rating or 0) >= min_rating)
        and (not wanted or bool(wanted & dataset_labels(r)))
        and matches_tags(r, terms)
    ]


def _choices(records: list[RunRecord], attr: str) -> list[str]:
    return [ANY, *sorted({str(getattr(r, attr) or "") for r in records} - {""})]


def _stars(n: int) -> str:
    return "any" if not n else "★" * n


def render_filters(records: list[RunRecord]) -> list[RunRecord]:
    cols = st.columns(6)
    arch = cols[0].selectbox("Architecture", _choices(records, "arch"), key="cmp:arch")
    intent = cols[1].selectbox("Training type", _choices(records, "intent"), key="cmp:intent")
    status = cols[2].selectbox("Status", [ANY, *STATUSES], key="cmp:status")
    preset = cols[3].selectbox("Preset", _choices(records, "preset"), key="cmp:preset")
    since = cols[4].date_input("Started since", value=None, key="cmp:since")
    rating = cols[5].selectbox(
        "Rating at least", [0, 1, 2, 3, 4, 5], key="cmp:rating", format_func=_stars
    )
    left, right = st.columns(2)
    datasets = left.multiselect(
        "Dataset",
        sorted(set().union(*(dataset_labels(r) for r in records))),
        key="cmp:dataset",
        help="A folder as configured, or #fingerprint: the same images and captions anywhere.",
    )
    tags = right.text_input(
        "Tags",
        key="cmp:tags",
        placeholder="key=value, key2 (studio.device=cpu, your own tags…)",
        help="Every term must hold. A key alone: the run has that tag. 'studio.' may be left out.",
    )
    return filter_runs(
        records,
        arch=arch,
        intent=intent,
        status=status,
        preset=preset,
        since=since,
        min_rating=rating,
        datasets=datasets,
        tags=tags,
    )


# -------------------------------------------------------------------------------- the table
def label(rec: RunRecord) -> str:
    when = rec.start_time.strftime("%m-%d %H:%M") if rec.start_time else "?"
    return f"{rec.name} · {rec.arch} · {when} · {rec.run_id[:8]}"


def render_table(records: list[RunRecord]) -> list[RunRecord]:
    """The table of filtered runs and the runs the user picked to compare."""
    st.caption(
        f"{len(records)} run(s) match. Predicted times are the advisor's, recorded when the "
        "studio launched the run (runs started from the terminal have none)."
    )
    import pandas as pd  # ~0.75 s: not needed while the store has no runs

    rows = table_rows(records)
    st.dataframe(pd.DataFrame(rows, columns=COLUMNS), hide_index=True, key="cmp:table")
    by_id = {r.run_id: r for r in records}
    ss = st.session_state
    if PICKED_KEY not in ss:  # back on the page: Streamlit dropped the widget's state on leaving
        ss[PICKED_KEY] = [rid for rid in ss.get(REMEMBERED_PICKS, []) if rid in by_id]
    picked = st.multiselect(
        "Runs to compare (the first is the baseline)",
        list(by_id),
        format_func=lambda rid: label(by_id[rid]),
        key=PICKED_KEY,
    )
    ss[REMEMBERED_PICKS] = list(picked)
    return [by_id[rid] for rid in picked if rid in by_id]
