"""The browser's side of a run's end: a toast on whatever studio page is open, and the tab title
showing the status ("✓ my_lora finished — LoRA Studio"), once per browser session.

The sidebar's active-run panel (``ui.sidebar``, a fragment that reruns every few seconds while a
run trains) hands its active runs to ``announce_ended_runs`` on every rerun. This session
remembers the runs it saw training; when one stops training (its progress says finished, failed
or killed, or its trainer is gone) one toast says so and the tab title shows it until another run
trains. The message to the notification URL is the trainer's own (``trainer.notify``), sent with
or without a browser.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import streamlit as st

from trainer.jobs.active import ActiveJob
from trainer.jobs.folder import LaunchRefused, job_folder
from trainer.notify import APP_NAME, PHASE_STATUS, STATUS_WORDS, run_end_title
from trainer.settings import StudioSettings
from trainer.tracking.progress import TERMINAL_PHASES, read_progress
from ui.text import plain_line

STATE_KEY = "run_end_notice"
ENDED = "ENDED"  # a trainer gone without saying how the run ended (SIGKILL, out of memory)
TOAST_ICONS = {
    "FINISHED": ":material/check_circle:",
    "FAILED": ":material/error:",
    "KILLED": ":material/stop_circle:",
    ENDED: ":material/warning:",
}


@dataclass
class NoticeState:
    """What this browser session knows: the runs it saw training, and the tab title to keep."""

    watching: dict[str, str] = field(default_factory=dict)  # run id -> name
    title: str | None = None


def _state() -> NoticeState:
    if not isinstance(st.session_state.get(STATE_KEY), NoticeState):
        st.session_state[STATE_KEY] = NoticeState()
    return st.session_state[STATE_KEY]


def ended_status(settings: StudioSettings, run_id: str) -> str:
    """FINISHED, FAILED or KILLED from the job's progress file; ENDED when it does not say."""
    try:
        progress = read_progress(job_folder(settings, run_id)) or {}
    except LaunchRefused:  # not a run id: nothing to read
        return ENDED
    return PHASE_STATUS.get(str(progress.get("phase")), ENDED)


def announce_ended_runs(settings: StudioSettings, active: Iterable[ActiveJob]) -> list[str]:
    """Toast each run this session saw training that has ended since (once), and keep the tab
    title on the last one's status. Returns the run ids announced now."""
    notice = _state()
    ended_now: dict[str, str] = {}
    still_training: set[str] = set()
    for job in active:
        if job.phase in TERMINAL_PHASES:
            if job.run_id in notice.watching:  # the trainer is closing its MLflow run
                ended_now[job.run_id] = PHASE_STATUS[job.phase]
            continue
        still_training.add(job.run_id)
        if job.run_id not in notice.watching:
            notice.watching[job.run_id] = job.name
            if notice.title:  # a new run trains: the last one's status is old news
                notice.title = None
                st.set_page_config(page_title=APP_NAME)
    for run_id in set(notice.watching) - still_training - set(ended_now):
        ended_now[run_id] = ended_status(settings, run_id)
    for run_id, status in ended_now.items():
        name = notice.watching.pop(run_id)
        _mark, word = STATUS_WORDS.get(status, ("•", "ended"))  # the icon marks it here
        st.toast(
            f"**{plain_line(name)}** {word}",
            icon=TOAST_ICONS.get(status, TOAST_ICONS[ENDED]),
            duration="long",
        )
        notice.title = run_end_title(name, status)
    if notice.title:
        st.set_page_config(page_title=notice.title)
    return list(ended_now)
