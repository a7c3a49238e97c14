"""When each start-up phase of a training process ended: ``startup.json`` in the job folder.

A run marks the end of each phase on its way to the first finished step (``STARTUP_PHASES``, in
this order on the main thread) as seconds since the process started (a monotonic clock, anchored
at the process's creation time from the kernel, so the interpreter's own start and the imports
count). ``tracking_ready`` is marked apart: the MLflow run may still be starting in the background
while the model loads, so it can fall anywhere. The file is written at the first finished step
(and again for a mark made later), with the process's CPU seconds at each mark (``cpu_s``: less
sensitive to a loaded machine than the wall clock); ``benchmarks/first_step.py`` reads it. Marks
cost two clock reads: they are always on.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trainer import startup_gc
from trainer.files import read_json, write_json

STARTUP_FILE = "startup.json"
STARTUP_PHASES = (
    "imports",  # interpreter start and the trainer's imports, up to run_job
    "tracking",  # the tracker started (or its background start launched)
    "model_load",  # the base model loaded and prepared
    "dataset_scan",  # every dataset scanned and checked
    "setup",  # LoRA added, optimizer and scheduler built, first preview
    "cache",  # what is encoded before training (text embeddings when the encoder is unloaded)
    "first_step",  # the first optimizer step finished
)
TRACKING_READY = "tracking_ready"  # the MLflow run exists (may be after any phase)


def seconds_since_process_start() -> float:
    """How long this process has existed: the kernel's start time of the process against the
    boot clock on Linux (10 ms ticks), psutil's creation time elsewhere."""
    try:
        with open("/proc/self/stat", encoding="ascii") as stat:  # field 22: start, in ticks
            ticks = int(stat.read().rsplit(")", 1)[1].split()[19])
        return time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        pass
    try:
        import psutil  # why: only where /proc is missing (macOS)

        return time.time() - float(psutil.Process().create_time())
    except Exception:  # no way to tell: count from the first mark
        return 0.0


class StartupTimes:
    """Seconds since process start at which each start-up phase ended (first mark of a name wins).

    One per run (``run_job`` makes it first thing, the ``RunContext`` carries it), so a process
    that runs several jobs (the tests) writes each job's own file."""

    def __init__(self) -> None:
        elapsed = seconds_since_process_start()
        self.started_wall = time.time() - elapsed
        self._started_mono = time.monotonic() - elapsed
        self.marks: dict[str, float] = {}
        self.cpu: dict[str, float] = {}  # CPU seconds of the whole process (every thread) by then
        self.written: Path | None = None
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._hooks: dict[str, list[Callable[[], None]]] = {}

    def now(self) -> float:
        return time.monotonic() - self._started_mono

    def mark(self, phase: str) -> None:
        """Phase ``phase`` ended now (thread-safe; a second mark of the same name is ignored)."""
        at, cpu = round(self.now(), 4), round(time.process_time(), 4)
        with self._lock:
            if phase in self.marks:
                return
            self.marks[phase], self.cpu[phase] = at, cpu
            late = self.written  # e.g. the MLflow run ready after the first step
            hooks = self._hooks.pop(phase, [])
        if late is not None:
            self._write(late)
        for hook in hooks:
            hook()

    def on_mark(self, phase: str, hook: Callable[[], None]) -> None:
        """Call ``hook`` (in the marking thread) when ``phase`` is marked; at once if it was."""
        with self._lock:
            if phase not in self.marks:
                self._hooks.setdefault(phase, []).append(hook)
                return
        hook()

    def to_dict(self) -> dict[str, Any]:
        with self._lock:
            marks, cpu = dict(self.marks), dict(self.cpu)
        ordered = {name: marks[name] for name in STARTUP_PHASES if name in marks}
        extra = {name: at for name, at in marks.items() if name not in ordered}
        return {
            "process_started": self.started_wall,
            "phases": ordered,
            "other": extra,
            "cpu_s": {name: cpu[name] for name in (*ordered, *extra)},
            "frozen_objects": startup_gc.frozen_objects,  # start-up without collection: how much
        }

    def write(self, job_dir: str | Path) -> Path | None:
        """Write ``<job_dir>/startup.json`` once (later calls do nothing; a mark made afterwards
        rewrites it); never raises."""
        if self.written is not None:
            return None
        self.written = path = Path(job_dir) / STARTUP_FILE  # tried once, even if refused
        return path if self._write(path) else None

    def _write(self, path: Path) -> bool:
        with self._write_lock:  # the last write holds every mark made before it
            try:
                write_json(path, self.to_dict())
            except OSError:  # a full disk: the run goes on, only the timing is lost
                return False
        return True


def read_startup(job_dir: str | Path) -> dict[str, Any] | None:
    """The ``startup.json`` of a job folder, or None when it is missing or not JSON."""
    return read_json(Path(job_dir) / STARTUP_FILE)
