"""The sidebar's active-run panel: what is training now, how far it is, and a Stop button; under
it, while the training queue has work, one line on the queue (how many wait, which is next, which
is starting) and a link to the Monitor, where the queue panel is.

Cheap on every page: it reads job, progress and queue files only (no MLflow). While a run is active
or the queue has work the panel refreshes itself every few seconds as a fragment.
"""

from __future__ import annotations

import time

import streamlit as st

from trainer.jobs.active import ActiveJob, active_jobs
from trainer.jobs.queue import QueueEntry, entries, queue_file
from trainer.settings import StudioSettings, load_settings
from trainer.tracking.progress import TERMINAL_PHASES
from ui.jobs import MONITOR_PAGE, stop_job
from ui.monitor_progress import PHASE_LABELS, eta_text, phase_line
from ui.run_end_notice import announce_ended_runs
from ui.text import plain_line

REFRESH = "3s"


def render_job(settings: StudioSettings, job: ActiveJob) -> None:
    """One active run: name, phase, progress bar, ETA, Stop and a link to its monitor."""
    icon, label = PHASE_LABELS.get(job.phase, (":material/pending:", job.phase))
    step, total = job.progress.get("step"), job.progress.get("total_steps")
    ended = job.phase in TERMINAL_PHASES  # the process is only closing its MLflow run
    now = time.time()
    st.markdown(f"**{plain_line(job.name)}** — {icon} {label}")  # a teammate's name: text
    text = phase_line(job.phase, job.progress, now, job.started) if not ended else label
    if total:
        text = f"step {step or 0} / {total} · {text}"
    eta, _ = eta_text(job.progress, running=not ended, finished=job.phase == "finished", now=now)
    if not ended and eta != "—":
        text += f" · ETA {eta}"
    st.progress(job.fraction, text=text)
    left, right = st.columns(2)
    left.page_link(
        MONITOR_PAGE,
        label="Monitor",
        icon=":material/monitoring:",
        query_params={"run": job.run_id},
    )
    if ended:
        right.caption(":material/hourglass_bottom: closing…")
    elif job.stop_requested:
        right.caption(":material/stop_circle: stopping…")
    elif right.button(
        "Stop",
        icon=":material/stop_circle:",
        key=f"sidebar_stop_{job.run_id}",
        help="Checkpoint and stop",
    ):
        stop_job(job.run_id, settings=settings)
        st.toast(f"Stopping {plain_line(job.name)}: it saves a checkpoint first.")
        st.rerun(scope="fragment")


def queue_work(settings: StudioSettings) -> list[QueueEntry]:
    """The queue's waiting and running entries, in order; [] without a queue file (nothing is
    created: the sidebar only looks)."""
    if not queue_file(settings).exists():
        return []
    return [entry for entry in entries(settings) if entry.active]


def queue_summary(work: list[QueueEntry], training: set[str]) -> str | None:
    """ "Queue: starting a · 2 waiting · next: b": the queue's state in a line, or None when it
    has nothing to say beyond the runs shown above (``training``: their run ids)."""
    starting = [e for e in work if e.state == "running" and e.run_id not in training]
    waiting = [e for e in work if e.state == "queued"]
    parts = [f"starting **{plain_line(e.name)}**" for e in starting[:1]]
    if waiting:
        parts.append(f"{len(waiting)} waiting · next: **{plain_line(waiting[0].name)}**")
    return "Queue: " + " · ".join(parts) if parts else None


def render_queue_state(settings: StudioSettings, active: list[ActiveJob]) -> bool:
    """The queue's line and a link to its panel on the Monitor; False when there is none."""
    line = queue_summary(queue_work(settings), {job.run_id for job in active})
    if line is None:
        return False
    st.markdown(f":material/queue: {line}")
    st.page_link(MONITOR_PAGE, label="The queue (Monitor)", icon=":material/monitoring:")
    return True


def _panel(settings: StudioSettings) -> None:
    active = active_jobs(settings)
    announce_ended_runs(settings, active)  # a toast and the tab title when a run ends
    for job in active:
        render_job(settings, job)
    queued = render_queue_state(settings, active)
    if not active and not queued:
        st.caption("No run is training now.")


def render_active_runs(settings: StudioSettings | None = None) -> None:
    """The router calls this once per page: the panel, live while a run is active or the queue
    has work (a queued run starts without the page knowing)."""
    settings = settings or load_settings()
    live = bool(active_jobs(settings)) or bool(queue_work(settings))
    with st.sidebar:
        st.markdown("#### Active run")
        st.fragment(_panel, run_every=REFRESH if live else None)(settings)
