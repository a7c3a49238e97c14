"""Job control: launch the trainer as a subprocess attached to an MLflow run, stop it, resume it.

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
job folder. ``job.json`` records the pid, its create time and the command; ``exit.json`` the exit
code when the launching process saw the trainer end. One run per device: a second launch on a busy
device is refused with ``LaunchRefused``.

Nothing here imports mlflow or torch at module level (pages that only show progress stay cheap).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.tracking.store import (
    TERMINAL_PHASES,
    JobInfo,
    pid_alive,
    read_job,
    read_progress,
    write_job,
    write_progress,
)

if TYPE_CHECKING:  # pragma: no cover
    from trainer.config.schema import TrainingConfig
    from trainer.settings import StudioSettings

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
ROOT = Path(__file__).resolve().parents[2]
CONFIG_FILE = "config.yaml"
LOG_FILE = "train.log"
EXIT_FILE = "exit.json"
STOP_FILE = "stop.json"
LOCK_FILE = ".launch.lock"
TAG_DEVICE = "studio.device"
TAG_PREDICTED = "studio.predicted_s_per_step"
EXIT_MEANINGS = {
    0: "finished",
    1: "failed (see the error and the log)",
    2: "refused the config (invalid or still 'auto'; see the log)",
    3: "stopped on request (resume continues from the last checkpoint)",
    -9: "was killed (SIGKILL: out of memory or killed by hand)",
    -15: "was terminated by SIGTERM before it could install its handler",
}


class LaunchRefused(RuntimeError):
    """A launch, stop or resume that cannot happen now; the message says why and what to do."""


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


@dataclass
class ActiveJob:
    """A studio-launched trainer that is still alive, with its latest progress."""

    run_id: str
    job_dir: Path
    pid: int
    name: str
    device: str
    started: float
    progress: dict[str, Any]
    stop_requested: float | None = None

    @property
    def phase(self) -> str:
        return self.progress.get("phase") or "starting"

    @property
    def fraction(self) -> float:
        return progress_fraction(self.progress)


# -------------------------------------------------------------------------------- small helpers
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def job_folder(settings: StudioSettings, run_id: str) -> Path:
    """``<jobs>/<run id>``; refuses an id that is not one plain name (``../x``, ``a/b``, ...),
    since ids can arrive from a URL and must never reach outside the jobs folder."""
    if not isinstance(run_id, str) or not _RUN_ID.match(run_id) or ".." in run_id:
        raise LaunchRefused(f"{run_id!r} is not a run id (letters, digits, '_', '-', '.' only)")
    return settings.jobs_dir / run_id


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
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def config_processes(config_path: Path) -> int:
    """runtime.num_processes of a saved job config (1 when it cannot be read)."""
    from trainer.config.io import ConfigError, load_config

    try:
        return load_config(config_path).runtime.num_processes
    except (ConfigError, OSError):
        return 1


def trainer_env(settings: StudioSettings, run_id: str) -> dict[str, str]:
    """The environment of the trainer: ours (without the studio's fail-fast MLflow HTTP settings),
    plus where to track and which run to attach to."""
    from trainer.settings import without_studio_http_defaults

    env = without_studio_http_defaults(dict(os.environ))
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


def progress_fraction(progress: Mapping[str, Any] | None) -> float:
    progress = progress or {}
    step, total = progress.get("step") or 0, progress.get("total_steps") or 0
    if progress.get("phase") == "finished":
        return 1.0
    return min(1.0, max(0.0, step / total)) if total else 0.0


def format_duration(seconds: float | None) -> str:
    """12 s, 3 min 05 s, 2 h 10 min; '—' when unknown."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "—"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, default=str), encoding="utf-8")
    os.replace(tmp, path)


def read_exit(job_dir: Path) -> dict[str, Any] | None:
    """``{"code": n, "ended": epoch, "meaning": ...}`` once the launching process saw it end."""
    return _read_json(Path(job_dir) / EXIT_FILE)


def job_alive(job: JobInfo | None) -> bool:
    if job is None:
        return False
    return pid_alive(job.pid, job.create_time if job.create_time is not None else job.started)


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


# ------------------------------------------------------------------------ children and reaping
_children: dict[int, subprocess.Popen] = {}


def _watch(proc: subprocess.Popen, job_dir: Path) -> None:
    """Wait for the child in a daemon thread: reaps it (no zombie) and records its exit code."""

    def wait() -> None:
        code = _trainer_code(proc.wait(), proc.args, job_dir)
        _children.pop(proc.pid, None)
        meaning = EXIT_MEANINGS.get(code, f"ended with exit code {code}")
        with contextlib.suppress(OSError):
            _write_json(
                job_dir / EXIT_FILE, {"code": code, "ended": time.time(), "meaning": meaning}
            )

    _children[proc.pid] = proc
    threading.Thread(target=wait, name=f"trainer-{proc.pid}", daemon=True).start()


def _trainer_code(code: int, cmd: Any, job_dir: Path) -> int:
    """The trainer's own exit code. accelerate's launcher ends 1 when any process ends non-zero,
    e.g. 3 after a stop; the main process's final phase says what happened."""
    if code != 1 or "accelerate.commands.launch" not in list(cmd or []):
        return code
    phase = (read_progress(job_dir) or {}).get("phase")
    return {"finished": 0, "killed": 3}.get(str(phase), code)


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


# --------------------------------------------------------------------------------- busy check
def active_jobs(settings: StudioSettings) -> list[ActiveJob]:
    """Studio-launched trainers still alive on this machine, newest first (no MLflow access)."""
    found: list[ActiveJob] = []
    if not settings.jobs_dir.is_dir():
        return found
    for job_file in settings.jobs_dir.glob("*/job.json"):
        folder = job_file.parent
        progress = read_progress(folder) or {}
        if progress.get("phase") in TERMINAL_PHASES and read_exit(folder) is not None:
            continue  # cheap skip of ended jobs
        job = read_job(folder)
        if not job_alive(job):
            continue
        stop = _read_json(folder / STOP_FILE) or {}
        found.append(
            ActiveJob(
                run_id=job.run_id,
                job_dir=folder,
                pid=job.pid,
                name=str(job.extra.get("name") or job.run_id[:8]),
                device=str(job.extra.get("device") or "cpu"),
                started=job.started,
                progress=progress,
                stop_requested=stop.get("requested"),
            )
        )
    return sorted(found, key=lambda j: j.started, reverse=True)


def busy_reason(settings: StudioSettings, device: str, exclude: str | None = None) -> str | None:
    """Why a new run cannot start on ``device`` now, or None when it is free."""
    for job in active_jobs(settings):
        if job.run_id != exclude and job.device == device:
            step = job.progress.get("step")
            total = job.progress.get("total_steps")
            where = f" at step {step}/{total}" if step is not None and total else ""
            return (
                f"'{job.name}' is already training on {device} ({job.phase}{where}). One run per "
                "device at a time: wait for it to finish, or stop it on the monitor page first."
            )
    return None


# --------------------------------------------------------------------------------- launching
def launch(
    settings: StudioSettings,
    cfg: TrainingConfig,
    *,
    tags: Mapping[str, Any] | None = None,
    predicted_s_per_step: float | None = None,
) -> LaunchedJob:
    """Create the MLflow run, write the job folder and start the trainer on it.

    Refuses (``LaunchRefused``) a config with decisions still 'auto' or a device already busy.
    """
    from trainer.config.io import save_config
    from trainer.config.schema import unresolved_autos
    from trainer.tracking.store import create_run

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
                extra={"predicted_s_per_step": predicted_s_per_step},
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
    for stale in (EXIT_FILE, STOP_FILE):
        (folder / stale).unlink(missing_ok=True)
    # 'queued' until the trainer reports in (a resumed job's old progress says 'killed').
    previous = read_progress(folder) or {}
    keep = ("step", "total_steps", "loss", "loss_smoothed", "lr", "samples")
    write_progress(folder, {**{k: previous.get(k) for k in keep}, "phase": "queued"})
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
    _watch(proc, folder)
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
    )


