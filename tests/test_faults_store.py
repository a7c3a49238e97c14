"""Faults of the tracking store: one that does not answer (reported in seconds, not 207 s), a SQLite
file deleted or replaced under the studio (read afresh, never stale) and under a trainer (metrics
kept in the job folder, one line instead of a traceback per batch), and dead-run reconciliation
that reports the runs it could not close instead of stopping at the first."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric

from trainer.tracking import reachability
from trainer.tracking.connect import StoreUnreachable, client_uri, mlflow_client
from trainer.tracking.dead_runs import ReconcileIncomplete, reconcile_dead_runs
from trainer.tracking.layout import APP, TAG_APP
from trainer.tracking.metric_buffer import (
    UNLOGGED_FILE,
    UnloggedMetrics,
    quiet_store_tracebacks,
    read_unlogged,
    replay_unlogged,
)
from trainer.tracking.mlflow_tracker import MlflowTracker
from trainer.tracking.new_run import ensure_experiment
from trainer.tracking.records import get_run_record, list_runs, metric_history

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "s3cr3t-Pa55"


# ------------------------------------------------------------------------------------ stores
@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty store with MLflow's tables (creating them takes seconds; copying, milliseconds)."""
    db = tmp_path_factory.mktemp("template") / "mlflow.db"
    ensure_experiment(f"sqlite:///{db}", "lora-studio")
    return db


def new_store(template: Path, folder: Path, name: str = "mlflow.db") -> str:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(template, folder / name)
    return f"sqlite:///{folder / name}"


def studio_run(uri: str, name: str) -> str:
    """A RUNNING run as the studio starts one (its app tag, no trainer pid)."""
    client = mlflow_client(uri)
    experiment = client.get_experiment_by_name("lora-studio").experiment_id
    return client.create_run(experiment, run_name=name, tags={TAG_APP: APP}).info.run_id


# ------------------------------------------------------------------------- a store that is silent
@pytest.fixture(autouse=True)
def _fresh_answers() -> Iterator[None]:
    reachability.forget_answers()
    yield
    reachability.forget_answers()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture()
def silent_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


