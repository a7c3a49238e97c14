"""How a training run is laid out in MLflow: written by the trainer, read by the studio.

Layout of one run (every training run is one MLflow run):

- params: the flattened config (``train.lr``, ``datasets.0.resolution``, ...), secrets dropped;
- metrics: whatever the loop logs (``loss``, ``lr``, ...) sent in batches, ``hparam/<dotted>`` =
  every numeric setting at step 0 (``search_runs`` compares params as text), ``system/...``
  from MLflow's system-metrics monitor;
- tags: ``studio.app``, ``studio.arch``, ``studio.intent``, ``studio.preset``, ``studio.config_name``,
  ``studio.dataset_fingerprint``, ``studio.rating`` (1-5), ``studio.host`` / ``studio.pid`` /
  ``studio.pid_create_time`` (who trains it), ``mlflow.note.content`` (the note),
  ``studio.sample_rating.<step>.<image key>`` (1-5 per sample image), ``studio.device`` and
  ``studio.predicted_s_per_step`` / ``studio.predicted_total_s`` (set at launch by the studio);
- inputs: each dataset (name ``<index>:<folder>``, digest = the content fingerprint);
- artifacts: ``config/train_config.yaml`` (the exact YAML), ``images/<key>+step+<n>+timestamp+<ms>
  +<uuid>.png`` (+ ``+compressed.webp``; written by ``log_image(key=, step=)``),
  ``samples/step_<n>.json`` (prompt, seed, sampler, steps of each image at that step),
  ``lora/`` and ``checkpoints/`` (the adapters).

Next to MLflow, each job launched by the studio has a folder ``<home>/jobs/<run id>/`` holding
``job.json`` (pid, start time, command) and ``progress.json`` (rewritten atomically every step; the
monitor page reads it without touching MLflow).

``import mlflow`` takes 1-2 s, so nothing here imports it at module level: ``import
trainer.tracking.store`` stays cheap for pages and tools that only read progress files.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import math
import os
import queue
import re
import socket
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:  # pragma: no cover
    from mlflow import MlflowClient
    from PIL.Image import Image

    from trainer.config.schema import TrainingConfig
    from trainer.settings import StudioSettings

log = logging.getLogger(__name__)

EndStatus = Literal["FINISHED", "FAILED", "KILLED"]
END_STATUSES = ("FINISHED", "FAILED", "KILLED")

APP = "lora-studio"
TAG_APP = "studio.app"
TAG_ARCH = "studio.arch"
TAG_INTENT = "studio.intent"
TAG_PRESET = "studio.preset"
TAG_CONFIG_NAME = "studio.config_name"
TAG_MODEL = "studio.model"
TAG_DATASET = "studio.dataset_fingerprint"
TAG_RATING = "studio.rating"
TAG_SAMPLE_RATING = "studio.sample_rating"  # + ".<step>.<image key>" = 1-5
TAG_PREDICTED = "studio.predicted_s_per_step"  # the advisor's s/step, recorded at launch
TAG_PREDICTED_TOTAL = "studio.predicted_total_s"  # the advisor's whole-run seconds, at launch
TAG_HOST = "studio.host"
TAG_PID = "studio.pid"
TAG_PID_CREATE_TIME = "studio.pid_create_time"
TAG_NOTE = "mlflow.note.content"
TAG_RUN_NAME = "mlflow.runName"

CONFIG_ARTIFACT = "config/train_config.yaml"
IMAGES_DIR = "images"
SAMPLES_DIR = "samples"
LORA_DIRS = ("lora", "checkpoints")
HPARAM_PREFIX = "hparam/"

MAX_KEY_LEN = 250
MAX_PARAM_LEN = 6000
MAX_TAG_LEN = 8000
MAX_BUFFER_POINTS = 200
MAX_RETAINED_POINTS = 20_000  # kept for retry while the store is unreachable, then oldest dropped

PROGRESS_FILE = "progress.json"
JOB_FILE = "job.json"
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
    "last_error",
    "updated",
)

# ------------------------------------------------------------------------------------- secrets
REDACTED = "***REDACTED***"
_HF_TOKEN = re.compile(r"hf_[A-Za-z0-9]{30,}")
_SECRET_WORDS = ("secret", "password", "passwd", "apikey", "api_key", "credential")


def is_secret_key(key: str) -> bool:
    """A param/tag key that names a secret: ``hf_token``, ``auth.token``, ``api_key``, ``password``.

    Only whole words count for "token", so config fields about caption *tokens*
    (``keep_tokens``, ``shuffle_tokens``, ``token_dropout_rate``) are kept.
    """
    lowered = key.lower()
    if any(word in lowered for word in _SECRET_WORDS):
        return True
    last = re.split(r"[./:]", lowered)[-1]
    words = [w for w in re.split(r"[_\-\s]+", last) if w]
    return bool(words) and words[-1] in ("token", "tok", "pat")


def redact_text(text: str) -> str:
    """The text with anything shaped like a Hugging Face token replaced."""
    return _HF_TOKEN.sub("hf_" + REDACTED, text) if "hf_" in text else text


def redact(values: Mapping[str, Any]) -> dict[str, Any]:
    """A copy without secret-named keys and with token-shaped text replaced (values kept typed)."""
    clean: dict[str, Any] = {}
    for key, value in values.items():
        if is_secret_key(str(key)):
            continue
        clean[str(key)] = redact_text(value) if isinstance(value, str) else value
    return clean


# ------------------------------------------------------------------------------- tracking URIs
def check_tracking_uri(uri: str) -> str:
    """The URI if MLflow 3.17 can use it safely here; a ValueError that says why not otherwise."""
    if uri.startswith("sqlite:"):
        path = sqlite_path(uri)
        if path is not None and not path.is_absolute():
            raise ValueError(
                f"{uri}: relative SQLite path — it would depend on the working directory; "
                "use sqlite:////absolute/path/mlflow.db"
            )
        return uri
    if uri.startswith("file:") or "://" not in uri:
        raise ValueError(
            f"{uri}: MLflow 3.13+ refuses the file store — use sqlite:////abs/path/mlflow.db "
            "or an http(s):// tracking server"
        )
    return uri


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (None for in-memory or other stores)."""
    if not uri.startswith("sqlite:///"):
        return None
    raw = uri[len("sqlite:///") :].split("?", 1)[0]
    return Path(raw) if raw and raw != ":memory:" else None


def default_artifact_root(uri: str) -> Path | None:
    """``<folder of the SQLite file>/mlartifacts`` for a local store; None for a server."""
    db = sqlite_path(uri)
    return db.parent / "mlartifacts" if db is not None and db.is_absolute() else None


def _client(client_or_uri: MlflowClient | str) -> MlflowClient:
    if isinstance(client_or_uri, str):
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=check_tracking_uri(client_or_uri))
    return client_or_uri


def _now_ms() -> int:
    return int(time.time() * 1000)


# --------------------------------------------------------------------------------- experiments
def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "experiment"


