"""The compare page's parts, one module each, gathered here for ``pages/compare.py``:

- ``compare_store``: the runs of the store (cached, re-read when a rating changes);
- ``compare_table``: the runs table with its filters, the settings that differ among the runs,
  predicted vs actual time; the two latest finished runs picked on a session's first visit;
- ``compare_diff``: the config diff by wizard step with the advisor's explanations;
- ``compare_curves``: overlaid loss / learning-rate curves, a run one colour in every chart, and
  a note when raw losses nearly coincide (the noise drawn per step, not the change);
- ``compare_samples``: samples side by side, a rating per sample, the two-run slider;
- ``compare_actions``: rating and note, reuse as preset / new run, MLflow UI links, adapters;
- ``compare_history``: what the advisor learns from the runs ("based on N similar runs…").

Everything is read through ``trainer.tracking`` (the one package that knows the MLflow layout).
Every part names a run by ``run_labels`` (``trainer.tracking.run_names``): its name, plus its short
id where several picked runs share that name.
"""

from __future__ import annotations

from trainer.tracking.run_names import run_labels
from ui.compare_actions import (
    draft_from_run,
    preset_from_run,
    render_artifacts,
    render_mlflow_links,
    render_rating,
    render_reuse,
)
from ui.compare_curves import CURVE_KEYS, curve_frame, render_curves
from ui.compare_diff import diff_rows, render_diff
from ui.compare_history import calibration_text, render_history, render_history_hint
from ui.compare_samples import render_samples
from ui.compare_store import bump, load_runs, past_runs, version
from ui.compare_table import (
    ANY,
    dataset_labels,
    filter_runs,
    label,
    render_filters,
    render_table,
    table_rows,
)

__all__ = [
    "ANY",
    "CURVE_KEYS",
    "bump",
    "calibration_text",
    "curve_frame",
    "dataset_labels",
    "diff_rows",
    "draft_from_run",
    "filter_runs",
    "label",
    "load_runs",
    "past_runs",
    "preset_from_run",
    "render_artifacts",
    "render_curves",
    "render_diff",
    "render_filters",
    "render_history",
    "render_history_hint",
    "render_mlflow_links",
    "render_rating",
    "render_reuse",
    "render_samples",
    "render_table",
    "run_labels",
    "table_rows",
    "version",
]
