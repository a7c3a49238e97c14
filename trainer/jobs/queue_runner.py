"""The queue runner: one small process per studio home that trains the queue, one run at a time.

``python -m trainer queue run --home <home>`` takes the next queued entry
(``trainer.jobs.queue``) when its device is free, launches it with ``launch()`` (the studio's own
launch: the same job folder, MLflow run and busy check), waits for the trainer to end, records
the run's outcome on the entry and goes on. It runs apart from any browser session and from the
studio's server: closing the browser or restarting the studio neither stops nor loses the queue.

- One runner per home: it holds ``<home>/queue/runner.lock`` (an flock) while it lives; a second
  one finds it held and exits at once, doing nothing. ``runner_alive`` asks the same lock.
- It exits when the queue has had nothing queued or running for ``idle_exit_s``, or when
  ``<home>/queue/stop`` appears (``request_stop``); a run in progress goes on training then.
- The trainer lives in a session of its own, so a runner killed mid-run leaves it training; the
  next runner finds the entry ``running`` and watches that run to its end. A trainer that died
  with it is closed by ``trainer.jobs.control.reconcile`` (its MLflow run FAILED with a note)
  and the entry is marked failed, interrupted.
- ``ensure_runner`` starts a runner, detached, when the queue has work and none is alive: the
  studio calls it on start-up and after each enqueue, so a restarted studio resumes the queue.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING

from trainer.files import write_json
from trainer.jobs.active import busy_reason
from trainer.jobs.control import reconcile, stop
from trainer.jobs.folder import LaunchRefused, job_alive, job_folder
from trainer.jobs.launch import ROOT, launch
from trainer.jobs.queue import (
    TAG_QUEUE_ENTRY,
    QueueEntry,
    claim_next,
    entries,
    get_entry,
    has_work,
    queue_dir,
    run_tags,
    update_entry,
)
from trainer.redaction import describe_error
from trainer.settings import hub_offline_env, without_studio_http_defaults
from trainer.tracking.connect import mlflow_client
from trainer.tracking.job_file import read_job
from trainer.tracking.progress import read_progress
from trainer.tracking.ratings import set_note

if TYPE_CHECKING:  # pragma: no cover
    from trainer.settings import StudioSettings

RUNNER_LOCK = "runner.lock"
RUNNER_FILE = "runner.json"  # pid and start of the live runner (for people; the lock decides)
STOP_FILE = "stop"
RUNNER_LOG = "runner.log"
IDLE_EXIT_S = 60.0
POLL_S = 1.0
INTERRUPTED = (
    "Interrupted: its trainer ended without closing the run (killed, or the machine restarted)."
)
END_STATES = {"FINISHED": "done", "FAILED": "failed", "KILLED": "cancelled"}


# ------------------------------------------------------------------------------ is one alive
def _lock_path(settings: StudioSettings) -> Path:
    return queue_dir(settings) / RUNNER_LOCK


def runner_alive(settings: StudioSettings) -> bool:
    """Whether a runner holds this home's runner lock now."""
    path = _lock_path(settings)
    if not path.exists():
        return False
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


@contextlib.contextmanager
def _runner_lock(settings: StudioSettings) -> Iterator[bool]:
    """Hold the runner lock while the block runs; yields False (and holds nothing) when another
    runner has it."""
    path = _lock_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle: IO[str] = open(path, "a")  # noqa: SIM115 - held for the runner's whole life
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
    finally:
        handle.close()


def request_stop(settings: StudioSettings) -> None:
    """Ask the live runner to exit (it takes no further entry; a run in progress goes on)."""
    write_json(queue_dir(settings) / STOP_FILE, {"requested": time.time()})


def _stop_asked(settings: StudioSettings) -> bool:
    return (queue_dir(settings) / STOP_FILE).exists()


# --------------------------------------------------------------------------- starting one
def runner_command(settings: StudioSettings, idle_exit_s: float | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "trainer", "queue", "run", "--home", str(settings.home)]
    return cmd + (["--idle-exit", f"{idle_exit_s:g}"] if idle_exit_s is not None else [])


