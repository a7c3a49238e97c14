"""The browser's side of a run's end: a toast on whatever studio page is open, and the tab title
showing the newest run ("▶ my_lora 40% — LoRA Studio" while it trains, "✓ my_lora finished — LoRA
Studio" once it ended), once per browser session.

The sidebar's active-run panel (``ui.sidebar``, a fragment that reruns every few seconds while a
run trains or the queue has work) calls ``announce_ended_runs`` on every rerun. Ended runs are
read from the job folders, not only from runs this session saw training: a run the queue runner
started and that ended between two reruns (or while nothing reran) is announced all the same.
Every run whose end (its progress's last word, or its exit file) came after the session's first
look is toasted once per launch; a run this session saw training whose trainer vanished without a
word is toasted too. The message to the notification URL is the trainer's own
(``trainer.notify``), sent with or without a browser.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import streamlit as st

from trainer.jobs.active import ActiveJob
from trainer.jobs.folder import EXIT_FILE, LaunchRefused, job_folder, read_exit
from trainer.notify import APP_NAME, PHASE_STATUS, STATUS_WORDS, run_end_title, without_secrets
from trainer.settings import StudioSettings
from trainer.tracking.job_file import JOB_FILE, read_job
from trainer.tracking.progress import PROGRESS_FILE, TERMINAL_PHASES, read_progress
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
    """What this browser session knows: since when it looks, the runs it saw training, the
    launches whose end it announced, and the tab title to keep."""

    since: float = field(default_factory=time.time)  # runs ending after this are announced
    watching: dict[str, tuple[str, float]] = field(default_factory=dict)  # id -> name, launched
    announced: set[str] = field(default_factory=set)  # "<run id>@<launch time>"
    title: str | None = None  # the last end announced: "✓ my_lora finished — LoRA Studio"
    shown: str | None = None  # the tab title set on the last rerun


@dataclass(frozen=True)
class EndedRun:
    """A launch of a run that has ended: its name, status and when it ended."""

    run_id: str
    name: str
    status: str  # FINISHED, FAILED, KILLED or ENDED
    ended: float
    launched: float

    @property
    def key(self) -> str:
        return f"{self.run_id}@{self.launched}"


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


def _changed_since(path: Path, since: float) -> bool:
    try:
        return path.stat().st_mtime >= since - 1  # a coarse file clock: a second's slack
    except OSError:
        return False


def ended_runs(settings: StudioSettings, since: float) -> list[EndedRun]:
    """Launches that ended at ``since`` or later, by the job folders: their progress says
    finished, failed or stopped, or their exit file says the trainer exited. Oldest end first.
    Only files written since then are read, so the check stays cheap with many old runs."""
    found: list[EndedRun] = []
    if not settings.jobs_dir.is_dir():
        return found
    for job_file in settings.jobs_dir.glob(f"*/{JOB_FILE}"):
        folder = job_file.parent
        if not (
            _changed_since(folder / PROGRESS_FILE, since)
            or _changed_since(folder / EXIT_FILE, since)
        ):
            continue
        progress = read_progress(folder) or {}
        status = PHASE_STATUS.get(str(progress.get("phase")))
        ended = progress.get("updated") if status else None
        if ended is None:
            exited = read_exit(folder) or {}
            ended, status = exited.get("ended"), status or ENDED
        if not isinstance(ended, int | float) or ended < since:
            continue
        job = read_job(folder)
        run_id = job.run_id if job else folder.name
        name = str(job.extra.get("name") or run_id[:8]) if job else folder.name[:8]
        found.append(EndedRun(run_id, name, status, float(ended), job.started if job else 0.0))
    return sorted(found, key=lambda run: run.ended)


def progress_title(job: ActiveJob) -> str:
    """'▶ my_lora 40% — LoRA Studio' (or its phase, 'loading', before steps are counted)."""
    where = f"{round(job.fraction * 100)}%" if job.progress.get("total_steps") else job.phase
    return without_secrets(f"▶ {job.name} {where} — {APP_NAME}")


def announce_ended_runs(settings: StudioSettings, active: Iterable[ActiveJob]) -> list[str]:
    """Toast each run that ended since this session's first look (once per launch, whether or
    not this session saw it train) and keep the tab title on the newest run: the one training,
    else the last one that ended. Returns the run ids announced now."""
    notice = _state()
    training = [job for job in active if job.phase not in TERMINAL_PHASES]  # newest first
    for job in training:
        notice.watching[job.run_id] = (job.name, job.started)
    ended = [run for run in ended_runs(settings, notice.since) if run.key not in notice.announced]
    still = {job.run_id for job in training} | {run.run_id for run in ended}
    for run_id in set(notice.watching) - still:  # gone without a word in its files
        name, launched = notice.watching[run_id]
        gone = EndedRun(run_id, name, ended_status(settings, run_id), time.time(), launched)
        if gone.key not in notice.announced:
            ended.append(gone)
    for run in ended:
        notice.announced.add(run.key)
        notice.watching.pop(run.run_id, None)
        _mark, word = STATUS_WORDS.get(run.status, ("•", "ended"))  # the icon marks it here
        st.toast(
            f"**{plain_line(run.name)}** {word}",
            icon=TOAST_ICONS.get(run.status, TOAST_ICONS[ENDED]),
            duration="long",
        )
        notice.title = run_end_title(run.name, run.status)
    notice.shown = progress_title(training[0]) if training else notice.title
    if notice.shown:
        st.set_page_config(page_title=notice.shown)
    return [run.run_id for run in ended]
