"""The first step sooner (issue 18): a run's start-up phases in ``startup.json``, and the MLflow
run started in the background (``BackgroundStart``) while the model loads, with nothing lost and
a failed start still failing the run with the store's own message."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from trainer.engine.run import EXIT_FAILED, EXIT_OK, run_job
from trainer.tracking import reachability
from trainer.tracking.background import BackgroundStart
from trainer.tracking.progress import read_progress
from trainer.tracking.reachability import StoreUnreachable
from trainer.tracking.startup import STARTUP_PHASES, TRACKING_READY, StartupTimes, read_startup


def write_config(folder: Path, *, mlflow: bool, steps: int = 2) -> Path:
    path = folder / "c.yaml"
    path.write_text(
        "name: first_step\nmodel: {name_or_path: 'demo:sd15'}\n"
        "network: {linear: 4, linear_alpha: 4}\n"
        "datasets: [{folder_path: 'demo:dataset', resolution: [64], cache_latents: true}]\n"
        f"train: {{steps: {steps}, batch_size: 2, optimizer: adamw, "
        "gradient_checkpointing: false}\n"
        "sample: {sample_every: 0}\nsave: {save_every: 1000}\n"
        f"logging: {{use_mlflow: {str(mlflow).lower()}, log_every: 1, "
        "log_system_metrics: false}\n"
    )
    return path


@pytest.fixture()
def studio(demo_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("STUDIO_HOME", str(demo_home))
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    return demo_home


# ------------------------------------------------------------------------------ startup.json
def test_a_run_records_every_start_up_phase_in_order_and_mlflow_gets_everything(
    studio: Path, tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    job = tmp_path / "job"
    result = run_job(write_config(tmp_path, mlflow=True), job_dir=job, tracking_uri=uri)
    assert result.exit_code == EXIT_OK, result.message

    found = read_startup(job)
    assert found is not None
    assert list(found["phases"]) == list(STARTUP_PHASES)  # every phase, in order
    ends = list(found["phases"].values())
    assert ends == sorted(ends) and ends[0] > 0
    assert set(found["cpu_s"]) == {*STARTUP_PHASES, TRACKING_READY}
    assert abs(found["process_started"] - (time.time() - ends[-1])) < 600  # this process
    # The MLflow run started while the model loaded: the main thread did not wait for it.
    assert found["phases"]["tracking"] < found["other"][TRACKING_READY]

    # Nothing logged before the run was ready was lost, and the run id came back.
    run = MlflowClient(uri).get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["effective_batch_size"] == "2"  # logged while the run was starting
    assert run.data.tags["studio.resumed"] == "False"
    assert [d.dataset.name for d in run.inputs.dataset_inputs] == ["0:demo"]
    steps = [m.step for m in MlflowClient(uri).get_metric_history(result.run_id, "loss")]
    assert steps == [1, 2]


def test_a_run_without_mlflow_records_its_phases_too(studio: Path, tmp_path: Path) -> None:
    job = tmp_path / "job"
    assert run_job(write_config(tmp_path, mlflow=False), job_dir=job).exit_code == EXIT_OK
    found = read_startup(job)
    assert found is not None and list(found["phases"]) == list(STARTUP_PHASES)
    assert TRACKING_READY not in found["other"]


def test_the_phases_are_written_once_at_the_first_step_past_the_start(tmp_path: Path) -> None:
    from trainer.engine.context import RunContext
    from trainer.tracking.tracker import NullTracker

    ctx = RunContext(home=tmp_path, job_dir=tmp_path / "job", tracker=NullTracker())
    for phase in STARTUP_PHASES[:-1]:
        ctx.startup_done(phase)
    ctx.phase("training", step=5, total_steps=9)  # training starts at a resumed step 5
    assert read_startup(ctx.job_dir) is None
    ctx.phase("training", step=5, total_steps=9)  # after a preview: still no step done
    assert read_startup(ctx.job_dir) is None
    ctx.phase("training", step=6, total_steps=9)
    first = read_startup(ctx.job_dir)
    assert first is not None and list(first["phases"]) == list(STARTUP_PHASES)
    ctx.phase("training", step=7, total_steps=9)
    assert read_startup(ctx.job_dir) == first  # written once


def test_a_mark_is_kept_from_its_first_time() -> None:
    times = StartupTimes()
    times.mark("imports")
    first = times.marks["imports"]
    time.sleep(0.01)
    times.mark("imports")
    assert times.marks["imports"] == first
    assert 0 < first < times.now()


# ------------------------------------------------------------------------- BackgroundStart
class SlowTracker:
    """A tracker whose start waits for ``release`` (or fails with ``error``); records calls."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.release = threading.Event()
        self.error = error
        self.run_id: str | None = None
        self.calls: list[tuple[str, Any]] = []
        self.unlogged = "kept"

    def start(self, cfg: Any, *, run_id: str | None = None, tags: Any = None, **when: Any) -> str:
        self.release.wait(10)
        if self.error is not None:
            raise self.error
        self.run_id = run_id or "made-by-the-store"
        self.calls.append(("start", run_id))
        self.when = when
        return self.run_id

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return lambda *args, **kwargs: self.calls.append((name, args, kwargs))


