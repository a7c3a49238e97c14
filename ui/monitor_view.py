"""One run as the monitor sees it, gathered once per render: ``RunView`` and ``load_view``.

Its MLflow record, its job folder (job file, progress, exit, stop request, launched config) and
what follows from them: the phase, whether a trainer still works on it (``running``) or the run
has ended (``ended``: at once when the trainer says so, before its process has exited), the status
to show, total steps before the trainer reports them, whether it trains the demo model, and the
warnings of a run that did its work all the same (``warnings``: the trainer's
``studio.warning.*`` tags).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from advisor.models import is_demo
from trainer.jobs.folder import CONFIG_FILE, job_alive, job_folder, read_exit, stop_requested
from trainer.settings import StudioSettings
from trainer.tracking.job_file import JobInfo, read_job
from trainer.tracking.layout import TAG_PREDICTED, TAG_PREDICTED_TOTAL
from trainer.tracking.progress import TERMINAL_PHASES, read_progress
from trainer.tracking.records import get_run_record
from trainer.tracking.tracker import TAG_HUB_UPLOAD_FAILED, TAG_RESUME_FALLBACK, TAG_WARNING

STATUS_LABELS = {  # (icon, word): the run picker's plain-text options show the word only
    "RUNNING": (":material/play_circle:", "running"),
    "FINISHED": (":material/check_circle:", "finished"),
    "FAILED": (":material/error:", "failed"),
    "KILLED": (":material/stop_circle:", "stopped"),
    "SCHEDULED": (":material/schedule:", "scheduled"),
}
RESUMING = (":material/sync:", "resuming")
ENDED_STATUS = {"finished": "FINISHED", "failed": "FAILED", "killed": "KILLED"}  # phase → status
WARNING_TITLES = {  # a warning tag → what happened, in a few words (others: "Warning")
    TAG_HUB_UPLOAD_FAILED: "The LoRA was not uploaded to the Hugging Face Hub",
    TAG_RESUME_FALLBACK: "Resumed from an older checkpoint",
}


@dataclass
class RunView:
    """Everything the monitor shows about one run, gathered once per render."""

    run_id: str
    name: str
    status: str
    experiment_id: str
    note: str
    tags: dict[str, str]
    start_time: datetime | None
    job_dir: Path
    job: JobInfo | None
    alive: bool
    progress: dict[str, Any]
    exit: dict[str, Any] | None
    stop_requested: float | None
    params: dict[str, str] = field(default_factory=dict)  # the run's MLflow params

    @property
    def ended(self) -> bool:
        """The run is over: its trainer said so (it may still be closing the MLflow run; a new
        launch resets the progress to 'queued' first), or MLflow says so and no trainer runs."""
        terminal = self.status in ("FAILED", "KILLED", "FINISHED") and not self.alive
        return terminal or self.progress.get("phase") in TERMINAL_PHASES

    @property
    def running(self) -> bool:
        """A trainer is at work on this run (alive and not ended): Stop, a live ETA."""
        return self.alive and not self.ended

    @property
    def phase(self) -> str:
        phase = self.progress.get("phase")
        if self.status in ("FAILED", "KILLED", "FINISHED") and not self.alive:
            return {"FAILED": "failed", "KILLED": "killed", "FINISHED": "finished"}[self.status]
        if phase in TERMINAL_PHASES:
            return phase
        if self.alive and self.stop_requested and phase != "saving":
            return "stopping"
        if phase == "queued" and self.alive:  # launched; the trainer has not reported in yet
            return "starting"
        return phase or ("starting" if self.alive else "queued")

    @property
    def status_label(self) -> tuple[str, str]:
        """(icon, word) for the run's status: the trainer's word once it says the run ended
        (MLflow's status follows when the trainer has closed the run), 'resuming' while a
        relaunched trainer has not attached yet."""
        status = self.status
        if self.ended:
            status = ENDED_STATUS[self.phase] if status == "RUNNING" else status
        elif self.alive and status != "RUNNING":
            return RESUMING
        return STATUS_LABELS.get(status, ("", status.lower()))

    @property
    def warnings(self) -> list[tuple[str, str]]:
        """(title, text) for each warning the trainer tagged the run with: the training did its
        work, but something on the way did not (the Hub upload after it, a damaged newer
        checkpoint skipped on resume). The text says what happened and what to do."""
        prefix = f"{TAG_WARNING}."
        return [
            (WARNING_TITLES.get(tag, "Warning"), text.strip())
            for tag, text in sorted(self.tags.items())
            if tag.startswith(prefix) and text and text.strip()
        ]

    @cached_property
    def launched_config(self) -> dict[str, Any]:
        """The config the run was launched with (its job folder), {} when there is none."""
        try:
            config = yaml.safe_load((self.job_dir / CONFIG_FILE).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            return {}
        return config if isinstance(config, dict) else {}

    @property
    def total_steps(self) -> int | None:
        """From the trainer's progress, else the config the run was launched with (known before
        the model has loaded)."""
        reported = self.progress.get("total_steps")
        if reported:
            return int(reported)
        steps = (self.launched_config.get("train") or {}).get("steps")
        return steps if isinstance(steps, int) else None

    @property
    def is_demo(self) -> bool:
        """Trained on a tiny random demo model ("demo:..."): its previews are noise."""
        model = (self.launched_config.get("model") or {}).get("name_or_path")
        return is_demo(str(model or self.params.get("model.name_or_path") or ""))

    @property
    def predicted_s_per_step(self) -> float | None:
        value = (self.job.extra.get("predicted_s_per_step") if self.job else None) or self.tags.get(
            TAG_PREDICTED
        )
        try:
            return float(value) if value else None
        except ValueError:
            return None

    @property
    def predicted_total_s(self) -> float | None:
        """The advisor's seconds for the whole run at launch (all phases), None without one."""
        value = (self.job.extra.get("predicted_total_s") if self.job else None) or self.tags.get(
            TAG_PREDICTED_TOTAL
        )
        try:
            return float(value) if value else None
        except ValueError:
            return None


def load_view(settings: StudioSettings, run_id: str) -> RunView:
    record = get_run_record(settings.tracking_uri, run_id)
    folder = job_folder(settings, run_id)
    job = read_job(folder)
    return RunView(
        run_id=run_id,
        name=record.name,
        status=record.status,
        experiment_id=record.experiment_id,
        note=record.note,
        tags=record.tags,
        start_time=record.start_time,
        job_dir=folder,
        job=job,
        alive=job_alive(job),
        progress=read_progress(folder) or {},
        exit=read_exit(folder),
        stop_requested=stop_requested(settings, run_id),
        params=record.params,
    )
