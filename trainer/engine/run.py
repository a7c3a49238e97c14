"""One training run as a process: config in, MLflow run out, with stop, crash and resume handling.

`python -m trainer run CONFIG [--set k=v] [--resume [CHECKPOINT]]` calls `run_job`; the studio
launches exactly that as a subprocess with MLFLOW_TRACKING_URI and MLFLOW_RUN_ID set (through
``accelerate launch`` when runtime.num_processes > 1: then every process runs `run_job`, the main
one tracks the run, the others get a NullTracker and the main process's run id and job folder).
"""

from __future__ import annotations

import os
import sys
import traceback
import uuid
from dataclasses import dataclass
from pathlib import Path

from trainer.config.introspection import unresolved_autos
from trainer.config.io import ConfigError, Problem, load_config, save_config
from trainer.config.schema import TrainingConfig
from trainer.engine import distributed
from trainer.engine.checkpoint import latest_checkpoint, load_checkpoint
from trainer.engine.context import RunContext, StopSignal
from trainer.engine.failures import explain_failure
from trainer.engine.loop import train
from trainer.settings import load_settings
from trainer.tracking.tracker import NullTracker, make_tracker

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_STOPPED = 0, 1, 2, 3


@dataclass
class JobResult:
    exit_code: int
    run_id: str | None
    job_dir: Path | None
    status: str
    message: str = ""


def load_runnable_config(path: str | Path, overrides: list[str]) -> TrainingConfig:
    """The config, or a ConfigError when it is invalid or still has decisions left to 'auto'."""
    cfg = load_config(path, overrides)
    autos = unresolved_autos(cfg)
    if autos:
        raise ConfigError(
            [
                Problem(path_, "is still 'auto'", "set a value, or let the studio's advisor decide")
                for path_ in autos
            ],
            str(path),
        )
    return cfg


def find_resume_point(resume: str, job_dir: Path | None, jobs_dir: Path, name: str) -> Path:
    """'latest' → the newest checkpoint of this job (or of the newest job with this name)."""
    if resume != "latest":
        return Path(resume)
    if job_dir is not None:
        return job_dir
    candidates = []
    for folder in jobs_dir.glob("*/checkpoints"):
        found = latest_checkpoint(folder)
        config = folder.parent / "config.yaml"
        if found and config.exists() and _config_name(config) == name:
            candidates.append(found)
    if not candidates:
        raise FileNotFoundError(
            f"no checkpoint of a run named '{name}' in {jobs_dir} — pass the checkpoint folder"
        )
    return max(candidates, key=lambda p: p.stat().st_mtime)


def _config_name(path: Path) -> str | None:
    try:
        return load_config(path).name
    except ConfigError:
        return None


def _resume_run_id(point: Path) -> str | None:
    folder = point if (point / "training_state.pt").exists() else None
    folder = folder or latest_checkpoint(point / "checkpoints") or latest_checkpoint(point)
    if folder is None:
        return None
    try:
        return load_checkpoint(folder).state.get("run_id")
    except Exception:
        return None


def run_job(
    config_path: str | Path,
    overrides: list[str] | None = None,
    *,
    resume: str | None = None,
    job_dir: Path | None = None,
    tracking_uri: str | None = None,
) -> JobResult:
    settings = load_settings()
    cfg = load_runnable_config(config_path, overrides or [])
    resume_point = (
        find_resume_point(resume, job_dir, settings.jobs_dir, cfg.name) if resume else None
    )
    stop = StopSignal().install()
    dist = distributed.start(cfg.runtime.device)  # Dist() when this is the only process
    try:
        uri = tracking_uri or settings.tracking_uri
        tracker = make_tracker(cfg, uri) if dist.is_main else NullTracker()  # one voice
        run_id = os.environ.get("MLFLOW_RUN_ID") or (
            _resume_run_id(resume_point) if resume_point else None
        )
        if dist.is_main:
            run_id = tracker.start(cfg, run_id=run_id, tags={"studio.resumed": str(bool(resume))})
        if job_dir is None and resume_point is not None and resume != "latest":
            job_dir = _job_of(resume_point)
        job_dir = job_dir or settings.jobs_dir / (run_id or _local_id())
        run_id, job_dir = dist.broadcast((run_id, job_dir))  # every rank: the main one's run
        if dist.is_main:
            save_config(cfg, job_dir / "config.yaml")
        progress = None if dist.is_main else distributed.NullProgress()
        ctx = RunContext(
            home=settings.home,
            job_dir=job_dir,
            tracker=tracker,
            stop=stop,
            progress=progress,
            dist=dist,
        )
        return _train_and_end(cfg, ctx, resume_point, run_id, train)
    finally:
        dist.close()


def _train_and_end(cfg, ctx, resume_point, run_id, train) -> JobResult:
    tracker, job_dir, stop, main = ctx.tracker, ctx.job_dir, ctx.stop, ctx.dist.is_main
    try:
        outcome = train(cfg, ctx, resume_point)
    except BaseException as err:  # every failure ends the run FAILED with a reason
        note = explain_failure(err)
        ctx.progress.close(phase="failed", last_error=note, eta_s=None)
        tracker.set_description(note)
        tracker.end("FAILED")
        traceback.print_exc()
        print(f"\nRun failed: {note}", file=sys.stderr, flush=True)
        return JobResult(EXIT_FAILED, run_id, job_dir, "FAILED", note)
    if outcome.stopped:
        note = f"Stopped by {stop.signal_name or 'request'} at step {outcome.step}; resume with --resume."
        ctx.progress.close(phase="killed", step=outcome.step, eta_s=None)
        tracker.set_description(note)
        tracker.end("KILLED")
        if main:
            print(note, flush=True)
        return JobResult(EXIT_STOPPED, run_id, job_dir, "KILLED", note)
    ctx.progress.close(phase="finished", step=outcome.step, eta_s=0)
    tracker.end("FINISHED")
    files = ", ".join(str(f) for f in outcome.lora_files)
    if main:
        print(f"Finished {outcome.step} steps. LoRA: {files}", flush=True)
    return JobResult(EXIT_OK, run_id, job_dir, "FINISHED", files)


def _job_of(point: Path) -> Path:
    # <job>/checkpoints/step_N → <job>; <job> → <job>
    return point.parent.parent if point.parent.name == "checkpoints" else point


def _local_id() -> str:
    return uuid.uuid4().hex