def ensure_experiment(tracking_uri: str, name: str, artifact_root: str | Path | None = None) -> str:
    """The id of experiment ``name``, created (or restored) if needed.

    On a local SQLite store the experiment gets an absolute ``file://<artifact_root>/<name>``
    artifact location (default root: ``mlartifacts`` next to the database), never ``./mlruns``.
    On a tracking server the server decides, unless ``artifact_root`` is given.
    """
    from mlflow.exceptions import MlflowException

    client = _client(tracking_uri)
    found = client.get_experiment_by_name(name)
    if found is not None:
        if found.lifecycle_stage == "deleted":
            client.restore_experiment(found.experiment_id)
        return found.experiment_id
    root = Path(artifact_root) if artifact_root is not None else default_artifact_root(tracking_uri)
    location = None
    if root is not None:
        folder = root.expanduser().resolve() / _slug(name)
        folder.mkdir(parents=True, exist_ok=True)
        location = folder.as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:
        # Another process created it in the meantime.
        again = client.get_experiment_by_name(name)
        if again is None:
            raise
        return again.experiment_id


def run_tags(cfg: TrainingConfig) -> dict[str, str]:
    """The studio's standard tags for a run of this config."""
    tags = {
        TAG_APP: APP,
        TAG_ARCH: cfg.model.arch,
        TAG_INTENT: cfg.intent,
        TAG_CONFIG_NAME: cfg.name,
        TAG_MODEL: cfg.model.name_or_path,
    }
    if cfg.preset:
        tags[TAG_PRESET] = cfg.preset
    return tags


def _source_tags() -> dict[str, str]:
    """What the MLflow UI shows as user and source (fluent start_run would add these)."""
    tags = {"mlflow.source.type": "LOCAL", "mlflow.source.name": APP}
    with contextlib.suppress(Exception):
        import getpass

        tags["mlflow.user"] = getpass.getuser()
    return tags


def _clean_tags(tags: Mapping[str, Any]) -> dict[str, str]:
    clean = {}
    for key, value in redact(tags).items():
        if len(key) > MAX_KEY_LEN:
            log.warning("tag key longer than %d characters dropped: %.60s...", MAX_KEY_LEN, key)
            continue
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        clean[key] = redact_text(text)[:MAX_TAG_LEN]
    return clean


def create_run(
    settings: StudioSettings, cfg: TrainingConfig, tags: Mapping[str, Any] | None = None
) -> str:
    """Create the run (status RUNNING) before launching the trainer, which then attaches to it."""
    uri = settings.tracking_uri
    root = settings.artifacts_dir if settings.uses_local_store else None
    experiment_id = ensure_experiment(uri, cfg.logging.project_name, root)
    all_tags = {**_source_tags(), **run_tags(cfg), **dict(tags or {})}
    run = _client(uri).create_run(
        experiment_id,
        run_name=cfg.logging.run_name or cfg.name,
        tags=_clean_tags(all_tags),
    )
    return run.info.run_id


# ------------------------------------------------------------------------------- write: config
def config_params(cfg: TrainingConfig) -> dict[str, str]:
    """Flattened config as MLflow params: secrets dropped, values ≤ 6000, keys ≤ 250 chars."""
    from trainer.config.io import flatten

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # pydantic union serializer noise
        flat = flatten(cfg)
    params = {}
    for key, value in redact(flat).items():
        if len(key) > MAX_KEY_LEN:
            log.warning("param key longer than %d characters dropped: %.60s...", MAX_KEY_LEN, key)
            continue
        params[key] = str(value)[:MAX_PARAM_LEN]
    return params


