"""Finished runs for Compare page tests: loss curves and a red-circle sample every 10 steps,
logged to a real MLflow store without training (a run's extras are the caller's)."""

from __future__ import annotations

from PIL import Image

from trainer.config.schema import TrainingConfig
from trainer.tracking.mlflow_tracker import MlflowTracker
from trainer.tracking.new_run import create_run


def logged_run(settings, name: str, steps: int, loss: list[float]) -> tuple[str, MlflowTracker]:
    """A seed-42 demo run of ``steps`` steps with ``loss`` as its raw and smoothed loss; the
    tracker is left open for the caller's extras and its ``end``."""
    cfg = TrainingConfig.model_validate(
        {
            "name": name,
            "model": {"arch": "sd15", "name_or_path": "demo:sd15"},
            "train": {"lr": 1e-4, "steps": steps, "seed": 42},
            "logging": {"log_system_metrics": False},
        }
    )
    run_id = create_run(settings, cfg)
    tracker = MlflowTracker(settings.tracking_uri, background=False)
    tracker.start(cfg, run_id=run_id)
    for step, value in enumerate(loss[:steps], start=1):
        tracker.log_metrics({"loss": value, "loss_smoothed": value, "lr": 1e-4}, step)
    for step in range(10, steps + 1, 10):
        image = Image.new("RGB", (64, 64), (step * 3, 30, 30))
        tracker.log_image(image, "sample_0", step, {"prompt": "a red circle", "seed": 1})
    return run_id, tracker
