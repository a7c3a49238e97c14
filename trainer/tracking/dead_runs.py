"""Closing runs left RUNNING by a trainer process that is gone (SIGKILL, crash, reboot): their
status set from the progress file, a note saying what happened. A run that cannot be closed (the
store refuses the write) does not stop the others: ``ReconcileIncomplete`` reports it after."""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.redaction import describe_error
from trainer.tracking.connect import mlflow_client
from trainer.tracking.job_file import JobInfo, job_dir, pid_alive, read_job
from trainer.tracking.layout import (
    APP,
    TAG_APP,
    TAG_HOST,
    TAG_NOTE,
    TAG_PID,
    TAG_PID_CREATE_TIME,
)
from trainer.tracking.progress import read_progress, write_progress

if TYPE_CHECKING:  # pragma: no cover
    from mlflow import MlflowClient

log = logging.getLogger(__name__)


class ReconcileIncomplete(RuntimeError):
    """Some dead runs could not be closed. ``changed``: the run ids that were; ``failures``:
    (run id, why) for the others, why redacted (it may quote the store's URI)."""

    def __init__(self, changed: list[str], failures: list[tuple[str, str]]) -> None:
        self.changed = changed
        self.failures = failures
        first_id, first_why = failures[0]
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        super().__init__(
            f"Could not close {len(failures)} run(s) whose trainer is gone{more}: run "
            f"{first_id[:8]}: {first_why}"
        )


def _job_alive(job: JobInfo) -> bool:
    if job.host and job.host != socket.gethostname():
        return True  # cannot see another machine's processes
    return pid_alive(job.pid, job.create_time if job.create_time is not None else job.started)


def reconcile_dead_runs(
    client_or_uri: MlflowClient | str,
    jobs_dir: str | Path,
    *,
    stale_after_minutes: float = 15.0,
    experiment_ids: list[str] | None = None,
) -> list[str]:
    """Close runs left RUNNING by a trainer process that is gone (SIGKILL, crash, reboot).

    A RUNNING run is dead when its ``job.json`` pid is not alive (or was reused by another
    process: create time off by more than 2 s), or — without a job folder — when the ``studio.pid``
    tag it was started with is gone on this host, or when a studio run has neither and is older
    than ``stale_after_minutes``. It is marked KILLED if the progress file says it was stopping,
    FINISHED if it says finished, FAILED otherwise, with a note saying what happened; the progress
    file's phase is updated too. Returns the run ids changed. A run the store refuses to
    change does not stop the others; ``ReconcileIncomplete`` (holding the changed ids) is raised
    at the end. An unreachable store raises ``StoreUnreachable`` at once.
    """
    client = mlflow_client(client_or_uri)
    ids = experiment_ids or [e.experiment_id for e in client.search_experiments()]
    if not ids:
        return []
    runs = client.search_runs(ids, filter_string="attributes.status = 'RUNNING'", max_results=1000)
    changed: list[str] = []
    failures: list[tuple[str, str]] = []
    for run in runs:
        try:
            if _close_if_dead(client, run, Path(jobs_dir), stale_after_minutes):
                changed.append(run.info.run_id)
        except Exception as err:  # the store refused (read-only, replaced, down): go on
            why = describe_error(err)
            log.warning("could not close dead run %s: %s", run.info.run_id, why)
            failures.append((run.info.run_id, why))
    if failures:
        raise ReconcileIncomplete(changed, failures)
    return changed


def _close_if_dead(
    client: MlflowClient, run: Any, jobs_dir: Path, stale_after_minutes: float
) -> bool:
    """Close ``run`` when its trainer is gone (see ``reconcile_dead_runs``); True when closed."""
    rid = run.info.run_id
    folder = job_dir(jobs_dir, rid)
    job = read_job(folder)
    tags = run.data.tags
    if job is not None:
        dead, pid = not _job_alive(job), job.pid
    elif TAG_PID in tags and tags.get(TAG_HOST) == socket.gethostname():
        pid = int(tags[TAG_PID]) if tags[TAG_PID].isdigit() else -1
        created = _float(tags.get(TAG_PID_CREATE_TIME))
        dead = pid < 0 or not pid_alive(pid, created)
    elif tags.get(TAG_APP) == APP and TAG_PID not in tags:
        pid = None
        dead = (time.time() - run.info.start_time / 1000) > stale_after_minutes * 60
    else:
        return False
    if not dead:
        return False
    current = client.get_run(rid)
    if current.info.status != "RUNNING":
        return False  # ended by itself meanwhile
    progress = read_progress(folder) or {}
    phase = progress.get("phase")
    status = "KILLED" if phase in ("stopping", "killed") else "FAILED"
    if phase == "finished":
        status = "FINISHED"
    explanation = _dead_note(pid, job is not None, status, progress)
    old_note = current.data.tags.get(TAG_NOTE, "")
    client.set_tag(rid, TAG_NOTE, (old_note + "\n\n" if old_note else "") + explanation)
    updated = _float(progress.get("updated"))
    end_ms = int(updated * 1000) if updated else None
    client.set_terminated(rid, status, end_time=end_ms)
    if job is not None or progress:
        new_progress = {
            **{k: v for k, v in progress.items() if k != "updated"},
            "phase": status.lower(),
        }
        if status == "FAILED" and not progress.get("last_error"):
            new_progress["last_error"] = explanation
        with contextlib.suppress(OSError):
            write_progress(folder, new_progress)
    return True


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _dead_note(pid: int | None, has_job: bool, status: str, progress: Mapping[str, Any]) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    if pid is None:
        what = (
            "The trainer never reported in (no job folder and no trainer process recorded), "
            "so the run was left RUNNING"
        )
    else:
        what = (
            f"The trainer process (pid {pid}) disappeared without ending the run — it was "
            "killed (e.g. out of memory or SIGKILL), crashed, or the machine restarted"
        )
    text = f"{what}. LoRA Studio marked it {status} on {when}."
    if progress.get("step") is not None:
        text += f" Last progress: {progress.get('phase')} at step {progress.get('step')}"
        text += f"/{progress['total_steps']}." if progress.get("total_steps") else "."
    if progress.get("last_error"):
        text += f" Last error: {progress['last_error']}"
    if not has_job and pid is not None:
        text += " (run started outside the studio)"
    return text
