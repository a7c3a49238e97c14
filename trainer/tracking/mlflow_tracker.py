"""``MlflowTracker``: writes one run through ``MlflowClient``, metrics batched and sent by a writer
thread so that the training loop never waits for the store (see the class docstring)."""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import queue
import re
import socket
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.redaction import describe_error, redact, redact_text
from trainer.tracking.connect import check_tracking_uri, mlflow_client
from trainer.tracking.job_file import process_create_time
from trainer.tracking.layout import (
    CONFIG_ARTIFACT,
    END_STATUSES,
    HPARAM_PREFIX,
    MAX_KEY_LEN,
    MAX_PARAM_LEN,
    SAMPLES_DIR,
    TAG_DATASET,
    TAG_HOST,
    TAG_NOTE,
    TAG_PID,
    TAG_PID_CREATE_TIME,
    EndStatus,
    now_ms,
)
from trainer.tracking.metric_buffer import UnloggedMetrics, quiet_store_tracebacks
from trainer.tracking.new_run import (
    clean_tags,
    config_params,
    config_yaml,
    ensure_experiment,
    numeric_hparams,
    run_tags,
    source_tags,
)

if TYPE_CHECKING:  # pragma: no cover
    from mlflow import MlflowClient
    from PIL.Image import Image

    from trainer.config.schema import TrainingConfig

log = logging.getLogger(__name__)

