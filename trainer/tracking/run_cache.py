"""The read cache of a store's runs: ``RunCache`` (every active run, re-read incrementally, kept in
a snapshot file across restarts), ``mark_changed`` for runs this process edited, ``RefreshStats``."""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.files import atomic_write_text
from trainer.redaction import describe_error, redact_text
from trainer.tracking.connect import StoreUnreachable, mlflow_client, sqlite_path
from trainer.tracking.records import RunRecord, list_all_runs, run_record

if TYPE_CHECKING:  # pragma: no cover
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

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
            run = mlflow_client(self.tracking_uri).get_run(run_id)
        except StoreUnreachable:
            raise  # the run is not gone: the store is
        except Exception as err:  # deleted, or the id is unknown
            log.info("run %s could not be read again (%s)", run_id, describe_error(err))
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
        client = mlflow_client(self.tracking_uri)
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
            # atomic_write_text creates the file 0600: the runs may be private (the user's only)
            text = json.dumps({"version": 1, "runs": runs}, default=str)
            atomic_write_text(self.snapshot, text, fsync=False)
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
            where = redact_text(self.tracking_uri)
            log.warning("full re-read of %s failed: %s", where, describe_error(err))
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
        client = mlflow_client(self.tracking_uri)
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
