"""Per-run actions on the compare page: rating and note, reuse as a preset or as the wizard's
draft, links into the MLflow UI, and the adapters each run saved (its checkpoints in one line)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import streamlit as st

from trainer.config.io import loads_config
from trainer.files import atomic_write_text
from trainer.settings import StudioSettings
from trainer.tracking.artifacts import load_run_config, lora_artifacts
from trainer.tracking.layout import LORA_DIRS
from trainer.tracking.ratings import set_note, set_rating
from trainer.tracking.records import RunRecord
from trainer.tracking.run_names import run_labels
from ui import mlflow_links
from ui.compare_store import bump
from ui.preflight import recommend_again_if_kept
from ui.state import replace_draft
from ui.text import code, plain, plain_line


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
        set_rating(tracking_uri, rec.run_id, int(stars))
    if note != rec.note:
        set_note(tracking_uri, rec.run_id, note)
    bump()
    st.session_state[f"cmp:saved:{key}"] = True


def preset_from_run(settings: StudioSettings, rec: RunRecord, name: str) -> Path:
    """Write the run's config as ``<home>/presets/<name>.yaml`` with a source comment."""
    text = load_run_config(settings.tracking_uri, rec.run_id)
    when = rec.start_time.strftime("%Y-%m-%d %H:%M UTC") if rec.start_time else "?"
    header = f"# Preset '{name}': config of run '{rec.name}' ({rec.run_id}, {when}).\n"
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name).strip("_") or "preset"
    settings.presets_dir.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(settings.presets_dir / f"{safe}.yaml", header + text)


def draft_from_run(settings: StudioSettings, rec: RunRecord) -> dict[str, Any]:
    cfg = loads_config(load_run_config(settings.tracking_uri, rec.run_id))
    return cfg.model_dump(mode="json")


def render_reuse(settings: StudioSettings, rec: RunRecord) -> None:
    key = rec.run_id[:12]
    left, right = st.columns(2)
    name = left.text_input("Preset name", value=f"from_{rec.name}", key=f"cmp:pname:{key}")
    if left.button("Reuse this config as a preset", key=f"cmp:preset:{key}"):
        try:
            path = preset_from_run(settings, rec, name)
        except OSError as err:  # no config artifact yet (the run is still starting)
            left.error(f"No config logged for this run yet: {plain(err)}")
        else:
            left.success(f"Saved preset {code(path.name)}.")
    if right.button("Start a new run from this one", key=f"cmp:draft:{key}"):
        try:
            replace_draft(draft_from_run(settings, rec))
        except OSError as err:
            right.error(f"No config logged for this run yet: {plain(err)}")
            return
        recommend_again_if_kept()  # for this run's model, data and intent
        right.success(
            f"The wizard's draft now holds the config of {code(rec.name)}. Your previous draft "
            "comes back with **Undo last change** in the wizard."
        )
        right.page_link("pages/wizard.py", label="Open the wizard", icon=":material/edit:")


def render_mlflow_links(settings: StudioSettings, runs: list[RunRecord]) -> None:
    """'Open in MLflow UI' for the picked runs and their comparison."""
    labels = {run_id: plain_line(label) for run_id, label in run_labels(runs).items()}
    mlflow_links.render_mlflow_links(settings, runs, labels, key="cmp")  # labels: markdown


_CHECKPOINTS = LORA_DIRS[1]  # "checkpoints": one folder per saved step, step_<n>
_CHECKPOINT_STEP = re.compile(r"step_(\d+)$")


def adapter_lines(files: list[str]) -> list[str]:
    """What the artifacts list shows for a run: each final LoRA file (``lora/...``) as a path,
    and every checkpoint logged to MLflow (kept there when the job folder rotated them away, so
    there can be dozens) summed up in one line, a checkpoint being one ``checkpoints/<folder>``."""
    finals = [f for f in files if not f.startswith(f"{_CHECKPOINTS}/")]
    folders = {f.split("/")[1] for f in files if f.startswith(f"{_CHECKPOINTS}/")}
    lines = [f"- {code(f)}" for f in finals]
    if folders:
        steps = sorted(int(m[1]) for m in map(_CHECKPOINT_STEP.match, folders) if m)
        count = f"{len(folders)} checkpoint{'s' if len(folders) > 1 else ''}"
        if len(steps) > 1:
            where = f" (steps {steps[0]}\u2013{steps[-1]})"
        else:
            where = f" (step {steps[0]})" if steps else ""
        lines.append(f"- {count} in MLflow under {code(_CHECKPOINTS + '/')}{where}")
    return lines


def render_artifacts(tracking_uri: str, runs: list[RunRecord]) -> None:
    """The final LoRA each run saved, file by file, and its checkpoints in one line."""
    cols, labels = st.columns(len(runs)), run_labels(runs)
    for col, rec in zip(cols, runs, strict=True):
        lines = adapter_lines(lora_artifacts(tracking_uri, rec.run_id))
        col.markdown(f"**{plain_line(labels[rec.run_id])}**")
        col.caption("\n".join(lines) if lines else "no adapter saved")
