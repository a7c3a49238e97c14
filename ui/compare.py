"""The compare page's parts, one module each, gathered here for ``pages/compare.py``:

- ``compare_store``: the runs of the store (cached, re-read when a rating changes);
- ``compare_table``: the runs table with its filters, the settings that differ among the runs,
  predicted vs actual time; the two latest finished runs picked on a session's first visit;
- ``compare_diff``: the config diff by wizard step with the advisor's explanations;
- ``compare_curves``: overlaid loss / learning-rate curves, a run one colour in every chart, and
  a note when raw losses nearly coincide (the noise drawn per step, not the change);
- ``compare_samples``: samples side by side, a rating per sample, the two-run slider;
- ``compare_actions``: rating and note, reuse as preset / new run, MLflow UI links, adapters;
- ``compare_history``: what the advisor learns from the runs ("based on N similar runs…");
- ``compare_groups``: the "Sweep" selector, picking a sweep's runs together, the best first;
  ``sweep_form`` (shared with Review): "queue variants of this run".
- ``compare_best``: a run's best checkpoint by validation loss and "Make this the final LoRA".

Everything is read through ``trainer.tracking`` (the one package that knows the MLflow layout).
Every part names a run by ``run_labels`` (``trainer.tracking.run_names``): its name, plus its short
id where several picked runs share that name.
"""

from __future__ import annotations

from trainer.settings import StudioSettings
from trainer.tracking.records import RunRecord
from trainer.tracking.run_names import run_labels
from ui import compare_actions, compare_table
from ui.compare_actions import (
    draft_from_run,
    preset_from_run,
    render_artifacts,
    render_mlflow_links,
    render_rating,
)
from ui.compare_best import render_best_checkpoint
from ui.compare_curves import CURVE_KEYS, curve_frame, render_curves
from ui.compare_diff import diff_rows, render_diff
from ui.compare_groups import render_sweep_picker
from ui.compare_history import calibration_text, render_history, render_history_hint
from ui.compare_samples import render_samples
from ui.compare_store import bump, load_runs, past_runs, version
from ui.compare_table import ANY, dataset_labels, filter_runs, label, render_filters, table_rows
from ui.sweep_form import render_run_variants

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


def render_table(records: list[RunRecord]) -> list[RunRecord]:
    """The "Sweep" selector (when some runs were queued as one group), then the runs table and
    the runs picked to compare (a chosen sweep's runs, the best first)."""
    sweep = render_sweep_picker(records)
    return compare_table.render_table(records, sweep_runs=len(sweep))


def render_reuse(settings: StudioSettings, rec: RunRecord) -> None:
    """The run's best checkpoint (make it the final LoRA), then reuse the run's config (as a
    preset, as the draft) or queue variants of it."""
    render_best_checkpoint(settings, rec)
    compare_actions.render_reuse(settings, rec)
    render_run_variants(settings, rec)
