"""What the training loop records through: the ``Tracker`` protocol, ``NullTracker`` (records
nothing) and ``make_tracker``, which picks ``MlflowTracker`` when the config wants MLflow."""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from trainer.settings import load_settings
from trainer.tracking.layout import EndStatus
from trainer.tracking.mlflow_tracker import MlflowTracker

# Warnings about a run that still did its work: the text says what happened and what to do.
TAG_WARNING = "studio.warning"  # + ".<what>"
TAG_RESUME_FALLBACK = f"{TAG_WARNING}.resume"  # newer checkpoints were damaged and skipped
TAG_HUB_UPLOAD_FAILED = f"{TAG_WARNING}.hub_upload"  # the LoRA is saved, the upload failed

if TYPE_CHECKING:  # pragma: no cover
    from PIL.Image import Image

    from trainer.config.schema import TrainingConfig


@runtime_checkable
class Tracker(Protocol):
    """What the training loop calls. ``MlflowTracker`` records, ``NullTracker`` does nothing."""

    run_id: str | None

    def start(
        self,
        cfg: TrainingConfig,
        *,
        run_id: str | None = None,
        tags: Mapping[str, Any] | None = None,
    ) -> str: ...

    def log_config(self, cfg: TrainingConfig) -> None: ...

    def log_params(self, params: Mapping[str, Any]) -> list[str]: ...

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None: ...

    def flush(self, wait: bool = False) -> None: ...

    def log_image(
        self, image: Image, key: str, step: int, extra: Mapping[str, Any] | None = None
    ) -> None: ...

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None: ...

    def log_artifacts(self, folder: str | Path, artifact_path: str | None = None) -> None: ...

    def log_text(self, text: str, artifact_file: str) -> None: ...

    def set_tags(self, tags: Mapping[str, Any]) -> None: ...

    def set_description(self, text: str) -> None: ...

    def log_dataset_input(
        self,
        name: str,
        digest: str,
        source: str,
        profile: Mapping[str, Any] | None = None,
        context: str = "train",
    ) -> None: ...

    def end(self, status: EndStatus = "FINISHED") -> None: ...


class NullTracker:
    """Records nothing: lets the loop run without MLflow (tests, ``logging.use_mlflow: false``)."""

    def __init__(self) -> None:
        self.run_id: str | None = None

    def start(
        self,
        cfg: TrainingConfig,
        *,
        run_id: str | None = None,
        tags: Mapping[str, Any] | None = None,
    ) -> str:
        self.run_id = run_id or os.environ.get("MLFLOW_RUN_ID") or f"local-{uuid.uuid4().hex}"
        return self.run_id

    def log_config(self, cfg: TrainingConfig) -> None:
        pass

    def log_params(self, params: Mapping[str, Any]) -> list[str]:
        return []

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        pass

    def flush(self, wait: bool = False) -> None:
        pass

    def log_image(
        self, image: Image, key: str, step: int, extra: Mapping[str, Any] | None = None
    ) -> None:
        pass

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        pass

    def log_artifacts(self, folder: str | Path, artifact_path: str | None = None) -> None:
        pass

    def log_text(self, text: str, artifact_file: str) -> None:
        pass

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        pass

    def set_description(self, text: str) -> None:
        pass

    def log_dataset_input(
        self,
        name: str,
        digest: str,
        source: str,
        profile: Mapping[str, Any] | None = None,
        context: str = "train",
    ) -> None:
        pass

    def end(self, status: EndStatus = "FINISHED") -> None:
        pass


def make_tracker(cfg: TrainingConfig, tracking_uri: str | None = None) -> Tracker:
    """``MlflowTracker`` when the config wants MLflow (URI: argument or $MLFLOW_TRACKING_URI,
    else the studio's SQLite store), ``NullTracker`` otherwise."""
    if not cfg.logging.use_mlflow:
        return NullTracker()
    if tracking_uri is None:
        tracking_uri = load_settings().tracking_uri
    return MlflowTracker(tracking_uri)