def runner_env(settings: StudioSettings) -> dict[str, str]:
    """The runner's environment: this process's, pointed at ``settings``' home and store (the
    trainers it starts get theirs from ``launch``)."""
    env = without_studio_http_defaults(dict(os.environ))
    env.update(hub_offline_env(settings), STUDIO_HOME=str(settings.home), PYTHONUNBUFFERED="1")
    env["STUDIO_EXPERIMENT"] = settings.experiment
    if settings.offline:
        env["STUDIO_OFFLINE"] = "1"
    if settings.tracking_uri_override:
        env["MLFLOW_TRACKING_URI"] = settings.tracking_uri_override
    else:
        env.pop("MLFLOW_TRACKING_URI", None)  # the home's own SQLite store
    env.pop("MLFLOW_RUN_ID", None)
    paths = [str(ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


def ensure_runner(settings: StudioSettings, *, idle_exit_s: float | None = None) -> bool:
    """Start a runner, detached, when the queue has work and no runner is alive; True when one
    was started. Its output goes to ``<home>/queue/runner.log``."""
    if not has_work(settings) or runner_alive(settings):
        return False
    if settings.uses_local_store and not (settings.home / "mlflow.db").exists():
        # Created here, before the runner's first launch: that would create MLflow's tables
        # while a page of this studio may be creating them too, and the two collide.
        mlflow_client(settings.tracking_uri).search_experiments(max_results=1)
    folder = queue_dir(settings)
    with open(folder / RUNNER_LOG, "ab") as out:
        proc = subprocess.Popen(
            runner_command(settings, idle_exit_s),
            cwd=ROOT,
            env=runner_env(settings),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # outlives the studio, and a Stop of the studio's group
            close_fds=True,
        )
    # reaped when it exits (no zombie in a long-lived studio process)
    threading.Thread(target=proc.wait, name=f"queue-runner-{proc.pid}", daemon=True).start()
    return True


# ------------------------------------------------------------------------------ the runner
def _say(text: str) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}", flush=True)


def run_queue(
    settings: StudioSettings, *, idle_exit_s: float = IDLE_EXIT_S, poll_s: float = POLL_S
) -> int:
    """Train the queue until it has been empty for ``idle_exit_s`` or a stop is asked. Returns
    0, also when another runner already serves this home (then it does nothing)."""
    with _runner_lock(settings) as mine:
        if not mine:
            _say(f"A queue runner already serves {settings.home}; nothing to do.")
            return 0
        (queue_dir(settings) / STOP_FILE).unlink(missing_ok=True)  # asked of an earlier runner
        info = queue_dir(settings) / RUNNER_FILE
        write_json(info, {"pid": os.getpid(), "started": time.time()})
        main = threading.current_thread() is threading.main_thread()  # signals: main only
        previous = signal.signal(signal.SIGTERM, _exit_on_sigterm) if main else None
        _say(f"Queue runner {os.getpid()} serves {settings.home}.")
        try:
            _serve(settings, idle_exit_s, poll_s)
        finally:
            if main:
                signal.signal(signal.SIGTERM, previous)
            info.unlink(missing_ok=True)
            (queue_dir(settings) / STOP_FILE).unlink(missing_ok=True)
    return 0


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(0)  # the finally blocks release the lock and tidy the runner's files


def _serve(settings: StudioSettings, idle_exit_s: float, poll_s: float) -> None:
    idle_since = time.monotonic()
    while not _stop_asked(settings):
        running = [entry for entry in entries(settings) if entry.state == "running"]
        if running:  # left by a runner that was killed, or ours: watch it to its end
            _watch(settings, running[0], poll_s)
            idle_since = time.monotonic()
            continue
        queued = [entry for entry in entries(settings) if entry.state == "queued"]
        if not queued:
            if time.monotonic() - idle_since >= idle_exit_s:
                _say("The queue is empty; the runner exits.")
                return
            time.sleep(poll_s)
            continue
        idle_since = time.monotonic()
        if busy_reason(settings, queued[0].device):
            time.sleep(poll_s)  # one training per device: wait for the other run to end
            continue
        _start_next(settings)
    _say("Stop asked; the runner exits (a run in progress goes on training).")


def _start_next(settings: StudioSettings) -> None:
    entry = claim_next(settings)
    if entry is None:
        return
    try:
        cfg = entry.training_config()
        job = launch(
            settings,
            cfg,
            tags=run_tags(entry),
            predicted_s_per_step=entry.predicted_s_per_step,
            predicted_total_s=entry.predicted_total_s,
        )
    except LaunchRefused as err:
        if busy_reason(settings, entry.device):  # taken meanwhile (a Launch on the review page)
            update_entry(settings, entry.id, state="queued", started_at=None)
            return
        _end(settings, entry, "failed", f"Not launched: {err}")
        return
    except Exception as err:  # the store refused, a config that no longer validates, ...
        _end(settings, entry, "failed", f"Not launched: {describe_error(err)}")
        return
    entry = update_entry(settings, entry.id, run_id=job.run_id, run_name=job.name)
    _say(f"Started '{entry.name}' as run {job.run_id} ({job.name}).")


def _watch(settings: StudioSettings, entry: QueueEntry, poll_s: float) -> None:
    """Wait for a running entry's trainer to end and record how its run ended."""
    run_id = entry.run_id or _find_run(settings, entry)
    if run_id is None:  # killed before launch() created the run: it can simply start again
        update_entry(settings, entry.id, state="queued", started_at=None)
        return
    if entry.run_id is None:
        entry = update_entry(settings, entry.id, run_id=run_id)
    folder = job_folder(settings, run_id)
    stop_sent = False
    while job_alive(read_job(folder)):
        if _stop_asked(settings):
            return
        current = get_entry(settings, entry.id)
        if current is not None and current.cancel_requested and not stop_sent:
            stop_sent = stop(settings, run_id)
        time.sleep(poll_s)
    _record_end(settings, entry.id, run_id, poll_s)


def _find_run(settings: StudioSettings, entry: QueueEntry) -> str | None:
    """The MLflow run launched for ``entry`` (its ``studio.queue_entry`` tag), if any."""
    with contextlib.suppress(Exception):
        client = mlflow_client(settings.tracking_uri)
        ids = [e.experiment_id for e in client.search_experiments()]
        found = client.search_runs(ids, filter_string=f"tags.`{TAG_QUEUE_ENTRY}` = '{entry.id}'")
        if found:
            return found[0].info.run_id
    return None


def _record_end(settings: StudioSettings, entry_id: str, run_id: str, poll_s: float) -> None:
    status = _run_status(settings, run_id)
    for _ in range(10):  # the trainer ends its run before it exits; give the store a moment
        if status != "RUNNING":
            break
        time.sleep(poll_s / 2)
        status = _run_status(settings, run_id)
    interrupted = status == "RUNNING"  # the trainer died without ending it (with the runner?)
    if interrupted:
        with contextlib.suppress(Exception):
            reconcile(settings)
        status = _run_status(settings, run_id)
    if status == "RUNNING":  # no trainer ever reported in: reconcile waits 15 min for those
        with contextlib.suppress(Exception):
            set_note(settings.tracking_uri, run_id, INTERRUPTED)
            mlflow_client(settings.tracking_uri).set_terminated(run_id, "FAILED")
        status = _run_status(settings, run_id)
    entry = get_entry(settings, entry_id)
    if entry is None:
        return
    state = END_STATES.get(str(status), "failed")
    progress = read_progress(job_folder(settings, run_id)) or {}
    error = str(progress.get("last_error") or "").strip().splitlines()
    if state == "done":
        message = ""
    elif state == "cancelled":
        message = "Cancelled while it ran." if entry.cancel_requested else "Stopped before the end."
    elif interrupted:
        message = INTERRUPTED + (f" {error[0]}" if error else "")
    else:
        message = f"Failed: {error[0]}" if error else f"Ended {status or 'with no status'}."
    _end(settings, entry, state, message, outcome=status)


def _run_status(settings: StudioSettings, run_id: str) -> str | None:
    try:
        return str(mlflow_client(settings.tracking_uri).get_run(run_id).info.status)
    except Exception:  # the store does not answer now: the entry says so
        return None


def _end(
    settings: StudioSettings,
    entry: QueueEntry,
    state: str,
    message: str,
    outcome: str | None = None,
) -> None:
    update_entry(
        settings, entry.id, state=state, ended_at=time.time(), message=message, outcome=outcome
    )
    _say(f"'{entry.name}' {state}{': ' + message if message else ''}")
