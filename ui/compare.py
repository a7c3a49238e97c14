"""The compare page's parts: the runs table with filters, the config diff, overlaid curves, samples
side by side, ratings and notes, and "reuse this run" (as a preset, or as the wizard's draft).

Everything is read through ``trainer.tracking`` (the one place that knows the MLflow layout).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import streamlit as st

from trainer import tracking
from trainer.config import WIZARD_STEPS
from trainer.settings import StudioSettings
from trainer.tracking import RunRecord

ANY = "(any)"
CURVE_KEYS = ("loss", "loss_smoothed", "lr")
STATUSES = ("FINISHED", "RUNNING", "FAILED", "KILLED")


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


def _version() -> int:
    return st.session_state.get("cmp:version", 0)


def _bump() -> None:
    st.session_state["cmp:version"] = _version() + 1


# ------------------------------------------------------------------------------- the table
def steps_of(rec: RunRecord) -> int | None:
    value = rec.params.get("train.steps")
    return int(value) if value and value.isdigit() else None


def table_rows(records: Iterable[RunRecord]) -> list[dict[str, Any]]:
    return [
        {
            "name": r.name,
            "status": r.status,
            "arch": r.arch,
            "intent": r.intent,
            "preset": r.preset or "",
            "started": r.start_time,
            "final loss": r.metrics.get("loss"),
            "smoothed loss": r.metrics.get("loss_smoothed"),
            "steps": steps_of(r),
            "duration (s)": None if r.duration_s is None else round(r.duration_s, 1),
            "rating": r.rating,
            "run id": r.run_id,
        }
        for r in records
    ]


def filter_runs(
    records: Iterable[RunRecord],
    *,
    arch: str = ANY,
    intent: str = ANY,
    status: str = ANY,
    preset: str = ANY,
    since: date | None = None,
    min_rating: int = 0,
) -> list[RunRecord]:
    """The runs that pass every filter (ANY / None / 0 switch a filter off)."""
    start = datetime(since.year, since.month, since.day, tzinfo=UTC) if since else None
    return [
        r
        for r in records
        if (arch == ANY or r.arch == arch)
        and (intent == ANY or r.intent == intent)
        and (status == ANY or r.status == status)
        and (preset == ANY or (r.preset or "") == preset)
        and (start is None or (r.start_time is not None and r.start_time >= start))
        and (min_rating == 0 or (r.rating or 0) >= min_rating)
    ]


def _choices(records: list[RunRecord], attr: str) -> list[str]:
    return [ANY, *sorted({str(getattr(r, attr) or "") for r in records} - {""})]


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
    return filter_runs(
        records,
        arch=arch,
        intent=intent,
        status=status,
        preset=preset,
        since=since,
        min_rating=rating,
    )


def _stars(n: int) -> str:
    return "any" if not n else "★" * n


def label(rec: RunRecord) -> str:
    when = rec.start_time.strftime("%m-%d %H:%M") if rec.start_time else "?"
    return f"{rec.name} · {rec.arch} · {when} · {rec.run_id[:8]}"


def render_table(records: list[RunRecord]) -> list[RunRecord]:
    """The table of filtered runs and the runs the user picked to compare."""
    st.caption(f"{len(records)} run(s) match.")
    st.dataframe(table_rows(records), hide_index=True, key="cmp:table")
    by_id = {r.run_id: r for r in records}
    picked = st.multiselect(
        "Runs to compare (the first is the baseline)",
        list(by_id),
        format_func=lambda rid: label(by_id[rid]),
        key="cmp:picked",
    )
    return [by_id[rid] for rid in picked if rid in by_id]


# -------------------------------------------------------------------------------- the diff
def diff_rows(base: RunRecord, other: RunRecord, level: str = "beginner") -> list[dict[str, Any]]:
    """Fields that differ, in wizard order, with the advisor's explanation of each."""
    from advisor.history import diff_runs

    diff = diff_runs(base, other, level)
    return [
        {
            "step": WIZARD_STEPS[step][0],
            "setting": c.path,
            base.name or "A": _show(c.before),
            other.name or "B": _show(c.after),
            "what it does": c.explanation,
        }
        for step, changes in diff.by_step.items()
        for c in changes
    ]


