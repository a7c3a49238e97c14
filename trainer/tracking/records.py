"""Runs read back as plain data: ``RunRecord`` (what the compare page and the advisor use), one run,
every run (in bulk with SQL from a local SQLite store) and a run's metric history."""

from __future__ import annotations

import contextlib
import logging
import math
import sqlite3
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from trainer.tracking.connect import mlflow_client, sqlite_path
from trainer.tracking.layout import (
    LEGACY_GRID_EXPERIMENT,
    TAG_ACTIVE_S,
    TAG_ARCH,
    TAG_DATASET,
    TAG_INTENT,
    TAG_NOTE,
    TAG_PRESET,
    TAG_RATING,
    TAG_RUN_NAME,
    now_ms,
)

log = logging.getLogger(__name__)


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


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


def run_record(run: Any) -> RunRecord:
    """A ``RunRecord`` from an MLflow ``Run``."""
    info, data = run.info, run.data
    tags, params = dict(data.tags), dict(data.params)
    start, end = info.start_time, info.end_time
    duration = None
    if start:
        duration = ((end or now_ms()) - start) / 1000 if (end or info.status == "RUNNING") else None
    if info.status != "RUNNING" and _number(tags.get(TAG_ACTIVE_S)) is not None:
        duration = _number(tags[TAG_ACTIVE_S])  # the trainer's count: a stop's pause left out
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
    client = mlflow_client(tracking_uri)
    if experiment_names is None:
        ids = [
            e.experiment_id for e in client.search_experiments() if e.name != LEGACY_GRID_EXPERIMENT
        ]
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
    db = sqlite_path(tracking_uri)
    if db is None or not db.is_file():
        return list_runs(tracking_uri, max_results=max_results)
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
            rows = con.execute(
                "SELECT r.run_uuid, r.name, r.experiment_id, r.status, r.start_time, r.end_time,"
                " r.artifact_uri FROM runs r JOIN experiments e"
                " ON e.experiment_id = r.experiment_id WHERE r.lifecycle_stage = 'active'"
                " AND e.lifecycle_stage = 'active' AND e.name != ?"
                " ORDER BY r.start_time DESC LIMIT ?",
                (LEGACY_GRID_EXPERIMENT, max_results),
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


def get_run_record(tracking_uri: str, run_id: str) -> RunRecord:
    return run_record(mlflow_client(tracking_uri).get_run(run_id))


def metric_history(
    tracking_uri: str, run_id: str, keys: Iterable[str]
) -> dict[str, list[tuple[int, float, int]]]:
    """``{key: [(step, value, timestamp_ms), ...]}`` sorted by step then time; [] if never logged."""
    client = mlflow_client(tracking_uri)
    history: dict[str, list[tuple[int, float, int]]] = {}
    for key in keys:
        points = client.get_metric_history(run_id, key)
        history[key] = sorted((m.step, m.value, m.timestamp) for m in points)
    return history
