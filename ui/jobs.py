"""Launch, stop and resume training runs from the studio (thin: the work is in trainer/jobs/launch.py).

The review page's Launch button calls ``launch_draft(cfg)``; it raises ``LaunchRefused`` with a
message fit for ``st.error`` when the run cannot start (settings still 'auto', device busy).
After a launch ``st.session_state[MONITOR_RUN_KEY]`` holds the run id, so ``open_monitor()``
(or a switch to pages/monitor.py) shows that run.
"""

from __future__ import annotations

import time

import streamlit as st
import yaml

from trainer.config.safe_yaml import load_yaml
from trainer.config.schema import TrainingConfig
from trainer.jobs.active import ActiveJob, busy_reason
from trainer.jobs.active import active_jobs as live_jobs
from trainer.jobs.control import reconcile, stop, wait_for_exit
from trainer.jobs.folder import CONFIG_FILE, LaunchRefused, job_folder
from trainer.jobs.launch import LaunchedJob, launch, resolve_device, resume
from trainer.redaction import describe_error, redact_text
from trainer.settings import StudioSettings, load_settings
from trainer.tracking.connect import StoreUnreachable
from trainer.tracking.dead_runs import ReconcileIncomplete
from trainer.tracking.layout import TAG_PREDICTED_TOTAL
from ui.access import config_refusal
from ui.advice import predict
from ui.boundary import advisor_boundary
from ui.compare_store import local_history
from ui.context import hardware
from ui.text import plain

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
_reconcile_problem: dict[str, str] = {}  # tracking URI -> why the last check did not finish


def _settings(settings: StudioSettings | None) -> StudioSettings:
    return settings or load_settings()


def launch_prediction(
    cfg: TrainingConfig, settings: StudioSettings | None = None
) -> tuple[float | None, float | None]:
    """The advisor's (s/step, whole-run seconds) for this config on this machine, with the
    preflight overrides and calibrated by the store's past runs; recorded at launch so the
    monitor and the compare page can set them against the measured ones. Nones when the advisor
    failed (the page then says so; the run launches without a prediction)."""
    step = total = None
    with advisor_boundary("predicting this run's time"):
        history = local_history(_settings(settings).tracking_uri)
        found = predict(cfg, hardware(), history)
        step, total = (found.step_s, found.total_s) if found is not None else (None, None)
    return _positive(step), _positive(total)


def _positive(value: float | None) -> float | None:
    return float(value) if value and value > 0 else None


def launch_blocker(cfg: TrainingConfig, settings: StudioSettings | None = None) -> str | None:
    """Why ``launch_draft(cfg)`` would be refused right now (device busy), or None."""
    return busy_reason(_settings(settings), resolve_device(cfg.runtime.device))


def launch_draft(cfg: TrainingConfig, settings: StudioSettings | None = None) -> LaunchedJob:
    """Create the MLflow run and start the trainer for ``cfg``; the monitor then shows it.

    Served to a network, a config that names a folder or file outside the allowed roots (a
    dataset, the base model) is refused before anything starts: a trainer would read it."""
    refused = config_refusal(cfg.model_dump(mode="json"), settings)
    if refused:
        raise LaunchRefused(refused)
    step_s, total_s = launch_prediction(cfg, settings)
    tags = {"studio.launched_from": "studio"}
    if total_s:
        tags[TAG_PREDICTED_TOTAL] = f"{total_s:.4g}"
    try:
        job = launch(_settings(settings), cfg, tags=tags, predicted_s_per_step=step_s)
    except StoreUnreachable as err:  # said like any other refusal, on the page that launched
        raise LaunchRefused(str(err)) from None
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
    sent = stop(settings, run_id, force=force)
    if force and sent:
        wait_for_exit(settings, run_id, timeout=5)
        reconcile_on_load(settings, force=True)
    return sent


def resume_job(
    run_id: str, status: str | None = None, settings: StudioSettings | None = None
) -> LaunchedJob:
    """Relaunch the trainer on the same MLflow run from its latest checkpoint (refused, served to
    a network, when the config it was launched with reads outside the allowed roots)."""
    refused = config_refusal(launched_config(_settings(settings), run_id), settings)
    if refused:
        raise LaunchRefused(refused)
    try:
        job = resume(_settings(settings), run_id, status)
    except StoreUnreachable as err:
        raise LaunchRefused(str(err)) from None
    st.session_state[MONITOR_RUN_KEY] = run_id
    return job


def launched_config(settings: StudioSettings, run_id: str) -> dict:
    """The config a run was launched with (its job folder's copy); {} when there is none to
    read (the resume itself then says why it cannot start)."""
    try:
        config = load_yaml((job_folder(settings, run_id) / CONFIG_FILE).read_text("utf-8"))
    except (OSError, yaml.YAMLError):  # missing, unreadable or not YAML
        return {}
    return config if isinstance(config, dict) else {}


def active_jobs(settings: StudioSettings | None = None) -> list[ActiveJob]:
    return live_jobs(_settings(settings))


def reconcile_on_load(settings: StudioSettings | None = None, *, force: bool = False) -> list[str]:
    """Mark runs whose trainer died as FAILED/KILLED; at most every few seconds per store.

    What went wrong stays on the page until a later check succeeds: runs the store would not
    let it close (``ReconcileIncomplete``: the others are closed all the same), or a check that
    failed as a whole. A store that does not answer is left to the page's own reads, which say
    so (``ui.store_errors``)."""
    settings = _settings(settings)
    key = settings.tracking_uri
    now = time.monotonic()
    if not force and now - _last_reconcile.get(key, -1e9) < RECONCILE_EVERY_S:
        _show_reconcile_problem(key)
        return []
    _last_reconcile[key] = now
    changed: list[str] = []
    try:
        changed = reconcile(settings)
        _reconcile_problem.pop(key, None)
    except StoreUnreachable:
        _reconcile_problem.pop(key, None)
    except ReconcileIncomplete as err:
        changed = err.changed
        _reconcile_problem[key] = str(err)
    except Exception as err:  # the store failed otherwise: the page goes on, saying so
        _reconcile_problem[key] = (
            f"Could not check for runs whose trainer is gone: {describe_error(err)}"
        )
    _show_reconcile_problem(key)
    return changed


def _show_reconcile_problem(key: str) -> None:
    problem = _reconcile_problem.get(key)
    if problem:
        st.warning(plain(redact_text(problem)), icon=":material/sync_problem:")  # store's words
