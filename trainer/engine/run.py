"""One training run as a process: config in, MLflow run out, with stop, crash and resume handling.

`python -m trainer run CONFIG [--set k=v] [--resume [CHECKPOINT]]` calls `run_job`; the studio
launches exactly that as a subprocess with MLFLOW_TRACKING_URI and MLFLOW_RUN_ID set (through
``accelerate launch`` when runtime.num_processes > 1: then every process runs `run_job`, the main
one tracks the run, the others get a NullTracker and the main process's run id and job folder).

``--resume`` is checked before anything is written (no MLflow run, no folder, no file): a path
that holds no checkpoint, or a checkpoint that does not fit the config, is refused with exit code
2 (``ResumeRefused``). Newer checkpoints that fail to load are skipped, set aside and reported.

The first step comes first: the MLflow run is made (or attached) in a background thread once the
first step is done, calls until then queued (``_start_tracker``, trainer.tracking.background); a
start that fails fails the run with the store's own message. From the CLI (``tracking_process``)
MLflow runs in a child process instead, started at once (trainer.tracking.sidecar): its imports
and store (~165 MB, ~3 CPU-s) are not the trainer's. When each start-up phase ended goes
into ``<job>/startup.json`` (trainer.tracking.startup; ``benchmarks/first_step.py``).

However the run ends (finished, failed, stopped), the main process sends one message to the
notification URL in its environment (STUDIO_NOTIFY_URL; ``trainer.notify``) after ending the MLflow
run; a message that cannot be sent is a warning, never a failed run.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
import uuid
from dataclasses import dataclass
from pathlib import Path

from trainer.config.introspection import unresolved_autos
from trainer.config.io import ConfigError, Problem, load_config, save_config
from trainer.config.schema import TrainingConfig
from trainer.engine import distributed
from trainer.engine.checkpoint import (
    CheckpointError,
    ResumeChoice,
    find_resume_checkpoint,
    folder_bytes,
    incompatibilities,
    latest_checkpoint,
    set_aside,
)
from trainer.engine.context import RunContext, StopSignal
from trainer.engine.failures import explain_failure, is_write_full
from trainer.engine.loop import train
from trainer.notify import notify_job_ended, progress_summary, protect_url, release_claim
from trainer.redaction import describe_error, redact_text
from trainer.settings import load_settings
from trainer.tracking.background import BackgroundStart
from trainer.tracking.connect import disable_mlflow_telemetry
from trainer.tracking.layout import TAG_ACTIVE_S
from trainer.tracking.reachability import check_store_answers
from trainer.tracking.sidecar import TrackerProcess, use_tracking_process
from trainer.tracking.startup import TRACKING_READY, StartupTimes
from trainer.tracking.tracker import TAG_RESUME_FALLBACK, NullTracker, make_tracker

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_STOPPED = 0, 1, 2, 3
# When MLflow's start (~3 s of GIL-bound import and store work) begins: at the first finished step
# (the first step comes as soon as without MLflow; a stop within seconds of it waits for the
# start instead), at the latest TRACKING_DEFER_S after launch. "imports" starts it at once.
TRACKING_CUE = "first_step"
TRACKING_DEFER_S = 30.0  # a first step later than this (a big model, a long cache): start anyway


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


class ResumeRefused(ConfigError):
    """``--resume`` names nothing this run can continue from; the message says what to pass."""

    def __init__(self, message: str) -> None:
        super().__init__([Problem("--resume", message)], "--resume")


def find_resume_point(resume: str, job_dir: Path | None, jobs_dir: Path, name: str) -> Path:
    """What ``--resume`` points at: the path given, or for 'latest' the job folder (``job_dir``,
    else the job of this run's name with the newest checkpoint). Reads only."""
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
        raise CheckpointError(
            f"no checkpoint of a run named '{name}' in {jobs_dir} — pass the checkpoint folder"
        )
    return max(candidates, key=lambda p: p.stat().st_mtime).parent.parent


def choose_resume(
    resume: str, job_dir: Path | None, jobs_dir: Path, cfg: TrainingConfig
) -> ResumeChoice:
    """The checkpoint to continue from, checked before anything is written: it exists, loads
    (newer damaged ones skipped) and fits ``cfg``. ResumeRefused (exit code 2) otherwise."""
    try:
        choice = find_resume_checkpoint(find_resume_point(resume, job_dir, jobs_dir, cfg.name))
    except CheckpointError as err:
        raise ResumeRefused(str(err)) from None
    problems = incompatibilities(choice.config, cfg)
    if problems:
        raise ResumeRefused(
            f"checkpoint {choice.path} does not fit this config: "
            + "; ".join(problems)
            + " — resume with the config the run started with, or start a new run"
        )
    return choice


def _config_name(path: Path) -> str | None:
    try:
        return load_config(path).name
    except ConfigError:
        return None


def run_job(
    config_path: str | Path,
    overrides: list[str] | None = None,
    *,
    resume: str | None = None,
    job_dir: Path | None = None,
    tracking_uri: str | None = None,
    tracking_process: bool = False,
) -> JobResult:
    """Train one run. ``tracking_process``: MLflow in a child process (the CLI; see
    ``_start_tracker``), else in this one (in-process callers: the tests)."""
    started = time.time()
    startup = StartupTimes()  # start-up phases, written to startup.json at the first step
    startup.mark("imports")
    settings = load_settings()
    cfg = load_runnable_config(config_path, overrides or [])
    # Checked before the first write: a refused --resume leaves every file and folder as it was.
    choice = choose_resume(resume, job_dir, settings.jobs_dir, cfg) if resume else None
    stop = StopSignal().install()
    dist = distributed.start(cfg.runtime.device)  # Dist() when this is the only process
    try:
        uri = tracking_uri or settings.tracking_uri
        tracker = make_tracker(cfg, uri) if dist.is_main else NullTracker()  # one voice
        run_id = os.environ.get("MLFLOW_RUN_ID") or (choice.run_id if choice else None)
        if dist.is_main:
            tracker, run_id = _start_tracker(
                tracker, cfg, run_id, bool(resume), startup, started, tracking_process
            )
        if job_dir is None and choice is not None:
            job_dir = choice.job_dir  # None for a checkpoint outside a job: a new job folder
        if run_id is None and dist.is_main and (job_dir is None or dist.world > 1):
            run_id = tracker.wait_started()  # the folder's name (or the other processes) need it
        startup.mark("tracking")
        job_dir = job_dir or settings.jobs_dir / (run_id or _local_id())
        run_id, job_dir = dist.broadcast((run_id, job_dir))  # every rank: the main one's run
        if dist.is_main:
            save_config(cfg, job_dir / "config.yaml")
            release_claim(job_dir)  # this launch ends the run again: its own message
            if (unlogged := getattr(tracker, "unlogged", None)) is not None:
                unlogged.folder = job_dir  # metrics the store refuses are kept beside the config
            if choice is not None:
                _announce_resume(choice, tracker)
        progress = None if dist.is_main else distributed.NullProgress()
        ctx = RunContext(
            home=settings.home,
            job_dir=job_dir,
            tracker=tracker,
            stop=stop,
            progress=progress,
            dist=dist,
            startup=startup,
        )
        resume_point = choice.path if choice else None
        return _train_and_end(cfg, ctx, resume_point, run_id, train, started=started)
    finally:
        dist.close()


def _start_tracker(
    tracker,
    cfg: TrainingConfig,
    run_id: str | None,
    resumed: bool,
    startup: StartupTimes,
    started: float,
    in_child: bool = False,
) -> tuple[object, str | None]:
    """Start the tracker's run. MLflow's start (import, store, run, config: ~3 s of CPU that would
    only take turns with the model's imports for the GIL) runs in the background from
    ``TRACKING_CUE``, or after ``TRACKING_DEFER_S``, or when something needs the run sooner (the
    job folder's name, a checkpoint's run id, the run's end); calls until then are queued
    (``BackgroundStart``). A network store that does not answer is still refused here, at once.
    ``in_child`` (unless STUDIO_TRACKING_IN_PROCESS=1): MLflow runs in a child process instead
    (``TrackerProcess``), started at once: its memory and its GIL are not this process's.
    The run id, or None when MLflow has yet to make it."""
    tags = {"studio.resumed": str(resumed)}
    if isinstance(tracker, NullTracker):
        return tracker, tracker.start(cfg, run_id=run_id, tags=tags)
    disable_mlflow_telemetry()
    check_store_answers(tracker.tracking_uri)
    if use_tracking_process(in_child):
        child = TrackerProcess(
            tracker.tracking_uri,
            on_ready=lambda: startup.mark(TRACKING_READY),
            started_at=started,
        )
        return child, child.start(cfg, run_id=run_id, tags=tags)
    background = BackgroundStart(
        tracker,
        on_ready=lambda: startup.mark(TRACKING_READY),
        defer_s=TRACKING_DEFER_S,
        started_at=started,  # the MLflow run begins when the job did
    )
    startup.on_mark(TRACKING_CUE, background.proceed)
    return background, background.start(cfg, run_id=run_id, tags=tags)


def _train_and_end(
    cfg, ctx, resume_point, run_id, train, started: float | None = None
) -> JobResult:
    tracker, job_dir, stop, main = ctx.tracker, ctx.job_dir, ctx.stop, ctx.dist.is_main
    try:
        outcome = train(cfg, ctx, resume_point)
        if isinstance(tracker, BackgroundStart | TrackerProcess):  # a failed start fails the run
            tracker.wait_started()
    except BaseException as err:  # every failure ends the run FAILED with a reason
        writing_to, needed = _write_hints(ctx) if is_write_full(err) else (None, None)
        note = explain_failure(err, writing_to=writing_to, needed_bytes=needed)
        try:
            ctx.progress.close(
                phase="failed", last_error=note, eta_s=None, active_s=_active_s(ctx, started)
            )
        except OSError as progress_err:  # a full disk refuses the progress file too
            print(f"Could not write progress.json: {progress_err}", file=sys.stderr, flush=True)
        tracker.set_description(note)
        _end_failed(tracker)
        # train.log is read by people and attached to issues: no token or password in it
        print(redact_text(traceback.format_exc()), file=sys.stderr)
        print(f"\nRun failed: {redact_text(note)}", file=sys.stderr, flush=True)
        _announce_end(cfg, ctx, "FAILED", started, note)
        return JobResult(EXIT_FAILED, run_id or tracker.run_id, job_dir, "FAILED", note)
    if outcome.stopped:
        note = f"Stopped by {stop.signal_name or 'request'} at step {outcome.step}; resume with --resume."
        active = _active_s(ctx, started)
        ctx.progress.close(phase="killed", step=outcome.step, eta_s=None, active_s=active)
        _tag_active(tracker, active)
        tracker.set_description(  # read on the Monitor and in MLflow: words, not a command line
            f"Stopped at step {outcome.step}. Resume "
            "continues from its newest checkpoint: the Resume button on the Monitor, or "
            "--resume on the command line."
        )
        tracker.end("KILLED")
        if main:
            print(note, flush=True)
        _announce_end(cfg, ctx, "KILLED", started)
        return JobResult(EXIT_STOPPED, run_id or tracker.run_id, job_dir, "KILLED", note)
    active = _active_s(ctx, started)
    ctx.progress.close(phase="finished", step=outcome.step, eta_s=0, active_s=active)
    _tag_active(tracker, active)
    tracker.end("FINISHED")
    files = ", ".join(str(f) for f in outcome.lora_files)
    if main:
        print(f"Finished {outcome.step} steps. LoRA: {files}", flush=True)
    _announce_end(cfg, ctx, "FINISHED", started)
    return JobResult(EXIT_OK, run_id or tracker.run_id, job_dir, "FINISHED", files)


def _active_s(ctx: RunContext, started: float | None) -> float | None:
    """Seconds the run has trained: the launches before this one (carried in its progress) and
    this one. Compare's duration and the Monitor's elapsed time leave a stop's pause out."""
    if started is None:
        return None
    before = (getattr(ctx.progress, "last", None) or {}).get("active_s") or 0.0
    return round(before + time.time() - started, 1)


def _tag_active(tracker, active: float | None) -> None:
    if active is not None:
        tracker.set_tags({TAG_ACTIVE_S: f"{active:.1f}"})


def _announce_end(
    cfg: TrainingConfig, ctx: RunContext, status: str, started: float | None, note: str = ""
) -> None:
    """The run-ended message to STUDIO_NOTIFY_URL (main process only, once per launch;
    ``trainer.notify``). Never raises: the run has ended whatever happens here."""
    if not ctx.dist.is_main:
        return
    try:
        url = load_settings().notify_url.get_secret_value().strip()
        if not url:
            return
        protect_url(url)  # first: no log line or message below shows it
        last = getattr(ctx.progress, "last", None) or {}
        summary = {**progress_summary(last, started), "note": note}
        notify_job_ended(url, ctx.job_dir, cfg.logging.run_name or cfg.name, status, summary)
    except Exception as err:  # a message is never worth a failed run
        print(f"Could not send the run-ended notification: {describe_error(err)}", file=sys.stderr)


def _announce_resume(choice: ResumeChoice, tracker) -> None:
    """Say where the run continues from; set damaged newer checkpoints aside and say so in the
    log, the run's note and a tag (main process only: it alone renames)."""
    print(f"Resuming from {choice.path} (step {choice.step})", flush=True)
    note = choice.fallback_note()
    if not note:
        return
    for path, _why in choice.damaged:
        set_aside(path)
    print(f"Warning: {note}", file=sys.stderr, flush=True)
    tracker.set_tags({TAG_RESUME_FALLBACK: note})
    tracker.set_description(note)


def _write_hints(ctx: RunContext) -> tuple[Path, int | None]:
    """Where the run was writing when it failed, and about how many bytes that takes (the newest
    checkpoint's size; its LoRA files' for the final LoRA): for the disk-full note."""
    last = getattr(ctx.progress, "last", None) or {}
    detail = str(last.get("phase_detail") or "") if last.get("phase") == "saving" else ""
    where = ctx.job_dir / detail if detail else ctx.job_dir
    try:
        newest = latest_checkpoint(ctx.checkpoint_dir)
        if newest is None:
            return where, None
        lora_only = detail.startswith("lora") and (newest / "lora").is_dir()
        return where, folder_bytes(newest / "lora" if lora_only else newest) or None
    except OSError:
        return where, None


def _end_failed(tracker) -> None:
    try:
        tracker.end("FAILED")
    except Exception as err:  # the store may sit on the same full disk: the log keeps the note
        print(f"Could not mark the MLflow run FAILED: {err}", file=sys.stderr, flush=True)


def _local_id() -> str:
    return uuid.uuid4().hex
