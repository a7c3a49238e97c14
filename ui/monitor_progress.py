"""The monitor's progress part: what the run is doing now, in words, and the time left.

The trainer writes each phase's own progress to progress.json (trainer.tracking.progress:
``phase_started``, ``phase_done`` of ``phase_total``, ``phase_detail``) and an ETA that includes
the previews and saves still due (trainer.engine.eta). ``phase_line`` words it ("Making baseline
previews: image 2 of 3", "Loading the base model (18 s)"); ``eta_text`` counts the ETA down
between the trainer's writes, so it never sits at "0 s" while previews or saves are still made.
Before the trainer has measured a step it counts the advisor's prediction for the whole run
(recorded at launch) down from the launch, and says "overdue" once that is spent.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

import streamlit as st

from advisor.cpu_load import BUSY_LOAD_PER_CORE, load_average
from trainer.durations import format_duration
from trainer.jobs.active import progress_fraction
from trainer.tracking.progress import TERMINAL_PHASES
from ui.monitor_view import RunView
from ui.text import plain_line

PHASE_LABELS = {  # Material icons: emoji show as empty boxes without an emoji font
    "starting": (":material/rocket_launch:", "Starting the trainer"),
    "queued": (":material/schedule:", "Queued"),
    "loading": (":material/hourglass_top:", "Loading the model"),
    "caching": (":material/database:", "Caching latents and text embeddings"),
    "training": (":material/fitness_center:", "Training"),
    "sampling": (":material/image:", "Generating sample images"),
    "saving": (":material/save:", "Saving the LoRA and a checkpoint"),
    "stopping": (":material/stop_circle:", "Stopping"),
    "finished": (":material/check_circle:", "Finished"),
    "failed": (":material/error:", "Failed"),
    "killed": (":material/stop_circle:", "Stopped"),
}
SPEED_NOTE_RATIO = 1.5  # steps this much slower (or faster) than predicted get a word of why
FLOW = ("loading", "caching", "training", "sampling", "saving", "finished")


def phase_line(
    phase: str, progress: Mapping[str, Any], now: float, launched: float | None = None
) -> str:
    """What the trainer is doing now, with the phase's own progress (``launched``: when the
    trainer process was started, for the time before it reports in)."""
    done, of = progress.get("phase_done") or 0, progress.get("phase_total")
    detail = progress.get("phase_detail")
    since = _since(progress.get("phase_started"), now)
    if phase in ("starting", "queued"):
        return f"Starting the trainer{_since(launched, now)}"
    if phase == "loading":
        return f"Loading {detail or 'the base model'}{since}"
    if phase == "caching":
        what = detail or "latents and text embeddings"
        return f"Caching {what}: {done} of {of}" if of else f"Caching {what}{since}"
    if phase == "sampling":
        step = progress.get("step") or 0
        which = "baseline previews (before training)" if step == 0 else f"previews at step {step}"
        return f"Making {which}: image {min(done + 1, of)} of {of}" if of else f"Making {which}"
    if phase == "saving":
        count = f" (file {min(done + 1, of)} of {of})" if of else ""
        return f"Saving {detail or 'the LoRA and a checkpoint'}{count}"
    if phase == "stopping":
        return "Stopping: the trainer saves a checkpoint after the current step"
    return PHASE_LABELS.get(phase, ("", phase))[1]


def _since(started: float | None, now: float) -> str:
    return f" ({format_duration(max(0.0, now - started))})" if started else ""


def eta_text(
    progress: Mapping[str, Any],
    *,
    running: bool,
    finished: bool,
    now: float,
    predicted_s_per_step: float | None = None,
    total: int | None = None,
    predicted_total_s: float | None = None,
    launched: float | None = None,
) -> tuple[str, str]:
    """The ETA metric's value and its help text: the trainer's measured ETA, else the advisor's
    prediction for the whole run (``predicted_total_s``) less the time since ``launched``."""
    if finished:
        return "done", "The run has finished."
    if not running:
        return "—", "The run is not training."
    eta = progress.get("eta_s")
    if eta is not None:  # counted down from the trainer's last write
        left = eta - max(0.0, now - (progress.get("updated") or now))
        help_ = "Time left at the measured speed, the previews and saves still due included."
        return (format_duration(left) if left >= 1 else "any moment"), help_
    if predicted_total_s and launched:
        return _predicted_eta(progress, now, predicted_total_s, launched, predicted_s_per_step)
    if predicted_s_per_step and total:  # no whole-run prediction: the steps' alone misleads
        steps = format_duration(predicted_s_per_step * total)
        return "—", (
            f"Measured after the first training steps. The advisor predicted {steps} for the "
            "training steps alone (loading, previews and saves not included)."
        )
    return "—", "Measured after the first training steps."


def _predicted_eta(
    progress: Mapping[str, Any],
    now: float,
    predicted_total_s: float,
    launched: float,
    predicted_s_per_step: float | None,
) -> tuple[str, str]:
    """The whole run's prediction counted down since launch (a resumed run's steps trained
    before it was relaunched are not due again)."""
    elapsed = max(0.0, now - launched)
    trained = (progress.get("step") or 0) * (predicted_s_per_step or 0.0)
    left = max(0.0, predicted_total_s - trained) - elapsed
    whole = format_duration(predicted_total_s)
    if left < 1:
        return "overdue", (  # short: a metric is cut to its column ("longer th…")
            f"The advisor predicted {whole} for the whole run at launch; "
            f"{format_duration(elapsed)} have passed. The measured ETA shows after the first "
            "training steps."
        )
    return f"≈ {format_duration(left)}", (
        f"Predicted, not measured yet: the advisor's {whole} for the whole run (starting, "
        "loading, caching, training, previews and saves) counted down since launch. The "
        "measured ETA replaces it after the first training steps."
    )


def render_progress(view: RunView) -> None:
    """The progress bar with the phase line, the phase flow and the headline numbers."""
    p, now = view.progress, time.time()
    step, total = p.get("step") or 0, view.total_steps
    launched = view.job.started if view.job else None
    line = phase_line(view.phase, p, now, launched) if view.running else ""
    line = line or PHASE_LABELS.get(view.phase, ("", view.phase))[1]
    text = f"Step {step} / {total} · {line}" if total else line
    st.progress(progress_fraction(p), text=plain_line(text))  # details name files and models
    flow = " → ".join(f"**{name}**" if name == view.phase else name for name in FLOW)
    st.caption(f"Phases: {flow}")
    cols = st.columns(5)
    cols[0].metric("Step", f"{step} / {total or '?'}")
    eta, eta_help = eta_text(
        p,
        running=view.running,
        finished=view.phase == "finished",
        now=now,
        predicted_s_per_step=view.predicted_s_per_step,
        total=total,
        predicted_total_s=view.predicted_total_s,
        launched=launched,
    )
    predicted = view.running and p.get("eta_s") is None and eta != "—"
    cols[1].metric("ETA (predicted)" if predicted else "ETA", eta, help=eta_help)
    ended_at = (view.exit or {}).get("ended") or p.get("updated")
    elapsed = training_time(p, view.running, launched, ended_at, now)
    cols[2].metric(
        "Elapsed",
        format_duration(elapsed),
        help="Time the run has trained, all its launches together (a stop's pause left out).",
    )
    _render_speed(cols[3], p.get("s_per_step"), view.predicted_s_per_step)
    loss = p.get("loss_smoothed") or p.get("loss")
    cols[4].metric("Loss (smoothed)", f"{loss:.4f}" if loss is not None else "—")
    note = speed_note(p.get("s_per_step"), view.predicted_s_per_step, load_per_core())
    if note and view.running:
        st.caption(note)


def training_time(
    progress: Mapping[str, Any],
    running: bool,
    launched: float | None,
    ended_at: float | None,
    now: float,
) -> float | None:
    """Seconds trained over all launches: the trainer's own count once it ended the run, else
    the launches before this one (``active_s``, carried) plus this one's time so far."""
    before = progress.get("active_s")
    if not running and before is not None and progress.get("phase") in TERMINAL_PHASES:
        return before  # written at the end, this launch included
    if not launched:
        return None
    return (before or 0.0) + max(0.0, (now if running else ended_at or now) - launched)


