"""Controlling a launched job: stop it (its whole process group), wait for it to end, and close
runs whose trainer is gone (``reconcile``: exit code and last log lines into the run's note).

A stopped trainer ends its run KILLED and sends the run-ended message itself
(``trainer.engine.run``); a force-stopped (SIGKILL) one cannot, so ``reconcile`` sends it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from typing import TYPE_CHECKING

from trainer.files import read_json, write_json
from trainer.jobs.children import child_process
from trainer.jobs.folder import STOP_FILE, job_alive, job_folder, log_tail, read_exit
from trainer.notify import notify_closed_runs
from trainer.tracking.dead_runs import ReconcileIncomplete, reconcile_dead_runs
from trainer.tracking.job_file import read_job
from trainer.tracking.progress import TERMINAL_PHASES, read_progress, write_progress

if TYPE_CHECKING:  # pragma: no cover
    from trainer.settings import StudioSettings


def stop(settings: StudioSettings, run_id: str, *, force: bool = False) -> bool:
    """SIGTERM (or SIGKILL with ``force``) to the trainer's process group.

    The trainer checkpoints at the next step and ends the run KILLED. Returns False when the
    job is not running (nothing to stop).
    """
    folder = job_folder(settings, run_id)
    job = read_job(folder)
    if not job_alive(job):
        return False
    sig = signal.SIGKILL if force else signal.SIGTERM
    try:
        os.killpg(job.pid, sig)  # start_new_session: the group id is the trainer's pid
    except ProcessLookupError:
        return False
    except PermissionError:
        os.kill(job.pid, sig)
    previous = read_json(folder / STOP_FILE) or {}
    write_json(
        folder / STOP_FILE,
        {
            "requested": previous.get("requested", time.time()),
            "signal": sig.name,
            "at": time.time(),
        },
    )
    return True


def wait_for_exit(settings: StudioSettings, run_id: str, timeout: float = 60.0) -> bool:
    """Wait until the job's process is gone; True if it ended within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    job = read_job(job_folder(settings, run_id))
    while time.monotonic() < deadline:
        if job is None or not job_alive(job):
            proc = child_process(job.pid) if job else None
            if proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            return True
        time.sleep(0.1)
    return False


def reconcile(settings: StudioSettings) -> list[str]:
    """Close runs left RUNNING whose trainer is gone (marked FAILED or KILLED, with a note, and
    the run-ended message their trainer could not send: ``trainer.notify``).

    When this studio process saw the trainer exit, its exit code and last log lines go into the
    note. Skipped on a fresh home whose local store does not exist yet (creating it takes seconds).
    """
    if settings.uses_local_store and not (settings.home / "mlflow.db").exists():
        return []
    if settings.jobs_dir.is_dir():
        for job_file in settings.jobs_dir.glob("*/job.json"):
            folder = job_file.parent
            ended, progress = read_exit(folder), read_progress(folder) or {}
            if ended is None or ended.get("code") in (0, None) or progress.get("last_error"):
                continue
            if progress.get("phase") in TERMINAL_PHASES:
                continue
            tail = log_tail(folder, lines=6)
            note = f"The trainer {ended.get('meaning')} (exit code {ended.get('code')})."
            with contextlib.suppress(OSError, ValueError):
                write_progress(folder, {**progress, "last_error": f"{note}\n{tail}".strip()})
    try:
        closed = reconcile_dead_runs(settings.tracking_uri, settings.jobs_dir)
    except ReconcileIncomplete as err:
        notify_closed_runs(settings, err.changed)
        raise
    notify_closed_runs(settings, closed)  # their trainers could not say the run ended
    return closed