MAX_BUFFER_POINTS = 200
MAX_RETAINED_POINTS = 20_000  # kept for retry while the store is unreachable, then oldest dropped


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

    Attached to a run that already has metrics (a resume), steps up to the last one MLflow holds
    for a key are not logged again: the resumed run replays the steps after its checkpoint, and
    MLflow keeps every point it is sent, so each step would appear once per resume.
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
        self._logged_through: dict[str, int] = {}  # key -> last step MLflow had at attach
        self._images_through = -1  # previews up to this step were logged before a resume
        self._samples: dict[int, dict[str, Any]] = {}
        self._monitor: Any = None
        self._ended = False
        self._lock = threading.Lock()
        self._queue: queue.Queue[list[tuple[str, float, int, int]] | None] = queue.Queue()
        self._queued = 0
        self._retry: list[tuple[str, float, int, int]] = []
        self._writer: threading.Thread | None = None
        # Metrics MLflow would not take (store deleted, replaced, down): <job>/unlogged_metrics.jsonl
        self.unlogged = UnloggedMetrics()
        quiet_store_tracebacks()  # one line per kind of refusal, not a traceback per batch
        self.stats = {"batches": 0, "points": 0, "writer_cpu_s": 0.0, "writer_wall_s": 0.0}

    # -- lifecycle
    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = mlflow_client(self.tracking_uri)
        return self._client

    def start(
        self,
        cfg: TrainingConfig,
        *,
        run_id: str | None = None,
        tags: Mapping[str, Any] | None = None,
        started_at: float | None = None,
    ) -> str:
        """Attach to ``run_id`` / ``$MLFLOW_RUN_ID`` (set RUNNING again), or create a run (that
        began at ``started_at``, epoch seconds, when the start itself comes later: default now).

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
            self._logged_through = self._last_logged_steps(existing, self._metric_keys)
            self._images_through = max(self._logged_through.values(), default=-1)
        else:
            experiment_id = ensure_experiment(
                self.tracking_uri, cfg.logging.project_name, self.artifact_root
            )
            run = client.create_run(
                experiment_id,
                start_time=int(started_at * 1000) if started_at is not None else None,
                run_name=cfg.logging.run_name or cfg.name,
                tags=clean_tags(source_tags()),
            )
        self.run_id = run.info.run_id
        self._ended = False
        self.set_tags({**run_tags(cfg), **self._process_tags(), **dict(tags or {})})
        self.log_config(cfg)
        if cfg.logging.log_system_metrics:
            self._start_system_metrics(resume=self.attached)
        return self.run_id

    def _last_logged_steps(self, run_id: str, keys: set[str]) -> dict[str, int]:
        """The last step MLflow holds for each training metric of the run (system metrics and
        ``hparam/`` ones excluded: the monitor resumes its own steps, hparams are logged once)."""
        found: dict[str, int] = {}
        for key in sorted(keys):
            if key.startswith(("system/", HPARAM_PREFIX)):
                continue
            try:
                history = self.client.get_metric_history(run_id, key)
            except Exception as err:  # then the replayed steps may be logged twice, no worse
                self._note_error("metric history", err)
                continue
            if history:
                found[key] = max(point.step for point in history)
        return found

    def _process_tags(self) -> dict[str, str]:
        return process_tags()

    def _start_system_metrics(self, resume: bool) -> None:
        # Started here, in the process that trains, whether the run was created or attached.
        try:
            from mlflow.system_metrics.system_metrics_monitor import (  # mlflow: 1-2 s to import
                SystemMetricsMonitor,
            )

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
        with self._lock:
            left, self._retry = self._retry, []
        self.unlogged.keep(left)
        # A store that is gone must not turn the training's outcome into a failure.
        self._write("end", lambda: self.client.set_terminated(self.run_id, status))
        self._ended = True
        said = self.unlogged.summary()
        if said is not None:
            log.warning(said)

    # -- params and config
    def log_config(self, cfg: TrainingConfig) -> None:
        self.log_params(config_params(cfg))
        self.log_text(config_yaml(cfg), CONFIG_ARTIFACT)
        hparams = {k: v for k, v in numeric_hparams(cfg).items() if k not in self._metric_keys}
        if hparams:  # sent at once, apart from the training metrics' buffer and its step count
            from mlflow.entities import Metric  # mlflow: 1-2 s to import

            stamp = now_ms()
            batch = [Metric(k, v, stamp, 0) for k, v in hparams.items()]
            if self._write("hparams", lambda: self.client.log_batch(self._rid, metrics=batch)):
                self._metric_keys.update(hparams)

    def log_params(self, params: Mapping[str, Any]) -> list[str]:
        """Log params once; identical re-logs are skipped, changed values are refused (MLflow
        cannot change a param) and returned, with a warning."""
        from mlflow.entities import Param  # mlflow: 1-2 s to import

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
    def log_metrics(
        self, metrics: Mapping[str, float], step: int, timestamp_ms: int | None = None
    ) -> None:
        """Buffer the values (a few µs); nothing is sent unless a flush condition is met, and an
        automatic flush only hands the batch to the writer thread. ``timestamp_ms``: when they
        were measured, if not now (calls queued while the run was starting)."""
        stamp = now_ms() if timestamp_ms is None else timestamp_ms
        buffer = self._buffer
        logged = self._logged_through
        for key, value in metrics.items():
            if logged and step <= logged.get(key, -1):
                continue  # replayed after a resume: MLflow holds this step already
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
        from mlflow.entities import Metric  # mlflow: 1-2 s to import

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
                kept = points + self._retry
                self._retry = kept[-MAX_RETAINED_POINTS:]
            self.unlogged.keep(kept[:-MAX_RETAINED_POINTS])  # the oldest: to the file, not lost
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
        if int(step) <= self._images_through:
            return  # replayed after a resume: this step's previews were logged before
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
        from mlflow.entities import RunTag  # mlflow: 1-2 s to import

        clean = clean_tags(tags)
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
        from mlflow.entities import Dataset, DatasetInput, InputTag  # mlflow: 1-2 s to import

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
        message = f"MLflow {what}: {describe_error(err)}"
        self.errors.append(message[:2000])
        if what == "system metrics":
            log.warning(message)
        elif not self.unlogged.note_refusal(what, err, self._last_step):
            log.debug(message)  # the store's first refusal was said, in one line


def process_tags() -> dict[str, str]:
    """This process's host, pid and create time: the tags dead-run detection watches."""
    tags = {TAG_HOST: socket.gethostname(), TAG_PID: str(os.getpid())}
    created = process_create_time(os.getpid())
    if created is not None:
        tags[TAG_PID_CREATE_TIME] = f"{created:.3f}"
    return tags


def _sample_file(step: int) -> str:
    return f"{SAMPLES_DIR}/step_{step:06d}.json"
