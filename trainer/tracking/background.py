"""Starting a tracker's run off the critical path: ``BackgroundStart`` runs ``start`` (for MLflow:
import mlflow, open the store, create or attach the run, tag it, log the config; seconds of CPU)
in a thread, at once or when cued (``proceed``; ``defer_s`` caps the wait).

Why a cue: that start is Python work that holds the GIL, like the imports that load a model, so
the two only take turns on the CPU; measured on the SD1.5 demo (2 cores), starting MLflow beside
the model load put the first step 3-7 s later than no MLflow, starting it after the first step
~0 s later (``benchmarks/first_step.py``). Training steps mostly run in torch with the GIL free.

Calls made before the run is ready are queued and replayed in order by that thread, so the loop
never waits; once the queue is empty every call goes straight to the tracker. A start that fails
(store unreachable, run deleted) is raised again, unchanged, by the next call that records
something (and by ``wait_started``), so the run fails with the same message as a synchronous
start; ``set_description`` and ``end``, which the failure path itself calls, then reach the run
only if it was made.
``flush(wait=True)`` and ``end`` wait for the start first. The run id is known at once when it was
given (MLFLOW_RUN_ID, a resume); otherwise asking for it (``run_id``, ``wait_started``) waits.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from trainer.tracking.layout import now_ms

if TYPE_CHECKING:  # pragma: no cover
    from trainer.config.schema import TrainingConfig

SILENT_AFTER_FAILURE = frozenset({"set_description", "end"})  # the failure path's own calls


class BackgroundStart:
    """Wraps a tracker whose ``start`` runs in a thread; see the module docstring."""

    def __init__(
        self,
        tracker: Any,
        on_ready: Callable[[], None] | None = None,
        *,
        defer_s: float = 0.0,
        started_at: float | None = None,
    ) -> None:
        self.inner = tracker
        self._on_ready = on_ready
        self._defer_s = defer_s  # how long the start waits for ``proceed`` before it begins anyway
        self._started_at = started_at  # epoch seconds: the run's start time if it is created
        self._go = threading.Event()
        self._known_run_id: str | None = None
        self._pending: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._ready = False  # the run exists and every queued call was replayed
        self._error: BaseException | None = None
        self._finished = threading.Event()  # ready or failed
        self._thread: threading.Thread | None = None

    # -- lifecycle
    def start(
        self,
        cfg: TrainingConfig,
        *,
        run_id: str | None = None,
        tags: Mapping[str, Any] | None = None,
    ) -> str | None:
        """Begin the start in a thread; the run id when it is known up front, else None."""
        self._known_run_id = run_id or os.environ.get("MLFLOW_RUN_ID") or None
        self._thread = threading.Thread(
            target=self._start, args=(cfg, run_id, tags), name="tracker-start", daemon=True
        )
        self._thread.start()
        return self._known_run_id

    def proceed(self) -> None:
        """Let a deferred start begin now (nothing happens if it has begun)."""
        self._go.set()

    def _start(self, cfg: TrainingConfig, run_id: str | None, tags: Any) -> None:
        if self._defer_s > 0:
            self._go.wait(self._defer_s)
        when = {} if self._started_at is None else {"started_at": self._started_at}
        try:
            self.inner.start(cfg, run_id=run_id, tags=tags, **when)
            self._replay()
            if self._on_ready is not None:
                with contextlib.suppress(Exception):  # a timing mark never fails the run
                    self._on_ready()
        except BaseException as err:  # raised again in the training thread: see _call
            with self._lock:
                self._error, self._pending = err, []
        finally:
            self._finished.set()

    def _replay(self) -> None:
        while True:
            with self._lock:
                if not self._pending:
                    self._ready = True
                    return
                calls, self._pending = self._pending, []
            for name, args, kwargs in calls:
                getattr(self.inner, name)(*args, **kwargs)

    def wait_started(self) -> str:
        """Wait for the start (beginning it if deferred); the run id, or the start's own error."""
        self._go.set()
        self._finished.wait()
        self._check()
        return self.inner.run_id

    @property
    def ready(self) -> bool:
        return self._ready

    @property
    def run_id(self) -> str | None:
        """The run's id. Asked before the store made it (a checkpoint records it), this is where
        the id is needed: the start begins now and is waited for (None if it failed)."""
        if self._ready or self._known_run_id is not None:
            return self.inner.run_id if self._ready else self._known_run_id
        self._go.set()
        self._finished.wait()
        return self.inner.run_id

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        if not self._ready:
            with self._lock:
                failed = self._error
                if failed is None and not self._ready:
                    self._pending.append((name, args, kwargs))
                    return [] if name == "log_params" else None  # no key refused yet
            if failed is not None:
                if name not in SILENT_AFTER_FAILURE:
                    raise failed
                if self.inner.run_id is None:  # no run to describe or end
                    return None
        return getattr(self.inner, name)(*args, **kwargs)

    def _wait_then_call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        self._go.set()
        self._finished.wait()
        return self._call(name, *args, **kwargs)

    # -- the Tracker protocol
    def log_config(self, cfg: TrainingConfig) -> None:
        self._call("log_config", cfg)

    def log_params(self, params: Mapping[str, Any]) -> list[str]:
        return self._call("log_params", dict(params))

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        if self._ready:
            self.inner.log_metrics(metrics, step)
        else:  # queued: keep when they were measured, not when they are replayed
            self._call("log_metrics", dict(metrics), step, timestamp_ms=now_ms())

    def flush(self, wait: bool = False) -> None:
        if wait:
            self._wait_then_call("flush", wait=True)
        else:
            self._call("flush")

    def log_image(
        self, image: Any, key: str, step: int, extra: Mapping[str, Any] | None = None
    ) -> None:
        self._call("log_image", image, key, step, extra)

    def log_artifact(self, path: Any, artifact_path: str | None = None) -> None:
        self._call("log_artifact", path, artifact_path)

    def log_artifacts(self, folder: Any, artifact_path: str | None = None) -> None:
        self._call("log_artifacts", folder, artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        self._call("log_text", text, artifact_file)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self._call("set_tags", dict(tags))

    def set_description(self, text: str) -> None:
        self._call("set_description", text)

    def log_dataset_input(
        self,
        name: str,
        digest: str,
        source: str,
        profile: Mapping[str, Any] | None = None,
        context: str = "train",
    ) -> None:
        self._call("log_dataset_input", name, digest, source, profile, context)

    def end(self, status: str = "FINISHED") -> None:
        self._wait_then_call("end", status)

    def __getattr__(self, name: str) -> Any:  # the wrapped tracker's own attributes (unlogged...)
        if name == "inner":  # not set yet: no recursion during construction or unpickling
            raise AttributeError(name)
        return getattr(self.inner, name)
