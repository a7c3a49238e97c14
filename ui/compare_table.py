"""The runs table: filters (architecture, intent, status, preset, date, rating, dataset, tags) and
the columns that matter: the settings that differ among the listed runs (the learning rate of two
runs that differ only there), predicted vs actual time. On the first visit of a session the two
most recent finished runs are picked, so the comparison shows at once."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, date, datetime
from typing import Any

import streamlit as st

from advisor.history import KEY_SETTINGS
from trainer.tracking.layout import TAG_PREDICTED, TAG_PREDICTED_TOTAL, trained_steps
from trainer.tracking.records import RunRecord
from ui.advice import label_of

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
MAX_SETTING_COLUMNS = 4
# settings the table shows in columns of their own, and bookkeeping that trains nothing
_SHOWN_ELSEWHERE = {"name", "intent", "preset", "model.arch", "train.steps", "logging.run_name"}
_NOT_TRAINING = ("logging.", "save.", "runtime.")
# which differing settings get the few columns first: the advisor's key settings, then the
# sections that change what is learned, then the samples' settings
_SECTION_ORDER = ("train.", "network.", "model.", "datasets.", "sample.")
PICKED_KEY = "cmp:picked"  # the picker widget (its state goes when the user leaves the page)
REMEMBERED_PICKS = "cmp:remembered_picks"  # the picked run ids, kept for the whole session
NOT_RATED = "not rated"


# ------------------------------------------------------------------------------- the values
def steps_of(rec: RunRecord) -> int | None:
    """The steps the run trained to: ``total_steps`` (the trainer's resolved length, which a
    run set by ``train.epochs`` has only there), else the config's ``train.steps``."""
    return trained_steps(rec.params)


def rating_text(rating: int | None) -> str:
    """A run's stars as a table shows them: ``4 ★``, or ``not rated`` (never ``None``)."""
    return f"{rating} ★" if rating else NOT_RATED


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


def differing_settings(
    records: Iterable[RunRecord], limit: int = MAX_SETTING_COLUMNS
) -> tuple[dict[str, str], int]:
    """``({param path: column label}, how many more differ)``: the settings (MLflow params) that
    take two or more values among ``records``, the advisor's key settings first, at most
    ``limit``; settings the table already shows (name, steps, dataset...) and bookkeeping (saves,
    logging, workers) are left out. A run without the param (an older studio) does not count."""
    values: dict[str, set[str]] = {}
    for rec in records:
        for path, value in rec.params.items():
            values.setdefault(path, set()).add(value)
    differing = [
        path
        for path, seen in values.items()
        if len(seen) > 1
        and path not in _SHOWN_ELSEWHERE
        and not _FOLDER_PARAM.match(path)
        and not path.startswith(_NOT_TRAINING)
    ]
    differing.sort(key=_column_rank)
    columns: dict[str, str] = {}
    for path in differing[:limit]:
        label = label_of(path)
        columns[path] = label if label not in COLUMNS and label not in columns.values() else path
    return columns, max(0, len(differing) - limit)


def _column_rank(path: str) -> tuple[int, int, str]:
    if path in KEY_SETTINGS:
        return 0, KEY_SETTINGS.index(path), path
    section = next((i for i, s in enumerate(_SECTION_ORDER) if path.startswith(s)), None)
    return 1 if section is not None else 2, section or 0, path


def table_rows(
    records: Iterable[RunRecord], settings: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """One row per run; ``settings`` (``{param path: column label}``, see
    ``differing_settings``) adds a column per setting after the status."""
    rows = []
    for r in records:
        pred_step, pred_total = predicted_step_s(r), predicted_total_s(r)
        step_s = r.metrics.get("s_per_step")
        rows.append(
            {
                "name": r.name,
                "status": r.status,
                **{label: r.params.get(path) for path, label in (settings or {}).items()},
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


def latest_finished(records: Iterable[RunRecord], count: int = 2) -> list[RunRecord]:
    """The ``count`` most recently started finished runs, the older first (the baseline: the
    diff then reads "what the newer run changed")."""
    finished = [r for r in records if r.status == "FINISHED" and r.start_time is not None]
    finished.sort(key=lambda r: r.start_time, reverse=True)
    return finished[:count][::-1]


def table_caption(matching: int, sweep_runs: int = 0) -> str:
    """The line above the runs table: that it lists every run the filters let through (not
    only the sweep chosen above it, whose ``sweep_runs`` runs are picked among them)."""
    if sweep_runs:
        listed = (
            f"This table lists all {matching} run(s) that match the filters, not only the "
            f"sweep's {sweep_runs}; those are picked below."
        )
    else:
        listed = f"{matching} run(s) match the filters."
    return (
        f"{listed} Predicted times are the advisor's, recorded when the studio launched the run "
        "(runs started from the terminal have none)."
    )


def render_table(records: list[RunRecord], sweep_runs: int = 0) -> list[RunRecord]:
    """The table of filtered runs and the runs the user picked to compare; ``sweep_runs``: how
    many runs the sweep chosen above has (0: none chosen), for the table's caption."""
    st.caption(table_caption(len(records), sweep_runs))
    import pandas as pd  # ~0.75 s: not needed while the store has no runs

    settings, more = differing_settings(records)
    rows = [{**row, "rating": rating_text(row["rating"])} for row in table_rows(records, settings)]
    columns = [*COLUMNS[:2], *settings.values(), *COLUMNS[2:]]
    st.dataframe(pd.DataFrame(rows, columns=columns), hide_index=True, key="cmp:table")
    if more:
        st.caption(
            f"{more} more setting(s) differ among these runs: pick runs to see them all under "
            "'What changed'."
        )
    by_id = {r.run_id: r for r in records}
    ss = st.session_state
    if PICKED_KEY not in ss:  # back on the page: Streamlit dropped the widget's state on leaving
        if REMEMBERED_PICKS in ss:
            ss[PICKED_KEY] = [rid for rid in ss[REMEMBERED_PICKS] if rid in by_id]
        else:  # first visit: the comparison a newcomer came for, without a pick
            ss[PICKED_KEY] = [r.run_id for r in latest_finished(records)]
    picked = st.multiselect(
        "Runs to compare (the first is the baseline)",
        list(by_id),
        format_func=lambda rid: label(by_id[rid]),
        key=PICKED_KEY,
    )
    ss[REMEMBERED_PICKS] = list(picked)
    return [by_id[rid] for rid in picked if rid in by_id]
