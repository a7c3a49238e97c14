"""A run's artifacts read back: its sample images (with prompt and seed), its config YAML, its
adapters; straight from disk on a local store, downloaded once into the studio's cache otherwise."""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.files import read_json
from trainer.settings import load_settings
from trainer.tracking.connect import mlflow_client
from trainer.tracking.layout import CONFIG_ARTIFACT, IMAGES_DIR, LORA_DIRS, SAMPLES_DIR

if TYPE_CHECKING:  # pragma: no cover
    from mlflow import MlflowClient


@dataclass
class SampleImage:
    """One preview image logged with ``log_image(key=, step=)``."""

    step: int
    key: str
    path_or_uri: str  # a local file path (downloaded to a cache for remote stores)
    prompt: str | None
    seed: int | None
    timestamp: int = 0
    artifact_path: str = ""
    compressed_path: str | None = None  # the small .webp MLflow writes alongside
    extra: dict[str, Any] = field(default_factory=dict)


_IMAGE_NAME = re.compile(
    r"^(?P<key>.+?)[+%]step[+%](?P<step>\d+)[+%]timestamp[+%](?P<ts>\d+)[+%]"
    r"(?P<uuid>[0-9a-fA-F-]+)(?P<compressed>[+%]compressed)?\.(?P<ext>\w+)$"
)


def _download_cache() -> Path:
    """Where artifacts downloaded from a tracking server are kept: the studio home's cache
    (runs may be private, so never a shared, world-readable temp folder)."""
    return load_settings().home / "cache" / "downloads"


class _Artifacts:
    """Read a run's artifacts: straight from disk for a local store, via a cache otherwise."""

    def __init__(self, client: MlflowClient, run_id: str, cache_dir: str | Path | None) -> None:
        from mlflow.utils.file_utils import local_file_uri_to_path  # mlflow: 1-2 s to import

        self.client, self.run_id = client, run_id
        uri = client.get_run(run_id).info.artifact_uri or ""
        self.local: Path | None = None
        if uri.startswith("file:") or (uri and "://" not in uri and os.path.isabs(uri)):
            self.local = Path(local_file_uri_to_path(uri))
        else:  # downloads through a tracking server: no tqdm bar per file in the studio's log
            os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        base = Path(cache_dir) if cache_dir else _download_cache()
        self.cache = base / "artifacts" / run_id

    def list(self, path: str) -> list[Any]:
        if self.local is not None and not (self.local / path).is_dir():
            return []
        return list(self.client.list_artifacts(self.run_id, path))

    def walk(self, path: str) -> list[str]:
        files: list[str] = []
        for item in self.list(path):
            files.extend(self.walk(item.path) if item.is_dir else [item.path])
        return files

    def fetch(self, path: str, immutable: bool = True) -> Path:
        if self.local is not None:
            return self.local / path
        target = self.cache / path
        if not (immutable and target.exists()):
            target.parent.mkdir(parents=True, exist_ok=True)
            # A single file lands directly in dst_path (not under its artifact folders).
            return Path(self.client.download_artifacts(self.run_id, path, str(target.parent)))
        return target


def sample_images(
    tracking_uri: str, run_id: str, cache_dir: str | Path | None = None
) -> list[SampleImage]:
    """The run's stepped preview images, by step then key, with prompt/seed from
    ``samples/step_<n>.json`` (None when not recorded)."""
    store = _Artifacts(mlflow_client(tracking_uri), run_id, cache_dir)
    meta: dict[int, dict[str, Any]] = {}
    for item in store.list(SAMPLES_DIR):
        match = re.search(r"step_(\d+)\.json$", item.path)
        if match:
            data = read_json(store.fetch(item.path, immutable=False)) or {}
            meta[int(match.group(1))] = data.get("images") or {}
    found: dict[tuple[int, str, str], SampleImage] = {}
    compressed: dict[tuple[int, str, str], str] = {}
    for item in store.list(IMAGES_DIR):
        match = _IMAGE_NAME.match(item.path.rsplit("/", 1)[-1])
        if match is None:
            continue
        key = match["key"].replace("~", "/").replace("#", "/")
        ident = (int(match["step"]), key, match["uuid"])
        if match["compressed"]:
            compressed[ident] = item.path
            continue
        extra = dict(meta.get(ident[0], {}).get(key) or {})
        found[ident] = SampleImage(
            step=ident[0],
            key=key,
            path_or_uri=str(store.fetch(item.path)),
            prompt=extra.get("prompt"),
            seed=_int(extra.get("seed")),
            timestamp=int(match["ts"]),
            artifact_path=item.path,
            extra=extra,
        )
    for ident, image in found.items():
        if ident in compressed:
            image.compressed_path = str(store.fetch(compressed[ident]))
    return sorted(found.values(), key=lambda s: (s.step, s.key, s.timestamp))


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def load_run_config(tracking_uri: str, run_id: str) -> str:
    """The YAML text logged as ``config/train_config.yaml`` (load it with
    ``trainer.config.io.loads_config``)."""
    store = _Artifacts(mlflow_client(tracking_uri), run_id, None)
    if store.local is not None:
        return (store.local / CONFIG_ARTIFACT).read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory() as tmp:
        path = store.client.download_artifacts(run_id, CONFIG_ARTIFACT, tmp)
        return Path(path).read_text(encoding="utf-8")


def lora_artifacts(tracking_uri: str, run_id: str) -> list[str]:
    """Artifact paths of every file under ``lora/`` and ``checkpoints/``, sorted."""
    store = _Artifacts(mlflow_client(tracking_uri), run_id, None)
    return sorted(path for folder in LORA_DIRS for path in store.walk(folder))


def fetch_artifact(
    tracking_uri: str, run_id: str, path: str, cache_dir: str | Path | None = None
) -> Path:
    """One artifact file as a local path: the file itself on a local store, downloaded once
    through the tracking server (e.g. a teammate's LoRA) into a cache otherwise."""
    return _Artifacts(mlflow_client(tracking_uri), run_id, cache_dir).fetch(path)