def _fail_run(settings: StudioSettings, run_id: str, note: str) -> None:
    from mlflow import MlflowClient

    from trainer.tracking.store import set_note

    with contextlib.suppress(Exception):
        set_note(settings.tracking_uri, run_id, note)
        MlflowClient(settings.tracking_uri).set_terminated(run_id, "FAILED")


# ----------------------------------------------------------------------------- stop and resume
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
    previous = _read_json(folder / STOP_FILE) or {}
    _write_json(
        folder / STOP_FILE,
        {
            "requested": previous.get("requested", time.time()),
            "signal": sig.name,
            "at": time.time(),
        },
    )
    return True


def stop_requested(settings: StudioSettings, run_id: str) -> float | None:
    """When a stop was asked for this job (epoch seconds), if it was."""
    return (_read_json(job_folder(settings, run_id) / STOP_FILE) or {}).get("requested")


def wait_for_exit(settings: StudioSettings, run_id: str, timeout: float = 60.0) -> bool:
    """Wait until the job's process is gone; True if it ended within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    job = read_job(job_folder(settings, run_id))
    while time.monotonic() < deadline:
        if job is None or not job_alive(job):
            proc = _children.get(job.pid) if job else None
            if proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            return True
        time.sleep(0.1)
    return False


def resumable(settings: StudioSettings, run_id: str, status: str | None = None) -> str | None:
    """Why the job cannot be resumed, or None when it can (``status``: its MLflow status)."""
    from trainer.engine.checkpoint import list_checkpoints

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


# ------------------------------------------------------------------------------ log and checks
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


def reconcile(settings: StudioSettings) -> list[str]:
    """Close runs left RUNNING whose trainer is gone (marked FAILED or KILLED, with a note).

    When this studio process saw the trainer exit, its exit code and last log lines go into the
    note. Skipped on a fresh home whose local store does not exist yet (creating it takes seconds).
    """
    from trainer.tracking.store import reconcile_dead_runs, write_progress

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
    return reconcile_dead_runs(settings.tracking_uri, settings.jobs_dir)
