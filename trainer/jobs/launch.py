"""Launching a job: start the trainer as a subprocess attached to an MLflow run (or resume it).

The studio (and anything else) launches a run the same way a person would from a terminal::

    MLFLOW_TRACKING_URI=... MLFLOW_RUN_ID=<run id> \\
        python -m trainer run <home>/jobs/<run id>/config.yaml --job-dir <home>/jobs/<run id>

With ``runtime.num_processes`` > 1 the same command runs under accelerate's launcher, one
trainer process per GPU (or CPU processes joined by gloo; ``trainer.engine.distributed``)::

    python -m accelerate.commands.launch --multi_gpu --num_processes N --num_machines 1 \
        --mixed_precision no --dynamo_backend no --main_process_port <free port> \
        -m trainer run <config> --job-dir <job>

in a session of its own (``start_new_session=True``: Stop signals the whole process group, and the
trainer survives a restart of the studio), with stdout and stderr appended to ``train.log`` in the
job folder (``trainer.jobs.folder``). ``job.json`` records the pid, its create time and the
command; ``exit.json`` the exit code when the launching process saw the trainer end
(``trainer.jobs.children``). One run per device: a second launch on a busy device is refused with
``LaunchRefused``. Stopping, waiting and reconciling are in ``trainer.jobs.control``.

Nothing here imports mlflow or torch at module level (pages that only show progress stay cheap).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import platform
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.config.introspection import unresolved_autos
from trainer.config.io import ConfigError, load_config, save_config
from trainer.jobs.active import busy_reason
from trainer.jobs.children import watch_child
from trainer.jobs.folder import (
    CONFIG_FILE,
    EXIT_FILE,
    LOG_FILE,
    STOP_FILE,
    LaunchRefused,
    job_alive,
    job_folder,
)
from trainer.notify import NOTICE_CLAIM_FILE, NOTIFY_ENV
from trainer.settings import hub_offline_env, without_studio_http_defaults
from trainer.tracking.connect import mlflow_client
from trainer.tracking.job_file import read_job, write_job
from trainer.tracking.layout import TAG_DEVICE, TAG_PREDICTED, TAG_PREDICTED_TOTAL
from trainer.tracking.new_run import create_run
from trainer.tracking.progress import CARRIED_KEYS, read_progress, write_progress
from trainer.tracking.ratings import set_note
from trainer.tracking.run_names import with_free_run_name

if TYPE_CHECKING:  # pragma: no cover
    from trainer.config.schema import TrainingConfig
    from trainer.settings import StudioSettings

ROOT = Path(__file__).resolve().parents[2]  # the repository root: the trainer's cwd
LOCK_FILE = ".launch.lock"


@dataclass
class LaunchedJob:
    """A trainer process the studio started for one MLflow run."""

    run_id: str
    job_dir: Path
    pid: int
    command: list[str]
    config_path: Path
    log_path: Path
    device: str
    started: float
    resumed: bool = False
    process: subprocess.Popen | None = field(default=None, repr=False, compare=False)
    name: str = ""  # the run's name in MLflow (a taken name got a number at launch)


def train_command(
    config_path: str | Path,
    job_dir: str | Path,
    resume: str | None = None,
    processes: int = 1,
    port: int | None = None,
) -> list[str]:
    """The exact command line that trains (or resumes) the job, on ``processes`` processes."""
    cmd = [sys.executable, "-m", "trainer", "run", str(config_path), "--job-dir", str(job_dir)]
    if resume is not None:
        cmd += ["--resume"] if resume == "latest" else ["--resume", str(resume)]
    if processes > 1:
        # --multi_gpu is accelerate's multi-process launcher (torchrun); without CUDA (or with
        # runtime.device cpu) the processes join with gloo on the CPU. ``--cpu`` would start one.
        cmd[1:3] = [
            "-m", "accelerate.commands.launch", "--multi_gpu",
            "--num_processes", str(processes), "--num_machines", "1",
            "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", str(port or free_port()),
            "-m", "trainer",
        ]  # fmt: skip
    return cmd


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on now (the process group's rendezvous)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def config_processes(config_path: Path) -> int:
    """runtime.num_processes of a saved job config (1 when it cannot be read)."""
    try:
        return load_config(config_path).runtime.num_processes
    except (ConfigError, OSError):
        return 1


def trainer_env(settings: StudioSettings, run_id: str) -> dict[str, str]:
    """The environment of the trainer: ours (without the studio's fail-fast MLflow HTTP settings),
    plus where to track, which run to attach to, offline mode when the studio is offline, and the
    notification URL in use (a secret: here, never in the config that goes to MLflow)."""
    env = without_studio_http_defaults(dict(os.environ))
    env.update(hub_offline_env(settings))
    env.pop(NOTIFY_ENV, None)
    if notify_url := settings.notify_url_in_use():
        env[NOTIFY_ENV] = notify_url
    env.update(
        STUDIO_HOME=str(settings.home),
        MLFLOW_TRACKING_URI=settings.tracking_uri,
        MLFLOW_RUN_ID=run_id,
        PYTHONUNBUFFERED="1",
    )
    paths = [str(ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


def resolve_device(value: str) -> str:
    """'auto' → the device the trainer will pick, without importing torch when it is not loaded.

    The busy check only needs the kind: all CUDA GPUs of the machine count as one device.
    """
    if value != "auto":
        return value
    torch = sys.modules.get("torch")
    if torch is not None:
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        return "mps" if mps is not None and mps.is_available() else "cpu"
    if Path("/proc/driver/nvidia/version").exists() or Path("/dev/kfd").exists():
        return "cuda"
    if sys.platform == "darwin" and platform.machine() == "arm64":
        return "mps"
    return "cpu"


@contextlib.contextmanager
def _launch_lock(settings: StudioSettings) -> Iterator[None]:
    """One launch at a time across browser sessions and studio processes (busy check + start)."""
    settings.jobs_dir.mkdir(parents=True, exist_ok=True)
    with open(settings.jobs_dir / LOCK_FILE, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _start(
    cmd: Sequence[str], env: Mapping[str, str], log_path: Path, banner: str
) -> subprocess.Popen:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        log.write(banner.encode())
        log.flush()
        return subprocess.Popen(
            list(cmd),
            cwd=ROOT,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )


def _banner(what: str, cmd: Sequence[str], run_id: str) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S")
    return f"=== {when} {what} run {run_id}\n$ {shlex.join(cmd)}\n"


def launch(
    settings: StudioSettings,
    cfg: TrainingConfig,
    *,
    tags: Mapping[str, Any] | None = None,
    predicted_s_per_step: float | None = None,
    predicted_total_s: float | None = None,
) -> LaunchedJob:
    """Create the MLflow run, write the job folder and start the trainer on it.

    ``predicted_s_per_step`` and ``predicted_total_s`` (the advisor's whole run: starting,
    loading, caching, training, previews, saving) go to the run's tags and the job file, where
    the monitor sets them against what the trainer measures (and counts the whole run's
    prediction down before the trainer has measured anything).

    Refuses (``LaunchRefused``) a config with decisions still 'auto' or a device already busy.
    A run name the store already has gets the next free number (``my_lora`` → ``my_lora_2``):
    every new config is called ``my_lora``, and runs that share a name are hard to compare.
    """
    autos = unresolved_autos(cfg)
    if autos:
        raise LaunchRefused(
            "These settings are still 'auto' and need a value before launching: "
            + ", ".join(autos)
            + ". Let the advisor decide them on the review page, or set them in the wizard."
        )
    device = resolve_device(cfg.runtime.device)
    settings.ensure_dirs()
    with _launch_lock(settings):
        reason = busy_reason(settings, device)
        if reason:
            raise LaunchRefused(reason)
        run_tags = {TAG_DEVICE: device, **dict(tags or {})}
        if predicted_s_per_step:
            run_tags[TAG_PREDICTED] = f"{predicted_s_per_step:.4g}"
        if predicted_total_s:
            run_tags[TAG_PREDICTED_TOTAL] = f"{predicted_total_s:.4g}"
        cfg = with_free_run_name(settings.tracking_uri, cfg)  # under the lock: no twin names
        run_id = create_run(settings, cfg, run_tags)
        folder = job_folder(settings, run_id)
        folder.mkdir(parents=True, exist_ok=True)
        config_path = save_config(cfg, folder / CONFIG_FILE)
        cmd = train_command(config_path, folder, processes=cfg.runtime.num_processes)
        try:
            return _spawn(
                settings,
                run_id,
                folder,
                cmd,
                device=device,
                name=cfg.logging.run_name or cfg.name,
                resumed=False,
                extra={
                    "predicted_s_per_step": predicted_s_per_step,
                    "predicted_total_s": predicted_total_s,
                },
            )
        except OSError as err:
            _fail_run(settings, run_id, f"The trainer could not be started: {err}")
            raise LaunchRefused(f"The trainer could not be started: {err}") from err


def _spawn(
    settings: StudioSettings,
    run_id: str,
    folder: Path,
    cmd: list[str],
    *,
    device: str,
    name: str,
    resumed: bool,
    extra: Mapping[str, Any],
    history: list[dict[str, Any]] | None = None,
) -> LaunchedJob:
    log_path = folder / LOG_FILE
    for stale in (EXIT_FILE, STOP_FILE, NOTICE_CLAIM_FILE):  # this launch's own, when they come
        (folder / stale).unlink(missing_ok=True)
    # 'queued' until the trainer reports in (a resumed job's old progress says 'killed').
    previous = read_progress(folder) or {}
    write_progress(folder, {**{k: previous.get(k) for k in CARRIED_KEYS}, "phase": "queued"})
    started = time.time()
    proc = _start(
        cmd,
        trainer_env(settings, run_id),
        log_path,
        _banner("resuming" if resumed else "starting", cmd, run_id),
    )
    launches = [*(history or []), {"pid": proc.pid, "started": started, "resumed": resumed}]
    write_job(
        folder,
        pid=proc.pid,
        run_id=run_id,
        started=started,
        command=cmd,
        config_path=folder / CONFIG_FILE,
        name=name,
        device=device,
        launches=launches,
        **{k: v for k, v in extra.items() if v is not None},
    )
    watch_child(proc, folder)
    return LaunchedJob(
        run_id=run_id,
        job_dir=folder,
        pid=proc.pid,
        command=cmd,
        config_path=folder / CONFIG_FILE,
        log_path=log_path,
        device=device,
        started=started,
        resumed=resumed,
        process=proc,
        name=name,
    )


def _fail_run(settings: StudioSettings, run_id: str, note: str) -> None:
    with contextlib.suppress(Exception):
        set_note(settings.tracking_uri, run_id, note)
        mlflow_client(settings.tracking_uri).set_terminated(run_id, "FAILED")


def resumable(settings: StudioSettings, run_id: str, status: str | None = None) -> str | None:
    """Why the job cannot be resumed, or None when it can (``status``: its MLflow status)."""
    from trainer.engine.checkpoint import list_checkpoints  # torch: seconds to import

    folder = job_folder(settings, run_id)
    if not (folder / CONFIG_FILE).exists():
        return "This run was not launched by the studio (no job folder with its config)."
    if job_alive(read_job(folder)):
        return "The trainer is still running."
    if status == "FINISHED":
        return "The run finished; start a new run to train further."
    if not list_checkpoints(folder / "checkpoints"):
        return "No checkpoint was saved before it ended, so it cannot be resumed; launch it again."
    return None


def resume(settings: StudioSettings, run_id: str, status: str | None = None) -> LaunchedJob:
    """Start the trainer again on the same run and job folder from its latest checkpoint."""
    folder = job_folder(settings, run_id)
    job = read_job(folder)
    with _launch_lock(settings):
        why = resumable(settings, run_id, status)
        if why:
            raise LaunchRefused(why)
        device = str((job.extra.get("device") if job else None) or "cpu")
        reason = busy_reason(settings, device, exclude=run_id)
        if reason:
            raise LaunchRefused(reason)
        config = folder / CONFIG_FILE
        cmd = train_command(config, folder, resume="latest", processes=config_processes(config))
        extra = dict(job.extra) if job else {}
        history = list(extra.pop("launches", []) or [])
        name = str(extra.pop("name", "") or run_id[:8])
        extra.pop("device", None)
        return _spawn(
            settings,
            run_id,
            folder,
            cmd,
            device=device,
            name=name,
            resumed=True,
            extra=extra,
            history=history,
        )