def numeric_hparams(cfg: TrainingConfig) -> dict[str, float]:
    """Every numeric setting (not booleans, not "auto") as ``hparam/<dotted>`` → float."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        data = cfg.model_dump(mode="json")
    found: dict[str, float] = {}

    def walk(value: Any, prefix: str) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{prefix}.{key}" if prefix else str(key))
        elif isinstance(value, list) and value and all(isinstance(i, dict) for i in value):
            for index, item in enumerate(value):
                walk(item, f"{prefix}.{index}")
        elif (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and not is_secret_key(prefix)
            and len(HPARAM_PREFIX + prefix) <= MAX_KEY_LEN
        ):
            found[HPARAM_PREFIX + prefix] = float(value)

    walk(data, "")
    return found


def config_yaml(cfg: TrainingConfig) -> str:
    """The exact YAML of the config (comments included), tokens redacted."""
    from trainer.config.io import dump_yaml

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return redact_text(dump_yaml(cfg))


# ------------------------------------------------------------------------------ write: tracker
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


class NotStartedError(RuntimeError):
    """A tracker method was called before ``start()``."""


_IMAGE_KEY_BAD = re.compile(r"[^a-zA-Z0-9_\-./ ]+")


class MlflowTracker:
    """Writes one run through ``MlflowClient`` (no global fluent state, no per-step calls).

    Metrics are buffered and sent with one ``log_batch`` when ``flush()`` is called, when the
    buffer holds ``max_buffer`` points, when ``flush_every_steps`` steps passed since the last
    flush (off by default), or ``max_latency_s`` seconds (default 2) after the last flush.
    Flushes hand the batch to one writer thread (a SQLite ``log_batch`` of 50 points takes
    10-100 ms, too long to wait for in the loop); order is kept; ``flush(wait=True)`` and
    ``end()`` wait until everything is written. ``background=False`` writes in the caller's thread.
    Failures to write (store down, locked) are logged as warnings and kept in ``errors``; unsent
    metrics are kept and retried, so a flaky store never stops training.
    """

    def __init__(
        self,
        tracking_uri: str,
        *,
        artifact_root: str | Path | None = None,
        flush_every_steps: int | None = None,
        max_buffer: int = MAX_BUFFER_POINTS,
        max_latency_s: float = 2.0,
        background: bool = True,
    ) -> None:
        self.tracking_uri = check_tracking_uri(tracking_uri)
        self.background = background
        self.artifact_root = artifact_root
        self.flush_every_steps = flush_every_steps
        self.max_buffer = max_buffer
        self.max_latency_s = max_latency_s
        self.run_id: str | None = None
        self.attached = False
        self.errors: list[str] = []
        self._client: MlflowClient | None = None
        self._buffer: list[tuple[str, float, int, int]] = []
        self._last_step: int | None = None
        self._last_flush_step: int | None = None
        self._last_flush_time = time.monotonic()
        self._params: dict[str, str] = {}
        self._metric_keys: set[str] = set()
        self._samples: dict[int, dict[str, Any]] = {}
        self._monitor: Any = None
        self._ended = False
        self._lock = threading.Lock()
        self._queue: queue.Queue[list[tuple[str, float, int, int]] | None] = queue.Queue()
        self._queued = 0
        self._retry: list[tuple[str, float, int, int]] = []
        self._writer: threading.Thread | None = None
        self.stats = {"batches": 0, "points": 0, "writer_cpu_s": 0.0, "writer_wall_s": 0.0}

    # -- lifecycle
    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = _client(self.tracking_uri)
        return self._client

    def start(
        self,
        cfg: TrainingConfig,
        *,
        run_id: str | None = None,
        tags: Mapping[str, Any] | None = None,
    ) -> str:
        """Attach to ``run_id`` / ``$MLFLOW_RUN_ID`` (set RUNNING again), or create a run.

        Then tags it, logs the config (params, YAML, ``hparam/`` metrics) and starts the system
        metrics monitor in this process when ``cfg.logging.log_system_metrics``.
        """
        client = self.client
        existing = run_id or os.environ.get("MLFLOW_RUN_ID") or None
        if existing:
            run = client.get_run(existing)
            if run.info.lifecycle_stage == "deleted":
                raise ValueError(f"run {existing} is deleted; restore it or start a new run")
            if run.info.status != "RUNNING":
                client.update_run(existing, status="RUNNING")
            self.attached = True
            self._params = dict(run.data.params)
            self._metric_keys = set(run.data.metrics)
        else:
            experiment_id = ensure_experiment(
                self.tracking_uri, cfg.logging.project_name, self.artifact_root
            )
            run = client.create_run(
                experiment_id,
                run_name=cfg.logging.run_name or cfg.name,
                tags=_clean_tags(_source_tags()),
            )
        self.run_id = run.info.run_id
        self._ended = False
        self.set_tags({**run_tags(cfg), **self._process_tags(), **dict(tags or {})})
        self.log_config(cfg)
        if cfg.logging.log_system_metrics:
            self._start_system_metrics(resume=self.attached)
        return self.run_id

    def _process_tags(self) -> dict[str, str]:
        tags = {TAG_HOST: socket.gethostname(), TAG_PID: str(os.getpid())}
        created = _process_create_time(os.getpid())
        if created is not None:
            tags[TAG_PID_CREATE_TIME] = f"{created:.3f}"
        return tags

    def _start_system_metrics(self, resume: bool) -> None:
        # Started here, in the process that trains, whether the run was created or attached.
        try:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            self._monitor = SystemMetricsMonitor(
                self.run_id, resume_logging=resume, tracking_uri=self.tracking_uri
            )
            self._monitor.start()
        except Exception as err:  # a missing NVML or psutil must not stop training
            self._note_error("system metrics", err)
            self._monitor = None

    def end(self, status: EndStatus = "FINISHED") -> None:
        """Stop system metrics, flush, and set the final status (idempotent)."""
        if status not in END_STATUSES:
            raise ValueError(f"status must be one of {END_STATUSES}, got {status!r}")
        if self.run_id is None or self._ended:
            return
        if self._monitor is not None:
            try:
                self._monitor.finish()
            except Exception as err:
                self._note_error("system metrics", err)
            self._monitor = None
        self.flush(wait=True)
        self._stop_writer()
        self.client.set_terminated(self.run_id, status)
        self._ended = True

    # -- params and config
    def log_config(self, cfg: TrainingConfig) -> None:
        self.log_params(config_params(cfg))
        self.log_text(config_yaml(cfg), CONFIG_ARTIFACT)
        hparams = {k: v for k, v in numeric_hparams(cfg).items() if k not in self._metric_keys}
        if hparams:  # sent at once, apart from the training metrics' buffer and its step count
            from mlflow.entities import Metric

            stamp = _now_ms()
            batch = [Metric(k, v, stamp, 0) for k, v in hparams.items()]
            if self._write("hparams", lambda: self.client.log_batch(self._rid, metrics=batch)):
                self._metric_keys.update(hparams)

    def log_params(self, params: Mapping[str, Any]) -> list[str]:
        """Log params once; identical re-logs are skipped, changed values are refused (MLflow
        cannot change a param) and returned, with a warning."""
        from mlflow.entities import Param

        fresh: dict[str, str] = {}
        refused: list[str] = []
        for key, value in redact(params).items():
            if len(key) > MAX_KEY_LEN:
                refused.append(key)
                continue
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            text = redact_text(text)[:MAX_PARAM_LEN]
            if key in self._params:
                if self._params[key] != text:
                    refused.append(key)
                continue
            fresh[key] = text
        if refused:
            log.warning(
                "params not logged (already logged with another value or key too long): %s",
                ", ".join(refused[:20]),
            )
        if fresh and self._write(
            "params",
            lambda: self.client.log_batch(
                self._rid, params=[Param(k, v) for k, v in fresh.items()]
            ),
        ):
            self._params.update(fresh)
        return refused

    # -- metrics
    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Buffer the values (a few µs); nothing is sent unless a flush condition is met, and an
        automatic flush only hands the batch to the writer thread."""
        stamp = _now_ms()
        buffer = self._buffer
        for key, value in metrics.items():
            buffer.append((key, float(value), stamp, step))
        self._last_step = step
        if self._last_flush_step is None:
            self._last_flush_step = step
        if (
            len(buffer) >= self.max_buffer
            or (self.flush_every_steps and step - self._last_flush_step >= self.flush_every_steps)
            or time.monotonic() - self._last_flush_time >= self.max_latency_s
        ):
            self.flush()

    def flush(self, wait: bool = False) -> None:
        """Send the buffered metrics with one ``log_batch`` (MLflow chunks it to 1000 a request).

        By default the batch is only handed to the writer thread (microseconds), so the loop may
        call this every ``log_every`` steps; ``wait=True`` returns once everything logged so far
        is written (``end()`` always waits).
        """
        self._last_flush_time = time.monotonic()
        if self._last_step is not None:
            self._last_flush_step = self._last_step
        if self.run_id is None:
            return
        points, self._buffer = self._buffer, []
        if not self.background:
            self._write_points(points)
            return
        if points:
            self._ensure_writer()
            with self._lock:
                self._queued += len(points)
            self._queue.put(points)
        if wait:
            if self._writer is not None:
                self._queue.join()
            if self._retry:  # the writer failed: one more try now, in this thread
                self._write_points([])

    @property
    def buffered(self) -> int:
        """Metric points in the buffer, not yet handed to the writer."""
        return len(self._buffer)

    @property
    def pending(self) -> int:
        """Metric points not yet written to MLflow (buffered, queued or waiting for a retry)."""
        with self._lock:
            return len(self._buffer) + self._queued + len(self._retry)

    def _ensure_writer(self) -> None:
        if self._writer is None or not self._writer.is_alive():
            self._writer = threading.Thread(
                target=self._writer_loop, name="mlflow-metrics-writer", daemon=True
            )
            self._writer.start()
            atexit.register(self._drain_at_exit)

    def _writer_loop(self) -> None:
        while True:
            points = self._queue.get()
            try:
                if points is None:
                    return
                self._write_points(points)
                with self._lock:
                    self._queued -= len(points)
            finally:
                self._queue.task_done()

    def _write_points(self, points: list[tuple[str, float, int, int]]) -> None:
        from mlflow.entities import Metric

        cpu, wall = time.thread_time(), time.perf_counter()
        with self._lock:
            points, self._retry = self._retry + points, []
        if not points:
            return
        batch = [Metric(k, v, t, s) for k, v, t, s in points]
        if self._write("metrics", lambda: self.client.log_batch(self._rid, metrics=batch)):
            self._metric_keys.update(k for k, _, _, _ in points)
            self.stats["batches"] += 1
            self.stats["points"] += len(points)
        else:
            with self._lock:
                self._retry = (points + self._retry)[-MAX_RETAINED_POINTS:]
        self.stats["writer_cpu_s"] += time.thread_time() - cpu
        self.stats["writer_wall_s"] += time.perf_counter() - wall

    def _stop_writer(self, timeout: float = 30.0) -> None:
        if self._writer is not None and self._writer.is_alive():
            self._queue.put(None)
            self._writer.join(timeout)
        self._writer = None
        with contextlib.suppress(Exception):
            atexit.unregister(self._drain_at_exit)

    def _drain_at_exit(self) -> None:
        # The interpreter is exiting without end(): write what is left, but never hang.
        with contextlib.suppress(Exception):
            self._buffer, points = [], self._buffer
            if points:
                self._queue.put(points)
            self._stop_writer(timeout=10.0)

    # -- images, files, tags
    def log_image(
        self, image: Image, key: str, step: int, extra: Mapping[str, Any] | None = None
    ) -> None:
        """``log_image(key=, step=)`` (MLflow's stepped images) + ``samples/step_<n>.json``
        recording the prompt, seed, sampler and steps of every image at that step."""
        safe_key = _IMAGE_KEY_BAD.sub("_", key).strip() or "sample"
        self._write(
            "image",
            lambda: self.client.log_image(
                self._rid, image, key=safe_key, step=int(step), synchronous=True
            ),
        )
        record = redact({k: v for k, v in (extra or {}).items()})
        entry = self._samples.setdefault(int(step), {"step": int(step), "images": {}})
        entry["images"][safe_key] = json.loads(json.dumps(record, default=str))
        self.log_text(json.dumps(entry, indent=1, sort_keys=True), _sample_file(int(step)))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self._write(
            "artifact", lambda: self.client.log_artifact(self._rid, str(path), artifact_path)
        )

    def log_artifacts(self, folder: str | Path, artifact_path: str | None = None) -> None:
        self._write(
            "artifacts", lambda: self.client.log_artifacts(self._rid, str(folder), artifact_path)
        )

    def log_text(self, text: str, artifact_file: str) -> None:
        self._write(
            "text", lambda: self.client.log_text(self._rid, redact_text(text), artifact_file)
        )

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        clean = _clean_tags(tags)
        if clean:
            self._write(
                "tags",
                lambda: self.client.log_batch(
                    self._rid, tags=[RunTag(k, v) for k, v in clean.items()]
                ),
            )

    def set_description(self, text: str) -> None:
        self.set_tags({TAG_NOTE: text})

    def log_dataset_input(
        self,
        name: str,
        digest: str,
        source: str,
        profile: Mapping[str, Any] | None = None,
        context: str = "train",
    ) -> None:
        """Record the dataset in the run's inputs (MLflow "Datasets used") and as a tag."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        dataset = Dataset(
            name=name[:500],
            digest=digest[:36],
            source_type="local",
            source=json.dumps({"uri": redact_text(source)}),
            profile=json.dumps(dict(profile or {}), default=str),
        )
        entry = DatasetInput(dataset, tags=[InputTag("mlflow.data.context", context)])
        self._write("dataset", lambda: self.client.log_inputs(self._rid, datasets=[entry]))
        self.set_tags({TAG_DATASET: digest})

    # -- helpers
    @property
    def _rid(self) -> str:
        if self.run_id is None:
            raise NotStartedError("MlflowTracker.start() was not called")
        return self.run_id

    def _write(self, what: str, call: Any) -> bool:
        try:
            call()
            return True
        except NotStartedError:
            raise
        except Exception as err:
            self._note_error(what, err)
            return False

    def _note_error(self, what: str, err: BaseException) -> None:
        message = f"MLflow {what}: {type(err).__name__}: {err}"
        self.errors.append(message[:2000])
        log.warning(message)


def make_tracker(cfg: TrainingConfig, tracking_uri: str | None = None) -> Tracker:
    """``MlflowTracker`` when the config wants MLflow (URI: argument or $MLFLOW_TRACKING_URI,
    else the studio's SQLite store), ``NullTracker`` otherwise."""
    if not cfg.logging.use_mlflow:
        return NullTracker()
    if tracking_uri is None:
        from trainer.settings import load_settings

        tracking_uri = load_settings().tracking_uri
    return MlflowTracker(tracking_uri)


def _sample_file(step: int) -> str:
    return f"{SAMPLES_DIR}/step_{step:06d}.json"


# ------------------------------------------------------------------------------ progress files
def _atomic_write_json(path: Path, data: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, default=str), encoding="utf-8")
    os.replace(tmp, path)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_progress(job_dir: str | Path, progress: Mapping[str, Any]) -> dict[str, Any]:
    """Atomically replace ``<job_dir>/progress.json`` (temp file + ``os.replace``; ~0.1 ms).

    Usual keys: phase (one of ``PHASES``), step, total_steps, loss, loss_smoothed, lr,
    s_per_step, eta_s, samples (images so far), last_error. ``updated`` is set to now.
    """
    phase = progress.get("phase")
    if phase is not None and phase not in PHASES:
        raise ValueError(f"phase must be one of {', '.join(PHASES)}, got {phase!r}")
    data = {**progress, "updated": time.time()}
    if isinstance(data.get("last_error"), str):
        data["last_error"] = redact_text(data["last_error"])[:4000]
    _atomic_write_json(Path(job_dir) / PROGRESS_FILE, data)
    return data


