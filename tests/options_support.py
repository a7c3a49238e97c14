"""Helpers for tests/test_options_*.py: a tiny config, an in-process run, a recording tracker.

Not a test module itself (pytest only collects ``test_*.py``); the option tests import it as
``options_support`` (pytest puts ``tests/`` on ``sys.path`` for rootdir-less test folders).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from trainer.config.schema import TrainingConfig
from trainer.engine.context import RunContext, StopSignal
from trainer.engine.loop import train
from trainer.tracking.tracker import NullTracker


class RecordingTracker(NullTracker):
    """Keeps everything the loop logs (images included), so tests can compare runs."""

    def __init__(self) -> None:
        super().__init__()
        self.metrics: dict[int, dict[str, float]] = {}
        self.images: list[tuple[str, int, dict[str, Any], Any]] = []
        self.texts: dict[str, str] = {}
        self.tags: dict[str, str] = {}
        self.artifacts: list[tuple[str, str | None]] = []

    def log_metrics(self, metrics, step):
        self.metrics.setdefault(step, {}).update(metrics)

    def log_image(self, image, key, step, extra=None):
        self.images.append((key, step, dict(extra or {}), image))

    def log_text(self, text, artifact_file):
        self.texts[artifact_file] = text

    def set_tags(self, tags):
        self.tags.update({k: str(v) for k, v in tags.items()})

    def log_artifact(self, path, artifact_path=None):
        self.artifacts.append((str(path), artifact_path))

    def log_artifacts(self, folder, artifact_path=None):
        self.artifacts.append((str(folder), artifact_path))

    def losses(self) -> list[float]:
        return [self.metrics[s]["loss"] for s in sorted(self.metrics) if "loss" in self.metrics[s]]

    def sample_steps(self) -> list[int]:
        return sorted({step for _, step, _, _ in self.images})


class StopAfter(StopSignal):
    """Asks the loop to stop after ``steps`` steps, as SIGTERM would."""

    def __init__(self, steps: int) -> None:
        super().__init__()
        self.checks, self.limit = 0, steps

    @property
    def requested(self) -> bool:  # the loop reads this once per step
        self.checks += 1
        return self.checks > self.limit

    @requested.setter
    def requested(self, value: bool) -> None:
        pass


BASE: dict[str, Any] = {
    "name": "t",
    "model": {"arch": "sd15", "name_or_path": "demo:sd15"},
    "network": {"linear": 4, "linear_alpha": 4},
    "datasets": [{"folder_path": "demo:dataset", "trigger_word": "sks", "resolution": [64]}],
    "train": {
        "steps": 2,
        "batch_size": 2,
        "lr": 1e-3,
        "optimizer": "adamw",
        "gradient_checkpointing": False,
        "lr_scheduler": "constant",
    },
    "sample": {"sample_every": 0},
    "save": {"save_every": 1000, "dtype": "fp32", "save_format": "webui"},
    "logging": {"log_every": 1, "use_mlflow": False},
}


def tiny_config(**sections: Any) -> TrainingConfig:
    """The tiny sd15 run (2 steps, batch 2, 64 px) with sections merged in (dicts one level deep;
    ``datasets`` entries are merged onto the demo dataset's)."""
    data = copy.deepcopy(BASE)
    for section, values in sections.items():
        if section == "datasets":
            data[section] = [{**BASE["datasets"][0], **item} for item in values]
        elif isinstance(values, dict) and isinstance(data.get(section), dict):
            data[section] = {**data[section], **values}
        else:
            data[section] = values
    return TrainingConfig.model_validate(data)


def run(
    cfg: TrainingConfig,
    home: Path,
    job: Path,
    stop: StopSignal | None = None,
    resume: Path | None = None,
):
    """Train in this process; returns (Outcome, RecordingTracker)."""
    tracker = RecordingTracker()
    ctx = RunContext(home=home, job_dir=job, tracker=tracker, stop=stop or StopSignal())
    outcome = train(cfg, ctx, resume)
    return outcome, tracker
