"""A job's folder, ``<home>/jobs/<run id>/``, and what its files say about the job.

The studio writes ``config.yaml`` (the config trained), ``job.json`` (``trainer.tracking.job_file``),
``train.log`` (the trainer's stdout and stderr), ``exit.json`` (the exit code, when the launching
process saw the trainer end) and ``stop.json`` (when a stop was asked); the trainer writes
``progress.json`` (``trainer.tracking.progress``) and ``checkpoints/``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.files import read_json
from trainer.tracking.job_file import JobInfo, pid_alive

if TYPE_CHECKING:  # pragma: no cover
    from trainer.settings import StudioSettings

CONFIG_FILE = "config.yaml"
LOG_FILE = "train.log"
EXIT_FILE = "exit.json"
STOP_FILE = "stop.json"


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class LaunchRefused(RuntimeError):
    """A launch, stop or resume that cannot happen now; the message says why and what to do."""


_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def job_folder(settings: StudioSettings, run_id: str) -> Path:
    """``<jobs>/<run id>``; refuses an id that is not one plain name (``../x``, ``a/b``, ...),
    since ids can arrive from a URL and must never reach outside the jobs folder."""
    if not isinstance(run_id, str) or not _RUN_ID.match(run_id) or ".." in run_id:
        raise LaunchRefused(f"{run_id!r} is not a run id (letters, digits, '_', '-', '.' only)")
    return settings.jobs_dir / run_id


def read_exit(job_dir: Path) -> dict[str, Any] | None:
    """``{"code": n, "ended": epoch, "meaning": ...}`` once the launching process saw it end."""
    return read_json(Path(job_dir) / EXIT_FILE)


def job_alive(job: JobInfo | None) -> bool:
    """True when the job's trainer process still runs (the same process: its pid not reused)."""
    if job is None:
        return False
    return pid_alive(job.pid, job.create_time if job.create_time is not None else job.started)


def stop_requested(settings: StudioSettings, run_id: str) -> float | None:
    """When a stop was asked for this job (epoch seconds), if it was."""
    return (read_json(job_folder(settings, run_id) / STOP_FILE) or {}).get("requested")


def log_tail(job_dir: Path, lines: int = 40, max_bytes: int = 64_000) -> str:
    """The last ``lines`` lines of the job's log, progress-bar redraws collapsed."""
    path = Path(job_dir) / LOG_FILE
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - max_bytes))
            data = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    if size > max_bytes:
        data = data.split("\n", 1)[-1]
    data = _ANSI.sub("", data)
    out = [line.rstrip("\r").rsplit("\r", 1)[-1] for line in data.split("\n")]
    return "\n".join([line for line in out if line.strip()][-lines:])