class ProgressWriter:
    """``write_progress`` at most every ``min_interval_s`` (phase changes and errors at once).

    An atomic replace costs ~1-3 ms on ext4 (it flushes the replaced file's blocks), i.e. 1-3% of a
    0.1 s step if done every step; the monitor polls every ~2 s, so once a second is plenty.
    """

    def __init__(self, job_dir: str | Path, min_interval_s: float = 1.0) -> None:
        self.job_dir = Path(job_dir)
        self.min_interval_s = min_interval_s
        self.last: dict[str, Any] = {}
        self._written_at = -math.inf
        self._pending = False

    def update(self, force: bool = False, **fields: Any) -> bool:
        """Merge ``fields`` into the progress; write if due. Returns True when written."""
        urgent = force or (
            ("phase" in fields and fields["phase"] != self.last.get("phase"))
            or (fields.get("last_error") and fields["last_error"] != self.last.get("last_error"))
        )
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
    data = _read_json(Path(job_dir) / PROGRESS_FILE)
    if data is None:
        return None
    return {**dict.fromkeys(PROGRESS_KEYS), **data}


# ----------------------------------------------------------------------------------- job folder
@dataclass
class JobInfo:
    """``job.json``: what the studio launched for a run."""

    run_id: str
    pid: int
    started: float  # epoch seconds, when the studio launched the process
    command: list[str]
    config_path: str
    host: str = ""
    create_time: float | None = None  # psutil's process create time, when it could be read
    extra: dict[str, Any] = field(default_factory=dict)


def job_dir(jobs_dir: str | Path, run_id: str) -> Path:
    return Path(jobs_dir) / run_id


def write_job(
    job_dir: str | Path,
    pid: int,
    run_id: str,
    started: float,
    command: Iterable[str] | str,
    config_path: str | Path,
    **extra: Any,
) -> JobInfo:
    """Atomically write ``<job_dir>/job.json`` (the process's create time is recorded too)."""
    info = JobInfo(
        run_id=run_id,
        pid=int(pid),
        started=float(started),
        command=[command] if isinstance(command, str) else [str(c) for c in command],
        config_path=str(config_path),
        host=socket.gethostname(),
        create_time=_process_create_time(int(pid)),
        extra=redact(extra),
    )
    info.command = [redact_text(part) for part in info.command]
    _atomic_write_json(Path(job_dir) / JOB_FILE, asdict(info))
    return info