def _show(value: Any) -> str:
    return "—" if value is None else str(value)


def render_diff(runs: list[RunRecord]) -> None:
    base = runs[0]
    for other in runs[1:]:
        st.markdown(f"**{base.name}** → **{other.name}**")
        try:
            rows = diff_rows(base, other)
        except ValueError as err:
            st.warning(f"Cannot compare the configs: {err}")
            continue
        if not rows:
            st.caption("Same config.")
            continue
        for step in dict.fromkeys(row["step"] for row in rows):
            with st.expander(f"{step} ({sum(r['step'] == step for r in rows)})", expanded=True):
                st.table(
                    [{k: v for k, v in r.items() if k != "step"} for r in rows if r["step"] == step]
                )


# ------------------------------------------------------------------------------ the curves
def curve_frame(tracking_uri: str, runs: list[RunRecord]) -> Any:
    import pandas as pd

    rows = []
    for rec in runs:
        history = tracking.metric_history(tracking_uri, rec.run_id, CURVE_KEYS)
        first = min((ts for pts in history.values() for _, _, ts in pts), default=0)
        for key, points in history.items():
            for step, value, ts in points:
                rows.append(
                    {
                        "run": rec.name or rec.run_id[:8],
                        "metric": key,
                        "step": step,
                        "seconds": (ts - first) / 1000,
                        "value": value,
                    }
                )
    return pd.DataFrame(rows, columns=["run", "metric", "step", "seconds", "value"])


def render_curves(tracking_uri: str, runs: list[RunRecord]) -> None:
    import altair as alt

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


# ----------------------------------------------------------------------------- the samples
def render_samples(tracking_uri: str, runs: list[RunRecord]) -> None:
    per_run = {r.run_id: tracking.sample_images(tracking_uri, r.run_id) for r in runs}
    steps = sorted(set.intersection(*({s.step for s in imgs} for imgs in per_run.values())))
    if not steps:
        st.caption("No sampling step shared by all these runs.")
        return
    step = st.select_slider("Samples at step", steps, value=steps[-1], key="cmp:sample_step")
    cols = st.columns(len(runs))
    for col, rec in zip(cols, runs, strict=True):
        col.markdown(f"**{rec.name}**")
        for image in (s for s in per_run[rec.run_id] if s.step == step):
            col.image(image.path_or_uri, caption=image.prompt or image.key)


# --------------------------------------------------------------------- rating, note, reuse
def render_rating(settings: StudioSettings, rec: RunRecord) -> None:
    key = rec.run_id[:12]
    left, right = st.columns([1, 3])
    left.selectbox(
        "Rating",
        [0, 1, 2, 3, 4, 5],
        index=rec.rating or 0,
        format_func=lambda n: "not rated" if not n else "★" * n,
        key=f"cmp:rate:{key}",
    )
    right.text_area("Note", value=rec.note, key=f"cmp:note:{key}", height=80)
    st.button(
        "Save rating and note",
        key=f"cmp:save:{key}",
        on_click=_save_rating,
        args=(settings.tracking_uri, rec, key),
    )
    if st.session_state.pop(f"cmp:saved:{key}", False):
        st.success("Saved to the MLflow run.")


def _save_rating(tracking_uri: str, rec: RunRecord, key: str) -> None:
    # A callback: runs before the page renders again, so the table shows the new rating.
    stars = st.session_state.get(f"cmp:rate:{key}") or 0
    note = st.session_state.get(f"cmp:note:{key}", rec.note)
    if stars:
        tracking.set_rating(tracking_uri, rec.run_id, int(stars))
    if note != rec.note:
        tracking.set_note(tracking_uri, rec.run_id, note)
    _bump()
    st.session_state[f"cmp:saved:{key}"] = True


def preset_from_run(settings: StudioSettings, rec: RunRecord, name: str) -> Path:
    """Write the run's config as ``<home>/presets/<name>.yaml`` with a source comment."""
    from trainer.config_io import atomic_write_text

    text = tracking.load_run_config(settings.tracking_uri, rec.run_id)
    when = rec.start_time.strftime("%Y-%m-%d %H:%M UTC") if rec.start_time else "?"
    header = f"# Preset '{name}': config of run '{rec.name}' ({rec.run_id}, {when}).\n"
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name).strip("_") or "preset"
    settings.presets_dir.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(settings.presets_dir / f"{safe}.yaml", header + text)