@pytest.fixture()
def answering_port() -> Iterator[int]:
    """A server that answers the first bytes it gets with one byte (PostgreSQL's 'N' to an SSL
    request; for http it is a malformed reply, which still shows that something runs)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                try:
                    conn.recv(64)
                    conn.sendall(b"N")
                except OSError:
                    pass

    threading.Thread(target=serve, daemon=True).start()
    yield server.getsockname()[1]
    server.close()


@pytest.mark.parametrize("scheme", ["postgresql", "postgresql+psycopg2", "http", "mysql"])
def test_a_dead_store_is_reported_in_seconds_with_its_uri_redacted(
    scheme: str, silent_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reachability, "PROBE_TIMEOUT_S", 1.0)  # the studio waits 5 s
    refused = f"{scheme}://bob:{PASSWORD}@127.0.0.1:{_closed_port()}/mlflow"
    started = time.monotonic()
    with pytest.raises(StoreUnreachable, match="connection refused") as err:
        mlflow_client(refused)
    assert time.monotonic() - started < 5  # MLflow alone: ~100 s of retries
    assert PASSWORD not in str(err.value) and f"{scheme}://***@127.0.0.1:" in str(err.value)
    assert "unset MLFLOW_TRACKING_URI to use the local store" in str(err.value)

    hung = f"{scheme}://bob:{PASSWORD}@127.0.0.1:{silent_port}/mlflow"
    started = time.monotonic()
    with pytest.raises(StoreUnreachable, match=r"timed out after 1 s"):
        mlflow_client(hung)
    assert time.monotonic() - started < 3  # MLflow alone: forever (libpq has no timeout)
    started = time.monotonic()
    with pytest.raises(StoreUnreachable):  # asked again within seconds: the answer is kept
        mlflow_client(hung)
    assert time.monotonic() - started < 0.5


def test_a_store_that_answers_passes_and_sql_clients_get_a_connect_timeout(
    answering_port: int,
) -> None:
    for scheme in ("postgresql", "http"):
        uri = f"{scheme}://bob:{PASSWORD}@127.0.0.1:{answering_port}/mlflow"
        assert reachability.store_problem(uri) is None
    assert reachability.store_problem("sqlite:////nowhere/mlflow.db") is None  # not probed
    assert client_uri("postgresql://u:p@h/db") == "postgresql://u:p@h/db?connect_timeout=10"
    assert (
        client_uri("mysql+pymysql://u@h/db?x=1") == "mysql+pymysql://u@h/db?x=1&connect_timeout=10"
    )
    assert (
        client_uri("postgresql://h/db?connect_timeout=3") == "postgresql://h/db?connect_timeout=3"
    )
    assert client_uri("http://h:5000") == "http://h:5000"


# ------------------------------------------------------------ a SQLite store replaced or deleted
def test_the_studio_reads_a_replaced_store_afresh(template: Path, tmp_path: Path) -> None:
    uri = new_store(template, tmp_path / "home")
    old_run = studio_run(uri, "before")
    assert [r.name for r in list_runs(uri)] == ["before"]  # MLflow now holds the file open
    # A backup restored over it: another file moved into place (a new inode).
    spare = new_store(template, tmp_path / "spare")
    new_run = studio_run(spare, "restored")
    os.replace(tmp_path / "spare" / "mlflow.db", tmp_path / "home" / "mlflow.db")
    assert [r.run_id for r in list_runs(uri)] == [new_run]  # without the check: "before" still
    assert get_run_record(uri, new_run).name == "restored"
    with pytest.raises(Exception, match="not found"):
        get_run_record(uri, old_run)


@pytest.mark.slow  # MLflow creates a fresh store: ~10 s of migrations
def test_the_studio_does_not_show_a_deleted_store(template: Path, tmp_path: Path) -> None:
    uri = new_store(template, tmp_path)
    studio_run(uri, "gone")
    assert len(list_runs(uri)) == 1
    (tmp_path / "mlflow.db").unlink()
    assert list_runs(uri) == []  # a fresh store, as on a first start: not the deleted runs


# ------------------------------------------------------------------------- dead-run reconciling
def test_reconciling_goes_on_past_a_run_it_cannot_close_and_reports_it(
    template: Path, tmp_path: Path
) -> None:
    uri = new_store(template, tmp_path)
    refused, closed = studio_run(uri, "refused"), studio_run(uri, "closed")
    client = mlflow_client(uri)
    real_set_tag = client.set_tag

    def set_tag(run_id: str, key: str, value: str) -> None:
        if run_id == refused:
            raise RuntimeError(f"store at http://bob:{PASSWORD}@db refused\n[SQL: UPDATE ...]")
        real_set_tag(run_id, key, value)

    client.set_tag = set_tag
    with pytest.raises(ReconcileIncomplete) as err:
        reconcile_dead_runs(client, tmp_path / "jobs", stale_after_minutes=0)
    assert err.value.changed == [closed]
    assert client.get_run(closed).info.status == "FAILED"
    assert client.get_run(refused).info.status == "RUNNING"
    assert [rid for rid, _ in err.value.failures] == [refused]
    message = str(err.value)
    assert f"run {refused[:8]}: RuntimeError: store at http://***@db refused" in message
    assert PASSWORD not in message and "[SQL" not in message


def test_reconciling_a_deleted_store_says_why_each_run_stays_open(
    template: Path, tmp_path: Path
) -> None:
    uri = new_store(template, tmp_path)
    runs = {studio_run(uri, "a"), studio_run(uri, "b")}
    client = mlflow_client(uri)
    assert {r.info.run_id for r in client.search_runs(["1"])} == runs  # the file is open now
    (tmp_path / "mlflow.db").unlink()  # the client still reads the deleted file; writes fail
    with pytest.raises(ReconcileIncomplete) as err:
        reconcile_dead_runs(client, tmp_path / "jobs", stale_after_minutes=0)
    assert err.value.changed == []
    assert {rid for rid, _ in err.value.failures} == runs
    assert all("readonly database" in why for _, why in err.value.failures)


def test_the_monitor_shows_what_reconciling_could_not_do(monkeypatch, tmp_path: Path) -> None:
    import ui.jobs as jobs
    from trainer.settings import load_settings

    shown: list[str] = []
    monkeypatch.setattr(jobs.st, "warning", lambda text, **_: shown.append(text))
    settings = load_settings(home=tmp_path, tracking_uri_override=None)

    def incomplete(_settings) -> list[str]:
        raise ReconcileIncomplete(["r-closed"], [("r-open-123456", "OperationalError: readonly")])

    monkeypatch.setattr(jobs, "reconcile", incomplete)
    assert jobs.reconcile_on_load(settings, force=True) == ["r-closed"]
    assert shown and "Could not close 1 run(s)" in shown[-1] and "r-open-1" in shown[-1]
    jobs.reconcile_on_load(settings)  # throttled: no new check, the problem is still shown
    assert len(shown) == 2
    monkeypatch.setattr(jobs, "reconcile", lambda _settings: ["r-later"])
    assert jobs.reconcile_on_load(settings, force=True) == ["r-later"]
    assert len(shown) == 2  # it worked: the warning is gone

    def down(_settings) -> list[str]:
        raise StoreUnreachable(f"http://bob:{PASSWORD}@h:1", "connection refused")

    monkeypatch.setattr(jobs, "reconcile", down)
    assert jobs.reconcile_on_load(settings, force=True) == []  # the page's own reads say so
    assert len(shown) == 2


# ------------------------------------------------------------------ a trainer's store goes away
@pytest.fixture()
def mlflow_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """MLflow's loggers do not propagate to the root: capture them where they log."""
    logger = logging.getLogger("mlflow")
    logger.addHandler(caplog.handler)
    try:
        yield caplog
    finally:
        logger.removeHandler(caplog.handler)


