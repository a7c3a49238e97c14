"""Metrics the tracking store would not take, kept in the job folder instead of lost:
``UnloggedMetrics`` (``<job>/unlogged_metrics.jsonl``, one warning line when MLflow first refuses,
a summary at the end), ``read_unlogged`` and ``replay_unlogged`` (send them to a store later), and
``quiet_store_tracebacks`` (MLflow's SQL store logs a full traceback for every refused batch: 62
of them for one deleted store; after this, one line for the first and nothing for repeats).

A store can go away under a running trainer: its SQLite file deleted or replaced (SQLite then
refuses every write, "attempt to write a readonly database"), a server stopped. Training goes on;
what MLflow does not take ends up here, and the outcome of the training does not change."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from trainer.redaction import describe_error

if TYPE_CHECKING:  # pragma: no cover
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

UNLOGGED_FILE = "unlogged_metrics.jsonl"
Point = tuple[str, float, int, int]  # (key, value, timestamp ms, step), as MlflowTracker keeps
_STORE_LOGGERS = ("mlflow.store.db.utils", "mlflow.utils.rest_utils")


class UnloggedMetrics:
    """Metric points MLflow did not take, appended to ``<folder>/unlogged_metrics.jsonl`` (held in
    memory until ``folder`` is set: the job folder is known only after the run has started).
    Thread-safe: the tracker's writer thread keeps points while the loop runs."""

    def __init__(self, folder: str | Path | None = None) -> None:
        self._folder = Path(folder) if folder is not None else None
        self._lock = threading.Lock()
        self._held: list[Point] = []
        self.points = 0  # kept so far (file and memory)
        self.first_step: int | None = None
        self.last_step: int | None = None
        self.refusal: str | None = None  # the store's first refusal, one line

    @property
    def folder(self) -> Path | None:
        return self._folder

    @folder.setter
    def folder(self, folder: str | Path | None) -> None:
        with self._lock:
            self._folder = Path(folder) if folder is not None else None
            held, self._held = self._held, []
        if held:
            self._append(held)

    @property
    def path(self) -> Path | None:
        return self._folder / UNLOGGED_FILE if self._folder is not None else None

    def note_refusal(self, what: str, err: BaseException, step: int | None = None) -> bool:
        """Say once, in one warning line, that the store refused (``what``: 'metrics', 'tags'…)
        and where metrics it does not take will be; True the first time, False after."""
        with self._lock:
            if self.refusal is not None:
                return False
            self.refusal = describe_error(err)
        where = self.path or f"<job folder>/{UNLOGGED_FILE}"
        at = f" at step {step}" if step is not None else ""
        log.warning(
            "MLflow refused %s%s (%s). Training goes on; metrics MLflow does not take are kept "
            "in %s.",
            what,
            at,
            self.refusal,
            where,
        )
        return True

    def keep(self, points: Iterable[Point]) -> int:
        """Keep ``points`` (append them to the file, or hold them until ``folder`` is set);
        returns how many were kept."""
        batch = [(str(k), float(v), int(t), int(s)) for k, v, t, s in points]
        if not batch:
            return 0
        with self._lock:
            self.points += len(batch)
            steps = [s for _, _, _, s in batch]
            low, high = min(steps), max(steps)
            self.first_step = low if self.first_step is None else min(self.first_step, low)
            self.last_step = high if self.last_step is None else max(self.last_step, high)
            if self._folder is None:
                self._held.extend(batch)
                return len(batch)
        self._append(batch)
        return len(batch)

    def _append(self, batch: list[Point]) -> None:
        path = self.path
        assert path is not None
        lines = "".join(
            json.dumps({"key": k, "value": v, "timestamp": t, "step": s}) + "\n"
            for k, v, t, s in batch
        )
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with self._lock, open(path, "a", encoding="utf-8") as out:
                out.write(lines)
        except OSError as err:  # the job folder's disk: nothing more can be done
            log.warning("could not keep %d metric points in %s: %s", len(batch), path, err)

    def summary(self) -> str | None:
        """What to tell the user at the end ("N metric points of steps a–b … are in PATH"), or
        None when nothing was kept."""
        if not self.points:
            return None
        steps = (
            f"step {self.first_step}"
            if self.first_step == self.last_step
            else f"steps {self.first_step}–{self.last_step}"
        )
        where = str(self.path) if self.path is not None else "memory only (no job folder)"
        return (
            f"{self.points} metric points of {steps} could not be logged to MLflow "
            f"({self.refusal or 'the store refused them'}); they are in {where}."
        )


def read_unlogged(path: str | Path) -> list[Point]:
    """The points of an ``unlogged_metrics.jsonl`` in the order written (a torn last line, from
    a trainer killed mid-write, is skipped)."""
    points: list[Point] = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
            points.append(
                (str(row["key"]), float(row["value"]), int(row["timestamp"]), int(row["step"]))
            )
        except (ValueError, KeyError, TypeError):
            continue
    return points


def replay_unlogged(client: MlflowClient, run_id: str, path: str | Path) -> int:
    """Send the points of ``path`` to ``run_id`` (1000 a batch, MLflow's limit); the file is then
    renamed ``*.replayed`` so that they are not sent twice. Returns how many were sent."""
    from mlflow.entities import Metric  # mlflow: 1-2 s to import

    points = read_unlogged(path)
    for start in range(0, len(points), 1000):
        chunk = points[start : start + 1000]
        client.log_batch(run_id, metrics=[Metric(k, v, t, s) for k, v, t, s in chunk])
    source = Path(path)
    source.replace(source.with_name(source.name + ".replayed"))
    return len(points)


class _OneLineOnce(logging.Filter):
    """Lets the first error of each kind through as one line (no traceback); drops repeats."""

    def __init__(self) -> None:
        super().__init__()
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        cause = record.exc_info[1] if record.exc_info else None
        text = describe_error(cause) if cause is not None else record.getMessage().split("\n")[0]
        with self._lock:
            if text in self._seen:
                return False
            self._seen.add(text)
        if cause is not None:
            said = (record.getMessage().splitlines() or [""])[0]
            record.msg, record.args = f"{said} {text}".strip(), ()
            record.exc_info, record.exc_text = None, None
        return True


_QUIET = _OneLineOnce()


def quiet_store_tracebacks() -> None:
    """Make MLflow's store loggers say each refusal once, in one line (idempotent)."""
    for name in _STORE_LOGGERS:
        logger = logging.getLogger(name)
        if _QUIET not in logger.filters:
            logger.addFilter(_QUIET)
