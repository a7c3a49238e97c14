"""Launch, stop and resume training runs from the studio (thin: the work is in trainer/jobs.py).

The review page's Launch button calls ``launch_draft(cfg)``; it raises ``LaunchRefused`` with a
message fit for ``st.error`` when the run cannot start (settings still 'auto', device busy).
After a launch ``st.session_state[MONITOR_RUN_KEY]`` holds the run id, so ``open_monitor()``
(or a switch to pages/monitor.py) shows that run.
"""

from __future__ import annotations

import contextlib
import time

import streamlit as st

from trainer import jobs
from trainer.config import TrainingConfig
from trainer.jobs import ActiveJob, LaunchedJob, LaunchRefused
from trainer.settings import StudioSettings, load_settings

__all__ = [
    "MONITOR_PAGE",
    "MONITOR_RUN_KEY",
    "ActiveJob",
    "LaunchRefused",
    "LaunchedJob",
    "active_jobs",
    "launch_blocker",
    "launch_draft",
    "open_monitor",
    "reconcile_on_load",
    "resume_job",
    "stop_job",
]

MONITOR_PAGE = "pages/monitor.py"
MONITOR_RUN_KEY = "monitor_run_id"
RECONCILE_EVERY_S = 10.0
_last_reconcile: dict[str, float] = {}


def _settings(settings: StudioSettings | None) -> StudioSettings:
    return settings or load_settings()


def predicted_s_per_step(cfg: TrainingConfig) -> float | None:
    """The advisor's step-time prediction for this config, when the advisor can give one."""
    try:
        from advisor import predict
    except Exception:
        return None
    for name in ("predict_step_seconds", "predict_s_per_step", "step_time"):
        fn = getattr(predict, name, None)
        if callable(fn):
            with contextlib.suppress(Exception):
                value = fn(cfg)
                value = getattr(value, "value", getattr(value, "expected", value))
                return float(value) if value else None
    fn = getattr(predict, "predict", None)
    if callable(fn):
        with contextlib.suppress(Exception):
            found = fn(cfg)
            for attr in ("s_per_step", "step_seconds", "seconds_per_step", "step_time_s"):
                value = getattr(found, attr, None)
                value = getattr(value, "value", getattr(value, "expected", value))
                if isinstance(value, int | float) and value > 0:
                    return float(value)
    return None


def launch_blocker(cfg: TrainingConfig, settings: StudioSettings | None = None) -> str | None:
    """Why ``launch_draft(cfg)`` would be refused right now (device busy), or None."""
    return jobs.busy_reason(_settings(settings), jobs.resolve_device(cfg.runtime.device))


def launch_draft(cfg: TrainingConfig, settings: StudioSettings | None = None) -> LaunchedJob:
    """Create the MLflow run and start the trainer for ``cfg``; the monitor then shows it."""
    job = jobs.launch(
        _settings(settings),
        cfg,
        tags={"studio.launched_from": "studio"},
        predicted_s_per_step=predicted_s_per_step(cfg),
    )
    st.session_state[MONITOR_RUN_KEY] = job.run_id
    return job


def open_monitor(run_id: str | None = None) -> None:
    """Switch to the monitor page, showing ``run_id`` (default: the last launched run)."""
    if run_id:
        st.session_state[MONITOR_RUN_KEY] = run_id
    st.switch_page(MONITOR_PAGE)


def stop_job(run_id: str, *, force: bool = False, settings: StudioSettings | None = None) -> bool:
    """Ask the trainer to stop (SIGTERM to its process group; SIGKILL when ``force``)."""
    settings = _settings(settings)
    sent = jobs.stop(settings, run_id, force=force)
    if force and sent:
        jobs.wait_for_exit(settings, run_id, timeout=5)
        reconcile_on_load(settings, force=True)
    return sent


def resume_job(
    run_id: str, status: str | None = None, settings: StudioSettings | None = None
) -> LaunchedJob:
    """Relaunch the trainer on the same MLflow run from its latest checkpoint."""
    job = jobs.resume(_settings(settings), run_id, status)
    st.session_state[MONITOR_RUN_KEY] = run_id
    return job


def active_jobs(settings: StudioSettings | None = None) -> list[ActiveJob]:
    return jobs.active_jobs(_settings(settings))


def reconcile_on_load(settings: StudioSettings | None = None, *, force: bool = False) -> list[str]:
    """Mark runs whose trainer died as FAILED/KILLED; at most every few seconds per store."""
    settings = _settings(settings)
    key = settings.tracking_uri
    now = time.monotonic()
    if not force and now - _last_reconcile.get(key, -1e9) < RECONCILE_EVERY_S:
        return []
    _last_reconcile[key] = now
    try:
        return jobs.reconcile(settings)
    except Exception as err:  # an unreachable tracking server must not break the page
        st.toast(f"Could not check for dead runs: {err}")
        return []