def load_per_core() -> float | None:
    """The 1-minute load average per core, None where the system has none."""
    load = load_average()
    return load / (os.cpu_count() or 1) if load is not None else None


def speed_note(measured: float | None, predicted: float | None, load: float | None) -> str:
    """Why the steps run far from the advisor's prediction, in words; "" when they run near it
    (within SPEED_NOTE_RATIO either way) or either number is missing."""
    if not measured or not predicted:
        return ""
    ratio = measured / predicted
    if 1 / SPEED_NOTE_RATIO < ratio < SPEED_NOTE_RATIO:
        return ""
    said = f"Steps take {ratio:.1f}× the {predicted:.3g} s the advisor predicted at launch"
    if ratio < 1:
        return f"{said}: faster than predicted, so the run ends sooner."
    if load is not None and load >= BUSY_LOAD_PER_CORE:
        return (
            f"{said}. The machine is busy (load {load:.1f} per core): other processes share its "
            "cores. The ETA uses the measured speed."
        )
    return (
        f"{said}. The advisor's formulas assume a quiet machine and learn from this machine's "
        "finished runs, so the next prediction for a run like this one comes closer. The ETA "
        "uses the measured speed."
    )


def _render_speed(col: Any, measured: float | None, predicted: float | None) -> None:
    value = f"{measured:.3f} s" if measured else "—"
    if measured and predicted:
        change = (measured - predicted) / predicted * 100
        col.metric(
            "s / step",
            value,
            delta=f"{change:+.0f}%",  # short: a metric's delta is cut to the column's width
            delta_color="inverse",
            delta_description="vs predicted",
            help=(
                f"Measured seconds per step against the advisor's prediction at launch: "
                f"{predicted:.3g} s per step."
            ),
        )
    else:
        col.metric("s / step", value, help="No prediction from the advisor for this run.")
