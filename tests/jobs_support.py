"""Helpers for tests that launch real trainer processes: a studio home and polling."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from trainer.files import read_json
from trainer.settings import StudioSettings, load_settings
from trainer.tracking.progress import read_progress
from trainer.tracking.startup import STARTUP_FILE


def make_home(tmp: Path, demo_home: Path) -> Path:
    """An empty studio home whose demo models and dataset are the session's (symlinked)."""
    home = tmp / "home"
    home.mkdir()
    for name in ("models", "datasets"):
        (home / name).symlink_to(demo_home / name, target_is_directory=True)
    return home


def fresh_settings(tmp: Path, demo_home: Path, monkeypatch: pytest.MonkeyPatch) -> StudioSettings:
    """The studio's settings on a fresh home (``make_home``) with the local SQLite store."""
    monkeypatch.setenv("STUDIO_HOME", str(make_home(tmp, demo_home)))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    return load_settings()


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.2) -> Any:
    """Poll until ``predicate()`` is truthy and return its value; fail the test on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def training_at(job_dir: Path, step: int) -> Callable[[], bool]:
    """A predicate: the job's progress file says it is training at ``step`` or later."""

    def check() -> bool:
        progress = read_progress(job_dir) or {}
        return progress.get("phase") == "training" and (progress.get("step") or 0) >= step

    return check


def tracking_ready(job_dir: Path) -> Callable[[], bool]:
    """A predicate: the job's MLflow run is attached (startup.json: trainer.tracking.startup).

    The trainer attaches it in the background once the first step is done, and a stop must end
    it there: tests that time a stop wait for this first, so they time the stop alone."""

    def check() -> bool:
        startup = read_json(job_dir / STARTUP_FILE) or {}
        return "tracking_ready" in (startup.get("other") or {})

    return check


def stop_process_group(process: subprocess.Popen, grace: float = 10.0) -> None:
    """End a process started with ``start_new_session=True`` and its children: SIGTERM to the
    group, then SIGKILL when it has not exited after ``grace`` seconds."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
