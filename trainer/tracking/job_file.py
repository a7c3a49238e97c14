"""``job.json`` in a job folder (what the studio launched for a run: pid, start time, command) and
whether that process still lives (importing this module does not import mlflow)."""

from __future__ import annotations

import socket
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from trainer.files import read_json, write_json
from trainer.redaction import redact, redact_text

JOB_FILE = "job.json"


@dataclass
class JobInfo:
    """``job.json``: what the studio launched for a run."""

    run_id: str
    pid: int
    started: float  # epoch seconds, when the studio launched the process
    command: list[str]
    config_path: str
    host: str = ""
    create_time: float | None = None  # psutil's process create time, when it could be read
    extra: dict[str, Any] = field(default_factory=dict)


def job_dir(jobs_dir: str | Path, run_id: str) -> Path:
    """The folder of run ``run_id``'s job under ``jobs_dir``."""
    return Path(jobs_dir) / run_id


def write_job(
    job_dir: str | Path,
    pid: int,
    run_id: str,
    started: float,
    command: Iterable[str] | str,
    config_path: str | Path,
    **extra: Any,
) -> JobInfo:
    """Atomically write ``<job_dir>/job.json`` (the process's create time is recorded too)."""
    info = JobInfo(
        run_id=run_id,
        pid=int(pid),
        started=float(started),
        command=[command] if isinstance(command, str) else [str(c) for c in command],
        config_path=str(config_path),
        host=socket.gethostname(),
        create_time=process_create_time(int(pid)),
        extra=redact(extra),
    )
    info.command = [redact_text(part) for part in info.command]
    write_json(Path(job_dir) / JOB_FILE, asdict(info))
    return info


def read_job(job_dir: str | Path) -> JobInfo | None:
    data = read_json(Path(job_dir) / JOB_FILE)
    if data is None:
        return None
    try:
        return JobInfo(
            run_id=str(data["run_id"]),
            pid=int(data["pid"]),
            started=float(data["started"]),
            command=list(data.get("command") or []),
            config_path=str(data.get("config_path") or ""),
            host=str(data.get("host") or ""),
            create_time=None if data.get("create_time") is None else float(data["create_time"]),
            extra=dict(data.get("extra") or {}),
        )
    except (KeyError, TypeError, ValueError):
        return None


def process_create_time(pid: int) -> float | None:
    """When process ``pid`` was created (epoch seconds, as psutil reads it); None if unknown."""
    try:
        return psutil.Process(pid).create_time()
    except (psutil.Error, OSError):
        return None


def pid_alive(pid: int, started: float | None = None, tolerance_s: float = 2.0) -> bool:
    """True when process ``pid`` runs and (if ``started`` is given) was created within
    ``tolerance_s`` of it, i.e. the pid was not reused by another process. Zombies are dead."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        created = proc.create_time()
    except psutil.NoSuchProcess:
        return False
    except (psutil.AccessDenied, OSError):
        return True  # exists, but not ours to inspect
    return started is None or abs(created - started) <= tolerance_s