def read_job(job_dir: str | Path) -> JobInfo | None:
    data = _read_json(Path(job_dir) / JOB_FILE)
    if data is None:
        return None
    try:
        return JobInfo(
            run_id=str(data["run_id"]),
            pid=int(data["pid"]),
            started=float(data["started"]),
            command=list(data.get("command") or []),
            config_path=str(data.get("config_path") or ""),
            host=str(data.get("host") or ""),
            create_time=None if data.get("create_time") is None else float(data["create_time"]),
            extra=dict(data.get("extra") or {}),
        )
    except (KeyError, TypeError, ValueError):
        return None


def _process_create_time(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except (psutil.Error, OSError):
        return None


def pid_alive(pid: int, started: float | None = None, tolerance_s: float = 2.0) -> bool:
    """True when process ``pid`` runs and (if ``started`` is given) was created within
    ``tolerance_s`` of it, i.e. the pid was not reused by another process. Zombies are dead."""
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        created = proc.create_time()
    except psutil.NoSuchProcess:
        return False
    except (psutil.AccessDenied, OSError):
        return True  # exists, but not ours to inspect
    return started is None or abs(created - started) <= tolerance_s


def _job_alive(job: JobInfo) -> bool:
    if job.host and job.host != socket.gethostname():
        return True  # cannot see another machine's processes
    return pid_alive(job.pid, job.create_time if job.create_time is not None else job.started)


def reconcile_dead_runs(
    client_or_uri: MlflowClient | str,
    jobs_dir: str | Path,
    *,
    stale_after_minutes: float = 15.0,
    experiment_ids: list[str] | None = None,
) -> list[str]:
    """Close runs left RUNNING by a trainer process that is gone (SIGKILL, crash, reboot).

    A RUNNING run is dead when its ``job.json`` pid is not alive (or was reused by another
    process: create time off by more than 2 s), or — without a job folder — when the ``studio.pid``
    tag it was started with is gone on this host, or when a studio run has neither and is older
    than ``stale_after_minutes``. It is marked KILLED if the progress file says it was stopping,
    FINISHED if it says finished, FAILED otherwise, with a note saying what happened; the progress
    file's phase is updated too. Returns the run ids changed.
    """
    client = _client(client_or_uri)
    ids = experiment_ids or [e.experiment_id for e in client.search_experiments()]
    if not ids:
        return []
    runs = client.search_runs(ids, filter_string="attributes.status = 'RUNNING'", max_results=1000)
    changed: list[str] = []
    now = time.time()
    host = socket.gethostname()
    for run in runs:
        rid = run.info.run_id
        folder = job_dir(jobs_dir, rid)
        job = read_job(folder)
        tags = run.data.tags
        if job is not None:
            dead, pid = not _job_alive(job), job.pid
        elif TAG_PID in tags and tags.get(TAG_HOST) == host:
            pid = int(tags[TAG_PID]) if tags[TAG_PID].isdigit() else -1
            created = _float(tags.get(TAG_PID_CREATE_TIME))
            dead = pid < 0 or not pid_alive(pid, created)
        elif tags.get(TAG_APP) == APP and TAG_PID not in tags:
            pid = None
            dead = (now - run.info.start_time / 1000) > stale_after_minutes * 60
        else:
            continue
        if not dead:
            continue
        current = client.get_run(rid)
        if current.info.status != "RUNNING":
            continue  # ended by itself meanwhile
        progress = read_progress(folder) or {}
        phase = progress.get("phase")
        status = "KILLED" if phase in ("stopping", "killed") else "FAILED"
        if phase == "finished":
            status = "FINISHED"
        explanation = _dead_note(pid, job is not None, status, progress)
        old_note = current.data.tags.get(TAG_NOTE, "")
        client.set_tag(rid, TAG_NOTE, (old_note + "\n\n" if old_note else "") + explanation)
        updated = _float(progress.get("updated"))
        end_ms = int(updated * 1000) if updated else None
        client.set_terminated(rid, status, end_time=end_ms)
        if job is not None or progress:
            new_progress = {
                **{k: v for k, v in progress.items() if k != "updated"},
                "phase": status.lower(),
            }
            if status == "FAILED" and not progress.get("last_error"):
                new_progress["last_error"] = explanation
            with contextlib.suppress(OSError):
                write_progress(folder, new_progress)
        changed.append(rid)
    return changed


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _dead_note(pid: int | None, has_job: bool, status: str, progress: Mapping[str, Any]) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    if pid is None:
        what = (
            "The trainer never reported in (no job folder and no trainer process recorded), "
            "so the run was left RUNNING"
        )
    else:
        what = (
            f"The trainer process (pid {pid}) disappeared without ending the run — it was "
            "killed (e.g. out of memory or SIGKILL), crashed, or the machine restarted"
        )
    text = f"{what}. LoRA Studio marked it {status} on {when}."
    if progress.get("step") is not None:
        text += f" Last progress: {progress.get('phase')} at step {progress.get('step')}"
        text += f"/{progress['total_steps']}." if progress.get("total_steps") else "."
    if progress.get("last_error"):
        text += f" Last error: {progress['last_error']}"
    if not has_job and pid is not None:
        text += " (run started outside the studio)"
    return text


# ------------------------------------------------------------------------------------- reading
@dataclass
class RunRecord:
    """One run as plain data (what the compare page and the advisor use)."""

    run_id: str
    name: str
    experiment_id: str
    status: str
    start_time: datetime | None
    end_time: datetime | None
    duration_s: float | None
    params: dict[str, str]
    tags: dict[str, str]
    metrics: dict[str, float]  # last values
    arch: str | None
    intent: str | None
    preset: str | None
    dataset_fingerprint: str | None
    rating: int | None
    note: str
    artifact_uri: str = ""
    datasets: list[tuple[str, str]] = field(default_factory=list)  # MLflow inputs: (name, digest)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _when(ms: int | None) -> datetime | None:
    return datetime.fromtimestamp(ms / 1000, tz=UTC) if ms else None


def run_record(run: Any) -> RunRecord:
    """A ``RunRecord`` from an MLflow ``Run``."""
    info, data = run.info, run.data
    tags, params = dict(data.tags), dict(data.params)
    start, end = info.start_time, info.end_time
    duration = None
    if start:
        duration = (
            ((end or _now_ms()) - start) / 1000 if (end or info.status == "RUNNING") else None
        )
    rating = tags.get(TAG_RATING, "")
    preset = tags.get(TAG_PRESET) or params.get("preset")
    return RunRecord(
        run_id=info.run_id,
        name=info.run_name or tags.get(TAG_RUN_NAME, ""),
        experiment_id=info.experiment_id,
        status=info.status,
        start_time=_when(start),
        end_time=_when(end),
        duration_s=duration,
        params=params,
        tags=tags,
        metrics=dict(data.metrics),
        arch=tags.get(TAG_ARCH) or params.get("model.arch"),
        intent=tags.get(TAG_INTENT) or params.get("intent"),
        preset=None if preset in (None, "", "null") else preset,
        dataset_fingerprint=tags.get(TAG_DATASET),
        rating=int(rating) if rating.isdigit() else None,
        note=tags.get(TAG_NOTE, ""),
        artifact_uri=info.artifact_uri or "",
        datasets=_dataset_inputs(run),
    )


def _dataset_inputs(run: Any) -> list[tuple[str, str]]:
    """(name, digest) of the datasets logged as the run's MLflow inputs, sorted."""
    inputs = getattr(run, "inputs", None)
    found = getattr(inputs, "dataset_inputs", None) or []
    return sorted((d.dataset.name, d.dataset.digest) for d in found)


def list_runs(
    tracking_uri: str,
    experiment_names: Iterable[str] | None = None,
    filter_string: str = "",
    max_results: int = 1000,
) -> list[RunRecord]:
    """Runs of the named experiments (default: all), newest first."""
    client = _client(tracking_uri)
    if experiment_names is None:
        ids = [e.experiment_id for e in client.search_experiments()]
    else:
        found = (client.get_experiment_by_name(n) for n in experiment_names)
        ids = [e.experiment_id for e in found if e is not None]
    if not ids:
        return []
    runs = client.search_runs(
        ids,
        filter_string=filter_string,
        max_results=max_results,
        order_by=["attributes.start_time DESC"],
    )
    return [run_record(run) for run in runs]


def list_all_runs(tracking_uri: str, max_results: int = 5000) -> list[RunRecord]:
    """Every active run of the store, newest first, as ``list_runs`` returns them — read in
    bulk with plain SQL from a local SQLite store (MLflow's ORM takes ~10 ms per run with the
    studio's ~150 params; SQL ~0.3 ms), through ``MlflowClient`` for any other store or when
    the schema is not the one expected (tables ``runs``, ``tags``, ``params``,
    ``latest_metrics``, ``experiments`` of MLflow 3.x)."""
    import sqlite3
    from types import SimpleNamespace

    db = sqlite_path(tracking_uri)
    if db is None or not db.is_file():
        return list_runs(tracking_uri, max_results=max_results)
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
            rows = con.execute(
                "SELECT r.run_uuid, r.name, r.experiment_id, r.status, r.start_time, r.end_time,"
                " r.artifact_uri FROM runs r JOIN experiments e"
                " ON e.experiment_id = r.experiment_id WHERE r.lifecycle_stage = 'active'"
                " AND e.lifecycle_stage = 'active' ORDER BY r.start_time DESC LIMIT ?",
                (max_results,),
            ).fetchall()
            wanted = {row[0] for row in rows}
            values: dict[str, dict[str, dict[str, Any]]] = {
                rid: {"tags": {}, "params": {}, "metrics": {}} for rid in wanted
            }
            for table, slot in (("tags", "tags"), ("params", "params")):
                for key, value, rid in con.execute(f"SELECT key, value, run_uuid FROM {table}"):
                    if rid in wanted:
                        values[rid][slot][key] = value
            for key, value, is_nan, rid in con.execute(
                "SELECT key, value, is_nan, run_uuid FROM latest_metrics"
            ):
                if rid in wanted:
                    values[rid]["metrics"][key] = math.nan if is_nan else value
            inputs: dict[str, list[Any]] = {rid: [] for rid in wanted}
            for rid, name, digest in con.execute(
                "SELECT i.destination_id, d.name, d.digest FROM inputs i JOIN datasets d"
                " ON d.dataset_uuid = i.source_id WHERE i.source_type = 'DATASET'"
                " AND i.destination_type = 'RUN'"
            ):
                if rid in wanted:
                    inputs[rid].append(
                        SimpleNamespace(dataset=SimpleNamespace(name=name, digest=digest))
                    )
    except sqlite3.Error as err:
        log.info("bulk read of %s failed (%s); using MlflowClient", db, err)
        return list_runs(tracking_uri, max_results=max_results)
    records = []
    for rid, name, exp, status, start, end, artifact_uri in rows:
        info = SimpleNamespace(
            run_id=rid,
            run_name=name,
            experiment_id=str(exp),
            status=status,
            start_time=start,
            end_time=end,
            artifact_uri=artifact_uri,
        )
        data = SimpleNamespace(**values[rid])
        run_inputs = SimpleNamespace(dataset_inputs=inputs[rid])
        records.append(run_record(SimpleNamespace(info=info, data=data, inputs=run_inputs)))
    return records


# Runs a process changed through this module (rating, note, sample rating), per tracking URI:
# a ``RunCache`` reads them again on its next refresh, however old they are.
_CHANGED: dict[str, dict[str, int]] = {}  # uri -> {run id: number of its last change}
_CHANGED_LOCK = threading.Lock()
_CHANGES = iter(range(1, 2**62))
OPEN_STATUSES = frozenset({"RUNNING", "SCHEDULED"})
_RUN_ID = re.compile(r"^[0-9A-Za-z_-]+$")
BACKGROUND_PAGE = 50  # runs per query of a background full read


def mark_changed(tracking_uri: str, run_id: str) -> None:
    """Note that ``run_id`` changed, so every ``RunCache`` of the store reads it again."""
    with _CHANGED_LOCK:
        _CHANGED.setdefault(tracking_uri, {})[run_id] = next(_CHANGES)


def _changed_after(tracking_uri: str, seen: int) -> tuple[set[str], int]:
    """The runs changed after change number ``seen``, and the number of the latest change."""
    with _CHANGED_LOCK:
        changes = _CHANGED.get(tracking_uri, {})
        latest = max(changes.values(), default=seen)
        return {rid for rid, n in changes.items() if n > seen}, max(latest, seen)


@dataclass
class RefreshStats:
    """What the last ``RunCache`` refresh did: ``mode`` 'sql' (bulk read of a local SQLite
    file), 'full' (every run through ``MlflowClient``) or 'incremental'; how many search
    queries it sent and how many run records came back."""

    mode: str = ""
    queries: int = 0
    fetched: int = 0
    seconds: float = 0.0


class RunCache:
    """Every active run of a store, newest first, kept between reads so that a store served by
    ``mlflow server`` is not read in full on every refresh (500 runs: ~9 MB of JSON, 6-12 s).

    A local SQLite file is read in bulk each time (``list_all_runs``: 0.2-0.6 s for 500 runs).
    Any other store is read in full on the first call, after ``invalidate()`` and on
    ``runs(full=True)``, and again once ``full_every_s`` has passed (which also drops runs deleted
    meanwhile) — in a background thread when ``background`` is set, so that no render waits for
    it: the records read so far are refreshed incrementally until it is done. In between, a refresh
    asks only for runs that may have changed: runs started after the newest known one, runs
    RUNNING now (new, or a stopped run resumed), known runs that were RUNNING/SCHEDULED (finished
    meanwhile) and runs this process changed through this module (``set_rating``, ``set_note``,
    ``set_sample_rating``: see ``mark_changed``). Runs of deleted experiments are dropped at once.
    Not seen until the next full read: an edit to a finished run made elsewhere (another studio,
    the MLflow UI) and runs deleted elsewhere. Thread-safe (one instance serves every session)."""

    def __init__(
        self,
        tracking_uri: str,
        full_every_s: float = 300.0,
        max_results: int = 5000,
        bulk_sql: bool | None = None,
        background: bool = True,
        snapshot: str | Path | None = None,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.background = background
        self.snapshot = Path(snapshot) if snapshot else None
        self._snapshot_tried = False
        self.full_every_s = full_every_s
        self.max_results = max_results
        self._bulk_sql = bulk_sql
        self._lock = threading.Lock()
        self._records: dict[str, RunRecord] = {}
        self._start_ms: dict[str, int] = {}
        self._full_at: float | None = None
        self._changes_seen = 0
        self._generation = 0  # bumped by each full read installed
        self._reader: threading.Thread | None = None
        self.last = RefreshStats()
        self.last_full = RefreshStats()

    def _use_sql(self) -> bool:
        if self._bulk_sql is not None:
            return self._bulk_sql
        db = sqlite_path(self.tracking_uri)
        return db is not None and db.is_file()

    def invalidate(self) -> None:
        """The next ``runs()`` reads the whole store again."""
        with self._lock:
            self._full_at = None

    def runs(self, full: bool = False) -> list[RunRecord]:
        """Every active run, newest first (refreshed as the class docstring says)."""
        started = time.perf_counter()
        if self._use_sql():
            records = list_all_runs(self.tracking_uri, max_results=self.max_results)
            self.last = RefreshStats("sql", 1, len(records), time.perf_counter() - started)
            return records
        with self._lock:
            loaded = None
            if self._full_at is None and not full and not self._snapshot_tried:
                self._snapshot_tried = True
                loaded = self._load_snapshot()
            due = self._full_at is not None and time.monotonic() - self._full_at > self.full_every_s
            if due and self.background:
                self._start_reader()
            if full or self._full_at is None or (due and not self.background):
                stats = self._read_all()
                self.last_full = stats
            else:
                stats = self._read_changed()
            if loaded is not None:
                stats.mode, stats.fetched = f"snapshot+{stats.mode}", stats.fetched + loaded
            stats.seconds = time.perf_counter() - started
            self.last = stats
            order = sorted(self._records, key=lambda rid: (-self._start_ms[rid], rid))
            return [self._records[rid] for rid in order[: self.max_results]]

    def update(self, run_id: str) -> RunRecord | None:
        """Read one run again now (``get_run_record``); None (and dropped) when it is gone."""
        try:
            run = _client(self.tracking_uri).get_run(run_id)
        except Exception as err:  # deleted, or the id is unknown
            log.info("run %s could not be read again (%s)", run_id, err)
            run = None
        with self._lock:
            if run is None or run.info.lifecycle_stage != "active":
                self._forget(run_id)
                return None
            return self._keep(run)

    # -- internals (called with the lock held)
    def _keep(self, run: Any) -> RunRecord:
        record = run_record(run)
        self._records[record.run_id] = record
        self._start_ms[record.run_id] = int(run.info.start_time or 0)
        return record

    def _forget(self, run_id: str) -> None:
        self._records.pop(run_id, None)
        self._start_ms.pop(run_id, None)

    def _experiments(self, client: MlflowClient) -> list[str]:
        return [e.experiment_id for e in client.search_experiments()]

    def _search(self, client: MlflowClient, ids: list[str], filter_string: str) -> list[Any]:
        return list(
            client.search_runs(
                ids,
                filter_string=filter_string,
                max_results=self.max_results,
                order_by=["attributes.start_time DESC"],
            )
        )

    def _fetch_all(self, page: int = 0) -> tuple[list[Any], int, float, RefreshStats]:
        """Every active run (no lock needed), the latest change number and the time before.
        ``page``: read that many runs at a time, newest first, pausing between reads (so a
        background read leaves the interpreter to the renders now and then)."""
        client = _client(self.tracking_uri)
        _, changes = _changed_after(self.tracking_uri, 0)
        full_at = time.monotonic()
        ids = self._experiments(client)
        if not ids:
            return [], changes, full_at, RefreshStats("full", 0, 0)
        if not page:
            runs = self._search(client, ids, "")
            return runs, changes, full_at, RefreshStats("full", 1, len(runs))
        found: dict[str, Any] = {}
        stats = RefreshStats("full")
        oldest: int | None = None
        while len(found) < self.max_results:
            # Keyset pages (start_time <= the oldest read so far; ties read twice): runs deleted
            # or created meanwhile cannot shift a page the way offset pages would.
            where = "" if oldest is None else f"attributes.start_time <= {oldest}"
            runs = list(
                client.search_runs(
                    ids, where, max_results=page, order_by=["attributes.start_time DESC"]
                )
            )
            stats.queries += 1
            stats.fetched += len(runs)
            new = [run for run in runs if run.info.run_id not in found]
            found.update((run.info.run_id, run) for run in new)
            if len(runs) < page:
                break
            if not new:  # a page of runs all started in the same millisecond: read at once
                runs = self._search(client, ids, "")
                found.update((run.info.run_id, run) for run in runs)
                break
            oldest = min(int(run.info.start_time or 0) for run in runs)
            time.sleep(0.05)
        return list(found.values()), changes, full_at, stats

    def _install(self, runs: list[Any], changes: int, full_at: float) -> None:
        self._records.clear()
        self._start_ms.clear()
        for run in runs:
            self._keep(run)
        self._full_at = full_at
        # Changes made after the read began (even those a refresh read meanwhile, when it ran in
        # the background: their records are replaced by this older read) are read again.
        self._changes_seen = changes
        self._generation += 1

    def _read_all(self) -> RefreshStats:
        runs, changes, full_at, stats = self._fetch_all()
        self._install(runs, changes, full_at)
        self._save_snapshot()
        return stats

    # -- the snapshot: the last full read, kept on disk so a restarted studio shows the runs
    # at once (and reads the store in full in the background)
    def _save_snapshot(self) -> None:
        if self.snapshot is None:
            return
        runs = [
            {**rec.to_dict(), "start_ms": self._start_ms[rid]} for rid, rec in self._records.items()
        ]
        threading.Thread(
            target=self._write_snapshot, args=(runs,), name="run-cache-snapshot", daemon=True
        ).start()

    def _write_snapshot(self, runs: list[dict[str, Any]]) -> None:
        try:
            self.snapshot.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.snapshot.with_name(f".{self.snapshot.name}.{uuid.uuid4().hex}.tmp")
            tmp.touch(mode=0o600)  # the runs may be private: readable by the user only
            tmp.write_text(json.dumps({"version": 1, "runs": runs}, default=str), "utf-8")
            os.replace(tmp, self.snapshot)
        except (OSError, TypeError, ValueError) as err:
            log.info("could not write the runs snapshot %s: %s", self.snapshot, err)

    def _load_snapshot(self) -> int | None:
        """Install the snapshot's runs (the full read then due at once); how many, or None."""
        if self.snapshot is None or not self.snapshot.is_file():
            return None
        try:
            data = json.loads(self.snapshot.read_text(encoding="utf-8"))
            if data.get("version") != 1:
                return None
            kept = [(_record_from_dict(d), int(d["start_ms"])) for d in data["runs"]]
        except (OSError, ValueError, TypeError, KeyError) as err:
            log.info("ignoring the runs snapshot %s: %s", self.snapshot, err)
            return None
        self._records = {rec.run_id: rec for rec, _ in kept}
        self._start_ms = {rec.run_id: ms for rec, ms in kept}
        self._full_at = -math.inf  # due: read in full (in the background) now
        self._changes_seen = 0  # read again whatever this process changed
        return len(kept)

    def _start_reader(self) -> None:
        if self._reader is not None and self._reader.is_alive():
            return
        self._reader = threading.Thread(
            target=self._read_in_background,
            args=(self._generation,),
            name="run-cache-full-read",
            daemon=True,
        )
        self._reader.start()

    def _read_in_background(self, generation: int) -> None:
        started = time.perf_counter()
        try:
            runs, changes, full_at, stats = self._fetch_all(page=BACKGROUND_PAGE)
        except Exception as err:  # the server is down: keep what we have, try again later
            log.warning("full re-read of %s failed: %s", self.tracking_uri, err)
            with self._lock:
                self._full_at = time.monotonic()
            return
        stats.mode, stats.seconds = "full (background)", time.perf_counter() - started
        with self._lock:
            if self._generation == generation:  # no full read was installed meanwhile
                self._install(runs, changes, full_at)
                self.last_full = stats
                self._save_snapshot()

    def wait(self, timeout: float | None = None) -> None:
        """Wait for a background full read to finish (tests, benchmarks)."""
        reader = self._reader
        if reader is not None:
            reader.join(timeout)

    def _read_changed(self) -> RefreshStats:
        client = _client(self.tracking_uri)
        fresh_changes, self._changes_seen = _changed_after(self.tracking_uri, self._changes_seen)
        stats = RefreshStats("incremental")
        ids = self._experiments(client)
        for rid in [r for r, rec in self._records.items() if rec.experiment_id not in ids]:
            self._forget(rid)  # its experiment was deleted
        if not ids:
            return stats
        newest = max(self._start_ms.values(), default=0)
        found: dict[str, Any] = {}
        for filter_string in (
            f"attributes.start_time > {newest}",
            "attributes.status = 'RUNNING'",
        ):
            runs = self._search(client, ids, filter_string)
            stats.queries += 1
            stats.fetched += len(runs)
            found.update((run.info.run_id, run) for run in runs)
        was_open = {rid for rid, rec in self._records.items() if rec.status in OPEN_STATUSES}
        again = sorted(rid for rid in (was_open | fresh_changes) - set(found) if _RUN_ID.match(rid))
        for i in range(0, len(again), 100):
            chunk = again[i : i + 100]
            quoted = ", ".join(f"'{rid}'" for rid in chunk)
            runs = self._search(client, ids, f"attributes.run_id IN ({quoted})")
            stats.queries += 1
            stats.fetched += len(runs)
            found.update((run.info.run_id, run) for run in runs)
            for rid in set(chunk) - {run.info.run_id for run in runs}:
                self._forget(rid)  # deleted (search_runs returns active runs only)
        for run in found.values():
            self._keep(run)
        return stats


def _record_from_dict(data: Mapping[str, Any]) -> RunRecord:
    """A ``RunRecord`` from its ``to_dict()`` written as JSON."""
    names = {f.name for f in fields(RunRecord)}
    values = {k: v for k, v in data.items() if k in names}
    for key in ("start_time", "end_time"):
        values[key] = datetime.fromisoformat(values[key]) if values.get(key) else None
    values["datasets"] = [tuple(d) for d in values.get("datasets") or []]
    return RunRecord(**values)


def get_run_record(tracking_uri: str, run_id: str) -> RunRecord:
    return run_record(_client(tracking_uri).get_run(run_id))


def metric_history(
    tracking_uri: str, run_id: str, keys: Iterable[str]
) -> dict[str, list[tuple[int, float, int]]]:
    """``{key: [(step, value, timestamp_ms), ...]}`` sorted by step then time; [] if never logged."""
    client = _client(tracking_uri)
    history: dict[str, list[tuple[int, float, int]]] = {}
    for key in keys:
        points = client.get_metric_history(run_id, key)
        history[key] = sorted((m.step, m.value, m.timestamp) for m in points)
    return history


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
    from trainer.settings import load_settings

    return load_settings().home / "cache" / "downloads"


class _Artifacts:
    """Read a run's artifacts: straight from disk for a local store, via a cache otherwise."""

    def __init__(self, client: MlflowClient, run_id: str, cache_dir: str | Path | None) -> None:
        from mlflow.utils.file_utils import local_file_uri_to_path

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
    store = _Artifacts(_client(tracking_uri), run_id, cache_dir)
    meta: dict[int, dict[str, Any]] = {}
    for item in store.list(SAMPLES_DIR):
        match = re.search(r"step_(\d+)\.json$", item.path)
        if match:
            data = _read_json(store.fetch(item.path, immutable=False)) or {}
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
    store = _Artifacts(_client(tracking_uri), run_id, None)
    if store.local is not None:
        return (store.local / CONFIG_ARTIFACT).read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory() as tmp:
        path = store.client.download_artifacts(run_id, CONFIG_ARTIFACT, tmp)
        return Path(path).read_text(encoding="utf-8")


def set_rating(tracking_uri: str, run_id: str, rating: int) -> None:
    """The user's 1-5 star rating of the run (tag ``studio.rating``)."""
    if isinstance(rating, bool) or not isinstance(rating, int) or not 1 <= rating <= 5:
        raise ValueError(f"rating must be a whole number from 1 to 5, got {rating!r}")
    _client(tracking_uri).set_tag(run_id, TAG_RATING, str(rating))
    mark_changed(tracking_uri, run_id)


def sample_rating_tag(step: int, key: str) -> str:
    """The tag holding the rating of the image ``key`` logged at ``step``."""
    return f"{TAG_SAMPLE_RATING}.{int(step)}.{key}"[:MAX_KEY_LEN]


def set_sample_rating(tracking_uri: str, run_id: str, step: int, key: str, rating: int) -> None:
    """The user's 1-5 rating of one sample image (tag ``studio.sample_rating.<step>.<key>``,
    shown among the run's tags in the MLflow UI); 0 removes it."""
    if isinstance(rating, bool) or not isinstance(rating, int) or not 0 <= rating <= 5:
        raise ValueError(f"sample rating must be a whole number from 0 to 5, got {rating!r}")
    client, tag = _client(tracking_uri), sample_rating_tag(step, key)
    if rating:
        client.set_tag(run_id, tag, str(rating))
    elif tag in client.get_run(run_id).data.tags:
        client.delete_tag(run_id, tag)
    mark_changed(tracking_uri, run_id)


_SAMPLE_RATING = re.compile(rf"^{re.escape(TAG_SAMPLE_RATING)}\.(\d+)\.(.+)$")


def sample_ratings(tags: Mapping[str, str]) -> dict[tuple[int, str], int]:
    """``{(step, image key): rating}`` from a run's tags."""
    found = {}
    for tag, value in tags.items():
        match = _SAMPLE_RATING.match(tag)
        if match and value.isdigit():
            found[(int(match[1]), match[2])] = int(value)
    return found


def set_note(tracking_uri: str, run_id: str, text: str) -> None:
    """The run's note (MLflow's description, tag ``mlflow.note.content``)."""
    _client(tracking_uri).set_tag(run_id, TAG_NOTE, redact_text(text)[:MAX_TAG_LEN])
    mark_changed(tracking_uri, run_id)


def lora_artifacts(tracking_uri: str, run_id: str) -> list[str]:
    """Artifact paths of every file under ``lora/`` and ``checkpoints/``, sorted."""
    store = _Artifacts(_client(tracking_uri), run_id, None)
    return sorted(path for folder in LORA_DIRS for path in store.walk(folder))


def fetch_artifact(
    tracking_uri: str, run_id: str, path: str, cache_dir: str | Path | None = None
) -> Path:
    """One artifact file as a local path: the file itself on a local store, downloaded once
    through the tracking server (e.g. a teammate's LoRA) into a cache otherwise."""
    return _Artifacts(_client(tracking_uri), run_id, cache_dir).fetch(path)