def draft_from_run(settings: StudioSettings, rec: RunRecord) -> dict[str, Any]:
    from trainer.config_io import loads_config

    cfg = loads_config(tracking.load_run_config(settings.tracking_uri, rec.run_id))
    return cfg.model_dump(mode="json")


def render_reuse(settings: StudioSettings, rec: RunRecord) -> None:
    key = rec.run_id[:12]
    left, right = st.columns(2)
    name = left.text_input("Preset name", value=f"from_{rec.name}", key=f"cmp:pname:{key}")
    if left.button("Reuse this config as a preset", key=f"cmp:preset:{key}"):
        try:
            path = preset_from_run(settings, rec, name)
        except OSError as err:  # no config artifact yet (the run is still starting)
            left.error(f"No config logged for this run yet: {err}")
        else:
            left.success(f"Saved preset {path.name}.")
    if right.button("Start a new run from this one", key=f"cmp:draft:{key}"):
        from ui.state import replace_draft

        try:
            replace_draft(draft_from_run(settings, rec))
        except OSError as err:
            right.error(f"No config logged for this run yet: {err}")
            return
        right.success(f"The wizard's draft now holds the config of '{rec.name}'.")
        right.page_link("pages/wizard.py", label="Open the wizard", icon=":material/edit:")


def render_history_hint(settings: StudioSettings) -> None:
    """The wizard's advisor column: "based on N similar runs…" for the current draft. Only for a
    local store that exists (reading it needs no MLflow import); silent otherwise."""
    from advisor.history import recommend_from_history
    from ui.state import validated

    db = tracking.sqlite_path(settings.tracking_uri)
    cfg = validated().config
    if db is None or not db.is_file() or cfg is None:
        return
    insights = recommend_from_history(cfg, past_runs(settings.tracking_uri, _version()))
    if insights:
        with st.container(border=True):
            st.markdown(f"**Based on your past runs** ({insights[0].runs} similar)")
            for insight in insights:
                st.caption(insight.message)


def render_history(tracking_uri: str) -> None:
    """What the advisor learns from these runs for the current draft."""
    from advisor.history import recommend_from_history
    from ui.state import validated

    checked = validated()
    if checked.config is None:
        return
    insights = recommend_from_history(checked.config, past_runs(tracking_uri, _version()))
    for insight in insights:
        st.markdown(f"- {insight.message}")
    if not insights:
        st.caption("No finished runs like the current draft yet.")


def render_mlflow_links(settings: StudioSettings, runs: list[RunRecord]) -> None:
    """'Open in MLflow UI': start (or reuse) a lean local server, then link to the runs."""
    from ui import mlflow_ui

    if st.button("Open in MLflow UI", key="cmp:mlflow"):
        with st.spinner("Starting the MLflow UI (first time: up to half a minute)…"):
            try:
                st.session_state["cmp:mlflow_url"] = mlflow_ui.ensure_server(settings)[0]
            except (OSError, RuntimeError) as err:
                st.error(f"Could not start the MLflow UI: {err}")
    base = st.session_state.get("cmp:mlflow_url")
    if not base:
        return
    cols = st.columns(len(runs) + (len(runs) > 1))
    for col, rec in zip(cols, runs, strict=False):
        col.link_button(rec.name, mlflow_ui.run_url(base, rec.experiment_id, rec.run_id))
    if len(runs) > 1:
        url = mlflow_ui.compare_url(base, [r.experiment_id for r in runs], [r.run_id for r in runs])
        cols[-1].link_button("Compare in MLflow", url)


def render_artifacts(tracking_uri: str, runs: list[RunRecord]) -> None:
    """The adapters each run saved (``lora/`` and ``checkpoints/``)."""
    cols = st.columns(len(runs))
    for col, rec in zip(cols, runs, strict=True):
        files = tracking.lora_artifacts(tracking_uri, rec.run_id)
        col.markdown(f"**{rec.name}**")
        col.caption("\n".join(f"- `{f}`" for f in files) if files else "no adapter saved")
