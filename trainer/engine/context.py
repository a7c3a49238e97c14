"""Where a training run writes and how it is told to stop: ``RunContext`` and ``StopSignal``.

``trainer.engine.run`` builds the context (studio home, job folder, tracker, progress file, this
process's rank); the loop reports phases, the dataset report and previews through it. Each
progress write carries the run's time left (``eta_s``) from ``ctx.clock`` (trainer.engine.eta).
"""

from __future__ import annotations

import json
import signal
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from trainer.engine.distributed import Dist
from trainer.engine.eta import RunClock
from trainer.startup_gc import thaw as thaw_collector
from trainer.tracking.layout import TAG_DATASET
from trainer.tracking.progress import ProgressWriter
from trainer.tracking.startup import StartupTimes


class StopSignal:
    """Set by SIGTERM/SIGINT; the loop checks it between steps, checkpoints and ends KILLED."""

    def __init__(self) -> None:
        self.requested = False
        self.signal_name = ""

    def install(self) -> StopSignal:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, _frame: Any) -> None:
        self.requested = True
        self.signal_name = signal.Signals(signum).name


@dataclass
class RunContext:
    """Where the run writes: studio home, job folder, tracker, stop flag, progress file."""

    home: Path
    job_dir: Path
    tracker: Any
    stop: StopSignal = field(default_factory=StopSignal)
    progress: Any = None
    verbose: bool = False  # logging.verbose: one log line per step
    dist: Dist = field(default_factory=Dist)  # this process's rank when several train together
    refiner: Any = None  # loaded on the first preview when model.refiner_name_or_path is set
    clock: RunClock = field(default_factory=RunClock)  # time left; the loop plans it
    startup: StartupTimes = field(default_factory=StartupTimes)  # start-up phases: startup.json
    _training_from: int | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.job_dir.mkdir(parents=True, exist_ok=True)
        if self.progress is None:
            self.progress = ProgressWriter(self.job_dir)

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"

    @property
    def checkpoint_dir(self) -> Path:
        return self.job_dir / "checkpoints"

    def phase(self, name: str, **values: Any) -> None:
        """Enter (or stay in) phase ``name``; a new phase starts its own progress
        (``phase_started``, ``phase_done``/``phase_total``, ``phase_detail``: ProgressWriter).

        The first "training" report past the step training started from is the first finished
        step: its time goes into ``startup.json`` (main process only)."""
        if name == "training" and self.startup.written is None:
            self._note_first_step(values.get("step"))
        self.progress.update(phase=name, **{"eta_s": self.clock.seconds_left(), **values})

    def startup_done(self, phase: str) -> None:
        """Start-up phase ``phase`` ended (``trainer.tracking.startup.STARTUP_PHASES``)."""
        self.startup.mark(phase)

    def _note_first_step(self, step: Any) -> None:
        if not isinstance(step, int):
            return
        if self._training_from is None:
            self._training_from = step
        elif step > self._training_from:
            self.startup.mark("first_step")
            thaw_collector()  # start-up is over: nothing stays frozen (trainer.startup_gc)
            if self.dist.is_main:
                self.startup.write(self.job_dir)

    def phase_progress(
        self, detail: str | None = None, done: int | None = None, total: int | None = None
    ) -> None:
        """How far the current phase is: ``done`` of ``total`` items, working on ``detail``."""
        self.progress.update(
            phase_detail=detail,
            phase_done=done,
            phase_total=total,
            eta_s=self.clock.seconds_left(),
        )

    def dataset_report(self, report: Any, fingerprint: str) -> None:
        summary = report.to_dict()
        self.tracker.log_text(json.dumps(summary, indent=2, default=str), "dataset/report.json")
        skipped = summary.get("skipped") or []
        self.tracker.set_tags(
            {
                "dataset.skipped_files": str(len(skipped)),
                TAG_DATASET: fingerprint,
                **library_versions(),
            }
        )
        if skipped and self.dist.is_main:  # one voice in the log, however many processes
            print(f"skipped {len(skipped)} unusable file(s): {skipped[:20]}", flush=True)
        # Augmentations / random crops turn latent caching off, flips cache per variant: say so.
        for index, folder, mode, note in report.cache_notes():
            self.tracker.set_tags({f"dataset.{index}.latent_cache": mode})
            if self.dist.is_main:
                print(f"dataset {index} ({folder}): {note}", flush=True)


def library_versions() -> dict[str, str]:
    found = {}
    for package in ("torch", "diffusers", "transformers", "peft", "accelerate", "mlflow"):
        try:
            found[f"versions.{package}"] = version(package)
        except PackageNotFoundError:
            continue
    return found
