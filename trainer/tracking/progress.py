"""``progress.json`` in a job folder: the trainer rewrites it atomically every step or so, the
monitor page reads it without touching MLflow (importing this module does not import mlflow)."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trainer.files import read_json, write_json
from trainer.redaction import redact_text

PROGRESS_FILE = "progress.json"


PHASES = (
    "queued",
    "loading",
    "caching",
    "training",
    "sampling",
    "saving",
    "stopping",
    "finished",
    "failed",
    "killed",
)
TERMINAL_PHASES = ("finished", "failed", "killed")
# What a relaunch (a resume) carries over from the last launch's progress until it reports anew.
CARRIED_KEYS = ("step", "total_steps", "loss", "loss_smoothed", "lr", "samples", "active_s")
# What one phase reports about itself; a new phase starts without the last one's.
PHASE_OWN_KEYS = ("phase_started", "phase_done", "phase_total", "phase_detail")
PROGRESS_KEYS = (
    "phase",
    "step",
    "total_steps",
    "loss",
    "loss_smoothed",
    "lr",
    "s_per_step",
    "eta_s",
    "samples",
    "active_s",
    "last_error",
    "updated",
    *PHASE_OWN_KEYS,
)


def write_progress(job_dir: str | Path, progress: Mapping[str, Any]) -> dict[str, Any]:
    """Atomically replace ``<job_dir>/progress.json`` (temp file + ``os.replace``; ~0.1 ms).

    Usual keys: phase (one of ``PHASES``), step, total_steps, loss, loss_smoothed, lr,
    s_per_step, eta_s (seconds left, previews and saves included), samples (images so far),
    active_s (seconds trained by the launches before this one; all of them once it ended),
    last_error, and the phase's own progress (``PHASE_OWN_KEYS``): phase_started (wall time it
    began), phase_done of phase_total items (preview images, files saved), phase_detail (what is
    being worked on: "the base model", "checkpoints/step_00000010"). ``updated`` is set to now.
    """
    phase = progress.get("phase")
    if phase is not None and phase not in PHASES:
        raise ValueError(f"phase must be one of {', '.join(PHASES)}, got {phase!r}")
    data = {**progress, "updated": time.time()}
    if isinstance(data.get("last_error"), str):
        data["last_error"] = redact_text(data["last_error"])[:4000]
    write_json(Path(job_dir) / PROGRESS_FILE, data)  # no fsync: rewritten every second
    return data


class ProgressWriter:
    """``write_progress`` at most every ``min_interval_s`` (phase changes, progress within a
    phase and errors at once). A new phase drops the previous phase's own keys and stamps
    ``phase_started``, so the monitor never shows one phase's counts under another.

    An atomic replace costs ~1-3 ms on ext4 (it flushes the replaced file's blocks), i.e. 1-3% of a
    0.1 s step if done every step; the monitor polls every ~2 s, so once a second is plenty.
    Progress within a phase (preview images, files) changes seconds apart, so it is written at once.
    """

    def __init__(self, job_dir: str | Path, min_interval_s: float = 1.0) -> None:
        self.job_dir = Path(job_dir)
        self.min_interval_s = min_interval_s
        # A resumed run goes on from where its last launch left it (the launcher keeps these):
        # its monitor shows step 111 of 200 while the model loads, not 0, and counts the
        # preview images on (its samples refresh when the count grows).
        before = read_progress(self.job_dir) or {}
        self.last: dict[str, Any] = {
            key: before[key] for key in CARRIED_KEYS if before.get(key) is not None
        }
        self._written_at = -math.inf
        self._pending = False

    def update(self, force: bool = False, **fields: Any) -> bool:
        """Merge ``fields`` into the progress; write if due. Returns True when written."""
        new_phase = "phase" in fields and fields["phase"] != self.last.get("phase")
        urgent = (
            force
            or new_phase
            or (fields.get("last_error") and fields["last_error"] != self.last.get("last_error"))
            or any(
                fields.get(key) != self.last.get(key)
                for key in ("phase_done", "phase_detail")
                if key in fields
            )
        )
        if new_phase:
            for key in PHASE_OWN_KEYS:
                self.last.pop(key, None)
            self.last["phase_started"] = time.time()
        self.last.update(fields)
        now = time.monotonic()
        if not urgent and now - self._written_at < self.min_interval_s:
            self._pending = True
            return False
        self.last = write_progress(self.job_dir, self.last)
        self._written_at, self._pending = now, False
        return True

    def close(self, **fields: Any) -> None:
        """Write the final state (whatever is pending plus ``fields``)."""
        if fields or self._pending:
            self.update(force=True, **fields)


def read_progress(job_dir: str | Path) -> dict[str, Any] | None:
    """The progress dict (every key of ``PROGRESS_KEYS`` present, None if unknown), or None when
    the file is missing, partial or not JSON."""
    data = read_json(Path(job_dir) / PROGRESS_FILE)
    if data is None:
        return None
    return {**dict.fromkeys(PROGRESS_KEYS), **data}
