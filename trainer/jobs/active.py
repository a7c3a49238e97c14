"""Which studio-launched trainers are alive on this machine, how far they are, and whether a
device is busy (one run per device); read from the job folders, without MLflow."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.files import read_json
from trainer.jobs.folder import STOP_FILE, job_alive, read_exit
from trainer.tracking.job_file import read_job
from trainer.tracking.progress import TERMINAL_PHASES, read_progress

if TYPE_CHECKING:  # pragma: no cover
    from trainer.settings import StudioSettings


@dataclass
class ActiveJob:
    """A studio-launched trainer that is still alive, with its latest progress."""

    run_id: str
    job_dir: Path
    pid: int
    name: str
    device: str
    started: float
    progress: dict[str, Any]
    stop_requested: float | None = None

    @property
    def phase(self) -> str:
        phase = self.progress.get("phase")  # 'queued': launched, the trainer not reported in yet
        return "starting" if phase in (None, "queued") else phase

    @property
    def fraction(self) -> float:
        return progress_fraction(self.progress)


def active_jobs(settings: StudioSettings) -> list[ActiveJob]:
    """Studio-launched trainers still alive on this machine, newest first (no MLflow access)."""
    found: list[ActiveJob] = []
    if not settings.jobs_dir.is_dir():
        return found
    for job_file in settings.jobs_dir.glob("*/job.json"):
        folder = job_file.parent
        progress = read_progress(folder) or {}
        if progress.get("phase") in TERMINAL_PHASES and read_exit(folder) is not None:
            continue  # cheap skip of ended jobs
        job = read_job(folder)
        if not job_alive(job):
            continue
        stop = read_json(folder / STOP_FILE) or {}
        found.append(
            ActiveJob(
                run_id=job.run_id,
                job_dir=folder,
                pid=job.pid,
                name=str(job.extra.get("name") or job.run_id[:8]),
                device=str(job.extra.get("device") or "cpu"),
                started=job.started,
                progress=progress,
                stop_requested=stop.get("requested"),
            )
        )
    return sorted(found, key=lambda j: j.started, reverse=True)


def busy_reason(settings: StudioSettings, device: str, exclude: str | None = None) -> str | None:
    """Why a new run cannot start on ``device`` now, or None when it is free."""
    for job in active_jobs(settings):
        if job.run_id != exclude and job.device == device:
            step = job.progress.get("step")
            total = job.progress.get("total_steps")
            where = f" at step {step}/{total}" if step is not None and total else ""
            return (
                f"'{job.name}' is already training on {device} ({job.phase}{where}). One run per "
                "device at a time: wait for it to finish, or stop it on the monitor page first."
            )
    return None


def progress_fraction(progress: Mapping[str, Any] | None) -> float:
    """How much of the run is done, 0-1, from its progress (1 once finished)."""
    progress = progress or {}
    step, total = progress.get("step") or 0, progress.get("total_steps") or 0
    if progress.get("phase") == "finished":
        return 1.0
    return min(1.0, max(0.0, step / total)) if total else 0.0
