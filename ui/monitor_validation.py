"""The Monitor's validation part: the best checkpoint by validation loss, "Make this the final
LoRA" (``render_best``, shared with Compare: ``ui.compare_best``), and the advisor's overfitting
warning.

The validation loss itself is drawn on the Monitor's loss chart (``ui.monitor.render_charts``,
series "validation"); ``mark_best`` adds a rule at the best checkpoint's step to that chart. The
trainer logs the metric ``val_loss`` and tags the best saved LoRA (``trainer.engine.validation``);
``trainer.lora.final.make_final`` does the swap; ``advisor.overfitting`` says when to stop.
"""

from __future__ import annotations

import re
from typing import Any

import streamlit as st

from advisor.overfitting import best_checkpoint, overfitting, points
from trainer.lora.final import FinalSwap, MakeFinalError, make_final
from trainer.redaction import redact_text
from trainer.settings import StudioSettings
from trainer.tracking.artifacts import lora_artifacts
from trainer.tracking.layout import (
    METRIC_VAL_LOSS,
    TAG_BEST_STEP,
    TAG_BEST_VAL_LOSS,
    TAG_FINAL_FROM_STEP,
)
from trainer.tracking.records import metric_history
from ui.monitor_view import RunView
from ui.store_errors import store_boundary
from ui.text import code, plain

_CHECKPOINT = re.compile(r"^checkpoints/step_(\d+)/")


@st.cache_data(show_spinner=False, max_entries=64)
def _val_history(uri: str, run_id: str, marker: Any) -> list[tuple[int, float]]:
    return points(metric_history(uri, run_id, [METRIC_VAL_LOSS]).get(METRIC_VAL_LOSS, []))


@st.cache_data(show_spinner=False, max_entries=64)
def _saved_steps(uri: str, run_id: str, marker: Any) -> set[int]:
    found = (_CHECKPOINT.match(path) for path in lora_artifacts(uri, run_id))
    return {int(match[1]) for match in found if match}


def _marker(view: RunView) -> tuple:
    # Re-read when the step or the run's status changes; an ended run is read once.
    return (view.status, view.progress.get("step"), view.progress.get("phase"))


def tagged_best(tags: dict[str, str]) -> tuple[int, float] | None:
    """The best saved LoRA the trainer tagged: (step, validation loss)."""
    try:
        return int(tags[TAG_BEST_STEP]), float(tags[TAG_BEST_VAL_LOSS])
    except (KeyError, ValueError):
        return None


def best_of(settings: StudioSettings, view: RunView) -> tuple[int, float] | None:
    history = _val_history(settings.tracking_uri, view.run_id, _marker(view))
    if not history:
        return None
    return tagged_best(view.tags) or best_checkpoint(history)


def mark_best(chart: Any, settings: StudioSettings, view: RunView) -> Any:
    """``chart`` with a dotted rule at the best checkpoint's step (unchanged without one)."""
    import altair as alt  # ~0.3 s: only where charts are drawn
    import pandas as pd  # ~0.75 s: likewise

    best = best_of(settings, view)
    if best is None:
        return chart
    frame = pd.DataFrame([{"step": best[0], "label": f"best checkpoint (step {best[0]})"}])
    rule = (
        alt.Chart(frame)
        .mark_rule(strokeDash=[2, 2], color="#2ca02c")
        .encode(x="step:Q", tooltip=["label"])
    )
    return alt.layer(chart, rule)


def render_validation(settings: StudioSettings, view: RunView) -> None:
    """Best checkpoint, "Make this the final LoRA" and the overfitting warning (nothing for a run
    without validation images)."""
    with store_boundary():
        history = _val_history(settings.tracking_uri, view.run_id, _marker(view))
        saved = (
            _saved_steps(settings.tracking_uri, view.run_id, _marker(view)) if history else set()
        )
    if not history:
        return
    best = tagged_best(view.tags) or best_checkpoint(history, saved or None)
    finding = overfitting(history, saved or None)
    with st.container(border=True, key=f"validation_{view.run_id}"):
        if finding is not None:
            st.warning(plain(finding.message), icon=":material/trending_up:")
        if best is None:
            st.caption("The best checkpoint is marked once a LoRA with a validation loss is saved.")
            return
        render_best(
            settings,
            view.run_id,
            best,
            final_step=int(view.tags.get(TAG_FINAL_FROM_STEP) or history[-1][0]),
            finished=view.status == "FINISHED" and not view.alive,
            key=f"make_final_{view.run_id}_{best[0]}",
            note=still_falling(history, best),
        )


MEANINGFUL_FALL = 1.0  # % of the first evaluation's loss: below it the curve is flat (noise)


def still_falling(history: list[tuple[int, float]], best: tuple[int, float]) -> str | None:
    """When the best saved LoRA is the last evaluation and the loss fell into it: the figures
    and what they suggest, else None. The best being the last checkpoint means the validation
    loss had not turned up yet, not that the run found its minimum; and a fall under
    ``MEANINGFUL_FALL`` percent from the first evaluation is noise, not a reason to train longer."""
    if len(history) < 2 or best[0] != history[-1][0] or history[-1][1] >= history[-2][1]:
        return None
    (first_step, first), (last_step, last) = history[0], history[-1]
    decimals = next((d for d in range(4, 9) if f"{first:.{d}f}" != f"{last:.{d}f}"), 9)
    drop = (first - last) / first * 100 if first > 0 else 0.0
    figures = (
        f"{first:.{decimals}f} at step {first_step} → {last:.{decimals}f} at step {last_step}, "
        f"{drop:.2g}% lower"
    )
    if drop < MEANINGFUL_FALL:
        return (
            f"Validation loss barely moved ({figures}): this run's length is not what limits "
            "it; look at the samples."
        )
    return (
        f"Validation loss was still falling when the run ended ({figures}), so training longer "
        "might help."
    )


def render_best(
    settings: StudioSettings,
    run_id: str,
    best: tuple[int, float],
    *,
    final_step: int | None,
    finished: bool,
    key: str,
    note: str | None = None,
) -> FinalSwap | None:
    """The best checkpoint's line and "Make this the final LoRA" (Monitor and Compare):
    ``final_step``, the step the final LoRA is from; ``note``, a line shown once the run has
    finished (``still_falling``); the swap, when the button made one."""
    step, value = best
    left, right = st.columns([3, 2], vertical_alignment="center")
    left.markdown(f"**Best checkpoint:** step {step} · validation loss {value:.4f}")
    if finished and note:
        left.caption(note)
    if not finished:
        left.caption("Once the run has finished, this checkpoint can become the final LoRA.")
    elif final_step == step:
        left.caption("The final LoRA is this checkpoint.")
    elif right.button(
        "Make this the final LoRA",
        icon=":material/verified:",
        key=key,
        help="Copies this checkpoint's LoRA over the final one and writes its model card and "
        "scripts again; the final it replaces is kept, renamed, in outputs/.",
    ):
        return make_final_now(settings, run_id, step)
    return None


def make_final_now(settings: StudioSettings, run_id: str, step: int) -> FinalSwap | None:
    """``make_final`` with its outcome on the page: success, or the reason it was refused."""
    try:
        with store_boundary():
            swap = make_final(settings, run_id, step)
    except MakeFinalError as err:
        st.error(plain(redact_text(str(err))), icon=":material/error:")
        return None
    kept = f" The previous final is kept as {code(swap.kept)}." if swap.kept else ""
    st.success(f"The final LoRA is now the checkpoint of step {step}.{kept}")
    st.toast(f"Final LoRA: step {step}")
    return swap