def test_calls_before_the_run_is_ready_are_queued_and_replayed_in_order() -> None:
    inner = SlowTracker()
    ready: list[bool] = []
    tracker = BackgroundStart(inner, on_ready=lambda: ready.append(True))
    assert tracker.start(None) is None  # no id given: the store makes it
    assert tracker.unlogged == "kept"  # the wrapped tracker's own attributes
    tracker.set_tags({"a": "1"})
    assert tracker.log_params({"p": 1}) == []
    tracker.log_metrics({"loss": 0.5}, step=1)
    assert inner.calls == [] and not tracker.ready
    inner.release.set()
    assert tracker.wait_started() == "made-by-the-store"
    tracker.log_metrics({"loss": 0.4}, step=2)  # straight through once ready
    assert [call[0] for call in inner.calls] == [
        "start",
        "set_tags",
        "log_params",
        "log_metrics",
        "log_metrics",
    ]
    queued, direct = inner.calls[3], inner.calls[4]
    assert queued[1] == ({"loss": 0.5}, 1) and direct[1] == ({"loss": 0.4}, 2)
    # A queued metric keeps the time it was measured, not the time it was replayed.
    assert abs(queued[2]["timestamp_ms"] - time.time() * 1000) < 60_000
    assert direct[2] == {}
    assert ready == [True] and tracker.run_id == "made-by-the-store"


def test_a_given_run_id_is_known_at_once_and_end_waits_for_the_start() -> None:
    inner = SlowTracker()
    tracker = BackgroundStart(inner)
    assert tracker.start(None, run_id="given") == "given"
    assert tracker.run_id == "given"
    threading.Timer(0.2, inner.release.set).start()
    tracker.end("FINISHED")  # waits for the run, then ends it
    assert inner.calls == [("start", "given"), ("end", ("FINISHED",), {})]


def test_a_deferred_start_waits_for_its_cue_or_for_whoever_needs_the_run() -> None:
    inner = SlowTracker()
    inner.release.set()
    times = StartupTimes()
    tracker = BackgroundStart(inner, defer_s=30, started_at=123.5)
    times.on_mark("first_step", tracker.proceed)
    tracker.start(None)
    tracker.set_tags({"early": "1"})
    time.sleep(0.2)
    assert inner.calls == [] and not tracker.ready  # nothing before the cue
    times.mark("first_step")
    assert tracker.wait_started() == "made-by-the-store"
    assert [call[0] for call in inner.calls] == ["start", "set_tags"]
    assert inner.when == {"started_at": 123.5}  # the run begins when the process did
    # Without the cue, whatever needs the run (the folder's name, a checkpoint's record of the
    # run id, the end) starts it and waits for it.
    for ask in ("wait_started", "run_id"):
        other = SlowTracker()
        other.release.set()
        waiting = BackgroundStart(other, defer_s=30)
        waiting.start(None)
        started = time.monotonic()
        answer = waiting.wait_started() if ask == "wait_started" else waiting.run_id
        assert answer == "made-by-the-store" and time.monotonic() - started < 5


def test_a_hook_on_a_mark_already_made_runs_at_once() -> None:
    times, called = StartupTimes(), []
    times.mark("model_load")
    times.on_mark("model_load", lambda: called.append("late"))
    times.on_mark("first_step", lambda: called.append("first"))
    assert called == ["late"]
    times.mark("first_step")
    times.mark("first_step")
    assert called == ["late", "first"]  # once


def test_a_failed_start_is_raised_unchanged_and_the_failure_path_stays_quiet() -> None:
    error = StoreUnreachable("postgresql://bob:secret@db/mlflow", "connection refused")
    inner = SlowTracker(error)
    inner.release.set()
    tracker = BackgroundStart(inner)
    tracker.start(None)
    with pytest.raises(StoreUnreachable) as raised:
        tracker.wait_started()
    assert raised.value is error
    with pytest.raises(StoreUnreachable):
        tracker.log_metrics({"loss": 1.0}, step=1)
    with pytest.raises(StoreUnreachable):  # every later call, not only the first
        tracker.flush(wait=True)
    tracker.set_description("Run failed")  # what the failure path calls: no second error
    tracker.end("FAILED")
    assert inner.calls == []


# ------------------------------------------------------------------- a store that is down
def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_store_that_is_down_still_fails_the_run_at_once_with_its_message(
    studio: Path, tmp_path: Path
) -> None:
    reachability.forget_answers()
    down = f"postgresql://bob:secret@127.0.0.1:{_closed_port()}/mlflow"
    config = write_config(tmp_path, mlflow=True)
    for job_dir in (None, tmp_path / "job"):  # with or without a job folder to write to
        started = time.monotonic()
        with pytest.raises(StoreUnreachable, match="does not answer") as raised:
            run_job(config, job_dir=job_dir, tracking_uri=down)
        assert time.monotonic() - started < 10  # before any model is loaded
        assert "unset MLFLOW_TRACKING_URI" in str(raised.value)
        assert "secret" not in str(raised.value)
    assert not (tmp_path / "job").exists()  # nothing written, as before
    reachability.forget_answers()


def test_a_start_that_fails_in_the_background_fails_the_run_with_its_message(
    studio: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_RUN_ID", "0" * 32)  # a run the store does not hold
    job = tmp_path / "job"
    result = run_job(write_config(tmp_path, mlflow=True, steps=3), job_dir=job, tracking_uri=uri)
    assert result.exit_code == EXIT_FAILED and result.run_id == "0" * 32
    assert f"Run with id={'0' * 32} not found" in result.message
    progress = read_progress(job)
    assert progress is not None and progress["phase"] == "failed"
    assert "not found" in progress["last_error"]