def test_metrics_a_deleted_store_refuses_are_kept_in_the_job_folder(
    template: Path, tmp_path: Path, mlflow_log: pytest.LogCaptureFixture
) -> None:
    uri = new_store(template, tmp_path / "store")
    run_id = studio_run(uri, "training")
    client = MlflowClient(tracking_uri=uri)
    sent = [("loss", 1.0 / (s + 1), 1000 + s, s) for s in range(5)]
    client.log_batch(run_id, metrics=[Metric(*p) for p in sent])
    (tmp_path / "store" / "mlflow.db").unlink()

    quiet_store_tracebacks()
    unlogged = UnloggedMetrics()  # the job folder is not known yet: held in memory
    refused_points = []
    with mlflow_log.at_level(logging.WARNING):
        for step in range(5, 25):  # 20 batches, each refused
            batch = [("loss", 1.0 / (step + 1), 1000 + step, step), ("lr", 1e-4, 1000 + step, step)]
            try:
                client.log_batch(run_id, metrics=[Metric(*p) for p in batch])
            except Exception as err:
                unlogged.note_refusal("metrics", err, step)
                unlogged.keep(batch)
                refused_points += batch
            if step == 6:
                unlogged.folder = tmp_path / "job"
    records = [r for r in mlflow_log.records if r.name.startswith(("mlflow", "trainer"))]
    assert not any(r.exc_info for r in records)  # no traceback at all
    store_lines = [r for r in records if r.name == "mlflow.store.db.utils"]
    # Was: a traceback for every batch. At most one line (another test may have set MLflow's
    # logger level, so none is fine too).
    assert len(store_lines) <= 1
    ours = [r.getMessage() for r in records if r.name == "trainer.tracking.metric_buffer"]
    assert len(ours) == 1
    assert (
        "MLflow refused metrics at step 5 (OperationalError: attempt to write a readonly"
        in (ours[0])
    )
    assert f"<job folder>/{UNLOGGED_FILE}" in ours[0]  # said before the folder was known

    path = tmp_path / "job" / UNLOGGED_FILE
    assert read_unlogged(path) == refused_points  # held ones written when the folder came
    assert unlogged.points == 40
    assert unlogged.summary() == (
        "40 metric points of steps 5–24 could not be logged to MLflow (OperationalError: "
        f"attempt to write a readonly database); they are in {path}."
    )

    # Later, into a store that takes them: the history is whole again.
    fresh = new_store(template, tmp_path / "fresh")
    later = studio_run(fresh, "replayed")
    assert replay_unlogged(MlflowClient(tracking_uri=fresh), later, path) == 40
    history = metric_history(fresh, later, ["loss"])["loss"]
    assert [step for step, _, _ in history] == list(range(5, 25))
    assert not path.exists() and path.with_name(UNLOGGED_FILE + ".replayed").exists()


