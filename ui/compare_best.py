"""Compare's part of the best checkpoint: for a run whose trainer tagged a best checkpoint by
validation loss (``studio.best_step``, ``studio.best_val_loss``: ``trainer.engine.validation``),
the checkpoint and "Make this the final LoRA", drawn as the Monitor draws them
(``ui.monitor_validation.render_best``). A swap re-reads the store's runs (``compare_store.bump``)
so the table and the next visit see the new ``studio.final_from_step``.
"""

from __future__ import annotations

from trainer.settings import StudioSettings
from trainer.tracking.layout import TAG_FINAL_FROM_STEP
from trainer.tracking.records import RunRecord
from ui.compare_store import bump
from ui.compare_table import steps_of
from ui.monitor_validation import render_best, tagged_best


def final_step_of(rec: RunRecord) -> int | None:
    """The step the run's final LoRA is from: the checkpoint made final, else the last step."""
    made = rec.tags.get(TAG_FINAL_FROM_STEP, "")
    return int(made) if made.isdigit() else steps_of(rec)


def render_best_checkpoint(settings: StudioSettings, rec: RunRecord) -> None:
    """The run's best checkpoint and "Make this the final LoRA" (nothing for a run without
    validation images, or whose LoRAs were not scored yet)."""
    best = tagged_best(rec.tags)
    if best is None:
        return
    swap = render_best(
        settings,
        rec.run_id,
        best,
        final_step=final_step_of(rec),
        finished=rec.status == "FINISHED",
        key=f"cmp:make_final:{rec.run_id[:12]}:{best[0]}",
    )
    if swap is not None:
        bump()