def test_a_torn_last_line_is_skipped_and_nothing_kept_says_nothing(tmp_path: Path) -> None:
    unlogged = UnloggedMetrics(tmp_path)
    assert unlogged.summary() is None and unlogged.keep([]) == 0
    unlogged.keep([("loss", float("nan"), 5, 3)])
    with open(tmp_path / UNLOGGED_FILE, "a", encoding="utf-8") as out:
        out.write('{"key": "loss", "val')  # the trainer was killed mid-write
    (point,) = read_unlogged(tmp_path / UNLOGGED_FILE)
    assert point[0] == "loss" and point[1] != point[1] and point[2:] == (5, 3)  # NaN kept
    assert json.loads((tmp_path / UNLOGGED_FILE).read_text().splitlines()[0])["step"] == 3
    assert "1 metric points of step 3" in (unlogged.summary() or "")


def test_only_a_sqlite_file_deleted_or_replaced_since_is_dropped(tmp_path: Path) -> None:
    from trainer.tracking.connect import drop_replaced_store

    assert drop_replaced_store(f"http://h:{_closed_port()}") is False
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert drop_replaced_store(uri) is False  # first sight: nothing to drop
    (tmp_path / "mlflow.db").write_bytes(b"")
    assert drop_replaced_store(uri) is False  # created since: nothing held an older file
    (tmp_path / "other.db").write_bytes(b"")
    os.replace(tmp_path / "other.db", tmp_path / "mlflow.db")
    assert drop_replaced_store(uri) is True
    assert drop_replaced_store(uri) is False
    (tmp_path / "mlflow.db").unlink()
    assert drop_replaced_store(uri) is True  # deleted: what MLflow holds is dropped too


def test_a_trainer_whose_store_is_deleted_finishes_and_keeps_its_metrics(
    template: Path, tmp_path: Path, mlflow_log: pytest.LogCaptureFixture
) -> None:
    from trainer.config.io import load_config

    cfg = load_config(ROOT / "presets" / "demo_sd15.yaml", ["logging.log_system_metrics=false"])
    uri = new_store(template, tmp_path / "store")
    tracker = MlflowTracker(uri, max_latency_s=0)
    run_id = tracker.start(cfg)
    tracker.unlogged.folder = tmp_path / "job"  # what run_job does once the job folder is known
    for step in range(5):
        tracker.log_metrics({"loss": 1.0 / (step + 1)}, step)
    tracker.flush(wait=True)
    (tmp_path / "store" / "mlflow.db").unlink()
    with mlflow_log.at_level(logging.WARNING):
        for step in range(5, 40):
            tracker.log_metrics({"loss": 1.0 / (step + 1), "lr": 1e-4}, step)
        tracker.set_description("finished")
        tracker.end("FINISHED")  # was: the store's error, and the trainer exited 1
    assert not any(r.exc_info for r in mlflow_log.records)
    kept = read_unlogged(tmp_path / "job" / UNLOGGED_FILE)
    assert sorted({s for _, _, _, s in kept}) == list(range(5, 40))
    assert len(kept) == 70
    warnings = [r.getMessage() for r in mlflow_log.records if r.name.startswith("trainer.")]
    assert any(
        "could not be logged to MLflow" in w and str(tmp_path / "job") in w for w in warnings
    )
    assert len(warnings) <= 3 and run_id
