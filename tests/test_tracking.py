"""trainer.tracking against a real SQLite MLflow store (one per module: creating one takes ~3 s)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from PIL import Image

from trainer.config.io import loads_config
from trainer.config.schema import TrainingConfig
from trainer.redaction import redact
from trainer.settings import StudioSettings, load_settings
from trainer.tracking.artifacts import _Artifacts, load_run_config, lora_artifacts, sample_images
from trainer.tracking.connect import check_tracking_uri, default_artifact_root
from trainer.tracking.dead_runs import reconcile_dead_runs
from trainer.tracking.job_file import pid_alive, read_job, write_job
from trainer.tracking.mlflow_tracker import MlflowTracker, NotStartedError
from trainer.tracking.new_run import config_params, create_run, ensure_experiment
from trainer.tracking.progress import PROGRESS_KEYS, ProgressWriter, read_progress, write_progress
from trainer.tracking.ratings import set_note, set_rating
from trainer.tracking.records import RunRecord, get_run_record, list_runs, metric_history
from trainer.tracking.tracker import NullTracker, Tracker, make_tracker

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "hf_" + "AbCdEfGhIjKlMnOpQrStUvWxYz01234567"  # shaped like a Hugging Face token


# ------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tracking_home")


@pytest.fixture(scope="module")
def uri(home: Path) -> str:
    uri = f"sqlite:///{home / 'mlflow.db'}"
    ensure_experiment(uri, "lora-studio")  # creates the tables once
    return uri


@pytest.fixture()
def settings(home: Path, uri: str, monkeypatch: pytest.MonkeyPatch) -> StudioSettings:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    found = load_settings(home=home)
    assert found.tracking_uri == uri
    return found


@pytest.fixture(autouse=True)
def _no_inherited_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)


def make_cfg(project: str = "lora-studio", **changes: object) -> TrainingConfig:
    cfg = TrainingConfig()
    cfg.logging.project_name = project
    cfg.logging.log_system_metrics = False
    cfg.logging.log_every = 1000
    for name, value in changes.items():
        setattr(cfg, name, value)
    return cfg


def client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(uri)


def artifact_files(uri: str, run_id: str) -> dict[str, bytes]:
    root = Path(client(uri).get_run(run_id).info.artifact_uri.removeprefix("file://"))
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


# --------------------------------------------------------------------------------------- tests
def test_import_does_not_import_mlflow() -> None:
    code = (
        "import sys, importlib, pkgutil, trainer.tracking as t;"
        "[importlib.import_module('trainer.tracking.' + m.name)"
        " for m in pkgutil.iter_modules(t.__path__)];"
        "print('mlflow' in sys.modules, 'PIL' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["False", "False"]


def test_tracking_uri_checks() -> None:
    assert check_tracking_uri("sqlite:////abs/mlflow.db") == "sqlite:////abs/mlflow.db"
    assert check_tracking_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    with pytest.raises(ValueError, match="relative SQLite"):
        check_tracking_uri("sqlite:///mlflow.db")
    with pytest.raises(ValueError, match="file store"):
        check_tracking_uri("./mlruns")
    assert default_artifact_root("sqlite:////x/y/mlflow.db") == Path("/x/y/mlartifacts")


def test_ensure_experiment_uses_absolute_artifact_location(uri: str, home: Path) -> None:
    exp_id = ensure_experiment(uri, "my project")
    location = client(uri).get_experiment(exp_id).artifact_location
    assert location == (home / "mlartifacts" / "my_project").as_uri()
    assert ensure_experiment(uri, "my project") == exp_id  # idempotent
    client(uri).delete_experiment(exp_id)
    assert ensure_experiment(uri, "my project") == exp_id  # restored
    assert client(uri).get_experiment(exp_id).lifecycle_stage == "active"


def test_start_logs_params_yaml_and_hparams(uri: str, home: Path) -> None:
    cfg = make_cfg(name="cfg_roundtrip", intent="style")
    cfg.model.arch = "sdxl"
    cfg.model.name_or_path = "demo:sdxl"
    cfg.train.lr = 3e-4
    tracker = MlflowTracker(uri)
    run_id = tracker.start(cfg, tags={"studio.dataset_fingerprint": "abc123"})
    tracker.end("FINISHED")

    run = client(uri).get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "cfg_roundtrip"
    assert run.info.artifact_uri.startswith((home / "mlartifacts").as_uri())
    params = run.data.params
    assert params == config_params(cfg)
    assert params["train.lr"] == "0.0003"
    assert params["model.arch"] == "sdxl"
    assert params["datasets.0.resolution"] == "[512]"
    assert loads_config(load_run_config(uri, run_id)) == cfg
    assert run.data.metrics["hparam/train.lr"] == pytest.approx(3e-4)
    assert run.data.metrics["hparam/network.linear"] == 16.0
    assert not any(k.startswith("hparam/train.gradient_checkpointing") for k in run.data.metrics)
    history = client(uri).get_metric_history(run_id, "hparam/train.steps")
    assert [(m.step, m.value) for m in history] == [(0, 1000.0)]
    assert run.data.tags["studio.arch"] == "sdxl"
    assert run.data.tags["studio.intent"] == "style"
    assert run.data.tags["studio.dataset_fingerprint"] == "abc123"
    assert run.data.tags["studio.pid"] == str(os.getpid())
    # numeric filtering works on the hparam metrics, not on the text params
    found = list_runs(uri, ["lora-studio"], "metrics.`hparam/train.lr` > 0.0002")
    assert run_id in [r.run_id for r in found]


def test_create_run_then_attach_with_system_metrics(
    settings: StudioSettings, uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = make_cfg(name="attach_me")
    cfg.logging.run_name = "studio named"
    run_id = create_run(settings, cfg, {"studio.launched_by": "test"})
    run = client(uri).get_run(run_id)
    assert run.info.status == "RUNNING"
    assert run.info.run_name == "studio named"
    assert run.data.tags["studio.launched_by"] == "test"
    assert run.data.params == {}

    monkeypatch.setenv("MLFLOW_RUN_ID", run_id)
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.3")
    cfg.logging.log_system_metrics = True
    tracker = MlflowTracker(uri)
    assert tracker.start(cfg) == run_id
    assert tracker.attached
    assert tracker._monitor is not None
    time.sleep(0.8)
    tracker.end("KILLED")
    assert tracker._monitor is None

    run = client(uri).get_run(run_id)
    assert run.info.status == "KILLED"
    assert run.data.params["name"] == "attach_me"
    system = [k for k in run.data.metrics if k.startswith("system/")]
    assert "system/cpu_utilization_percentage" in system
    assert (
        len(client(uri).search_runs([run.info.experiment_id], "tags.`studio.launched_by` = 'test'"))
        == 1
    )  # attached, no second run created

    # attaching again (resume) sets it RUNNING; identical params are fine, changed ones refused
    again = MlflowTracker(uri)
    assert again.start(make_cfg(name="attach_me"), run_id=run_id) == run_id
    assert client(uri).get_run(run_id).info.status == "RUNNING"
    assert again.log_params({"name": "attach_me", "extra.thing": 1}) == []
    assert again.log_params({"name": "other"}) == ["name"]
    assert again.log_params({"k" * 251: "x", "long": "y" * 7000}) == ["k" * 251]
    again.end("FINISHED")
    params = client(uri).get_run(run_id).data.params
    assert params["name"] == "attach_me"
    assert params["extra.thing"] == "1"
    assert len(params["long"]) == 6000


def test_metrics_are_buffered_until_flush(uri: str) -> None:
    # No time-based flush here: on a loaded machine start() alone can take longer than 2 s.
    tracker = MlflowTracker(uri, max_latency_s=3600)
    run_id = tracker.start(make_cfg(name="buffered"))
    mlflow_client = client(uri)
    for step in range(50):
        tracker.log_metrics({"loss": 1.0 / (step + 1), "lr": 1e-4 * step}, step)
    assert tracker.pending == 100
    assert tracker.buffered == 100
    assert mlflow_client.get_metric_history(run_id, "loss") == []
    tracker.flush(wait=True)
    assert tracker.pending == 0
    loss = metric_history(uri, run_id, ["loss", "lr", "never"])
    assert [s for s, _, _ in loss["loss"]] == list(range(50))
    assert [v for _, v, _ in loss["loss"]] == pytest.approx([1.0 / (s + 1) for s in range(50)])
    assert loss["lr"][10][1] == pytest.approx(1e-3)
    assert loss["never"] == []

    # a full buffer (200 points) is handed to the writer thread by itself
    for step in range(50, 149):
        tracker.log_metrics({"loss": 0.5, "lr": 0.1}, step)
    assert tracker.buffered == 198
    tracker.log_metrics({"loss": 0.5, "lr": 0.1}, 149)
    assert tracker.buffered == 0
    tracker.flush(wait=True)
    assert tracker.pending == 0
    assert len(mlflow_client.get_metric_history(run_id, "loss")) == 150
    assert tracker.stats["batches"] == 2
    assert tracker.stats["points"] == 300
    tracker.end("FINISHED")
    assert tracker._writer is None  # end() stopped the writer thread


def test_metrics_flush_every_n_steps_in_order(uri: str) -> None:
    cfg = make_cfg(name="log_every")
    # Steps alone decide here: a busy machine must not reach the 2 s time limit first.
    tracker = MlflowTracker(uri, flush_every_steps=5, max_latency_s=60.0)
    run_id = tracker.start(cfg)
    for step in range(1, 6):
        tracker.log_metrics({"loss": float(step)}, step)
    assert tracker.buffered == 5  # steps 1..5: only 4 steps elapsed since the first
    tracker.log_metrics({"loss": 6.0}, 6)
    assert tracker.buffered == 0  # handed over at step 6
    for step in range(7, 40):  # several background batches, written in order
        tracker.log_metrics({"loss": float(step)}, step)
    tracker.end("FINISHED")  # end flushes and waits
    history = client(uri).get_metric_history(run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(s, float(s)) for s in range(1, 40)]
    stamps = [m.timestamp for m in history]
    assert stamps == sorted(stamps)
    assert tracker.stats["batches"] == 8  # steps 1-6, 7-11, ..., 32-36, and 37-39 at end()


def test_metrics_are_batched_by_time_by_default(uri: str) -> None:
    tracker = MlflowTracker(uri, max_latency_s=60.0)
    run_id = tracker.start(make_cfg(name="by_time"))
    for step in range(1, 40):  # a fast loop: nothing is written per step
        tracker.log_metrics({"loss": float(step)}, step)
    assert tracker.buffered == 39 and tracker.stats["batches"] == 0
    tracker.end("FINISHED")
    history = client(uri).get_metric_history(run_id, "loss")
    assert [m.step for m in history] == list(range(1, 40))
    assert tracker.stats["batches"] == 1


def test_flush_does_not_wait_for_a_slow_store(uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    tracker = MlflowTracker(uri)
    run_id = tracker.start(make_cfg(name="slow_store"))
    real = tracker.client.log_batch

    def slow(*args, **kwargs):
        time.sleep(0.4)
        return real(*args, **kwargs)

    monkeypatch.setattr(tracker.client, "log_batch", slow)
    for step in range(10):
        tracker.log_metrics({"loss": float(step)}, step)
    began = time.perf_counter()
    tracker.flush()  # hands the batch over; the loop goes on
    assert time.perf_counter() - began < 0.2
    assert tracker.buffered == 0
    assert tracker.pending == 10
    tracker.flush(wait=True)
    assert time.perf_counter() - began >= 0.4
    assert tracker.pending == 0
    tracker.end("FINISHED")
    assert len(client(uri).get_metric_history(run_id, "loss")) == 10


def test_metrics_survive_a_failing_store(uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    tracker = MlflowTracker(uri, background=False)
    run_id = tracker.start(make_cfg(name="flaky"))
    real = tracker.client.log_batch
    failures = iter([True, False])

    def flaky(*args, **kwargs):
        if next(failures, False):
            raise OSError("database is locked")
        return real(*args, **kwargs)

    monkeypatch.setattr(tracker.client, "log_batch", flaky)
    tracker.log_metrics({"loss": 1.0}, 1)
    tracker.flush(wait=True)
    assert tracker.pending == 1  # kept for a retry
    assert tracker.errors
    assert "database is locked" in tracker.errors[0]
    tracker.log_metrics({"loss": 2.0}, 2)
    tracker.end("FINISHED")
    history = client(uri).get_metric_history(run_id, "loss")
    assert sorted((m.step, m.value) for m in history) == [(1, 1.0), (2, 2.0)]


def _image(color: str, size: int = 24) -> Image.Image:
    return Image.new("RGB", (size, size), color)


def test_images_read_back_with_prompt_and_seed(uri: str) -> None:
    tracker = MlflowTracker(uri)
    run_id = tracker.start(make_cfg(name="images"))
    extra = {"sampler": "euler", "steps": 4}
    tracker.log_image(_image("red"), "sample/0", 10, {"prompt": "a red dog", "seed": 7, **extra})
    tracker.log_image(_image("blue"), "sample/1", 10, {"prompt": "a blue cat", "seed": 8})
    tracker.log_image(_image("green", 32), "sample/0", 20, {"prompt": "a red dog", "seed": 7})
    tracker.end("FINISHED")

    samples = sample_images(uri, run_id)
    assert [(s.step, s.key, s.prompt, s.seed) for s in samples] == [
        (10, "sample/0", "a red dog", 7),
        (10, "sample/1", "a blue cat", 8),
        (20, "sample/0", "a red dog", 7),
    ]
    assert samples[0].extra["sampler"] == "euler"
    assert samples[0].extra["steps"] == 4
    with Image.open(samples[1].path_or_uri) as img:
        assert img.size == (24, 24)
        assert img.convert("RGB").getpixel((3, 3)) == (0, 0, 255)
    assert samples[2].compressed_path is not None
    assert samples[2].compressed_path.endswith(".webp")
    assert Path(samples[2].compressed_path).exists()
    step10 = json.loads(artifact_files(uri, run_id)["samples/step_000010.json"])
    assert set(step10["images"]) == {"sample/0", "sample/1"}


def test_sample_images_through_download_cache(
    uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The path taken for a tracking server: artifacts downloaded once into a cache folder."""
    tracker = MlflowTracker(uri)
    run_id = tracker.start(make_cfg(name="remote_images"))
    tracker.log_image(_image("white"), "preview", 3, {"prompt": "p", "seed": 1})
    tracker.end("FINISHED")
    original = _Artifacts.__init__

    def as_remote(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.local = None

    monkeypatch.setattr(_Artifacts, "__init__", as_remote)
    samples = sample_images(uri, run_id, cache_dir=tmp_path)
    assert [(s.step, s.key, s.prompt, s.seed) for s in samples] == [(3, "preview", "p", 1)]
    assert Path(samples[0].path_or_uri).is_relative_to(tmp_path)
    assert Path(samples[0].path_or_uri).stat().st_size > 0
    assert "name: remote_images" in load_run_config(uri, run_id)


@pytest.mark.parametrize("status", ["FINISHED", "FAILED", "KILLED"])
def test_end_statuses(uri: str, status: str) -> None:
    tracker = MlflowTracker(uri)
    run_id = tracker.start(make_cfg(name=f"end_{status.lower()}"))
    tracker.log_metrics({"loss": 0.25}, 1)
    tracker.end(status)  # type: ignore[arg-type]
    tracker.end("FINISHED")  # idempotent: the first status stays
    run = client(uri).get_run(run_id)
    assert run.info.status == status
    assert run.info.end_time is not None
    assert run.data.metrics["loss"] == 0.25


def test_end_rejects_unknown_status(uri: str) -> None:
    tracker = MlflowTracker(uri)
    with pytest.raises(ValueError, match="FINISHED"):
        tracker.end("DONE")  # type: ignore[arg-type]
    with pytest.raises(NotStartedError):
        tracker.log_text("x", "a.txt")


def test_redact_rules() -> None:
    cleaned = redact(
        {
            "hf_token": TOKEN,
            "auth.api_key": "k",
            "db_password": "p",
            "client_secret": "s",
            "model.name_or_path": f"me/{TOKEN}",
            "datasets.0.keep_tokens": 2,
            "datasets.0.token_dropout_rate": 0.1,
            "plain": "hf_short",
        }
    )
    assert cleaned == {
        "model.name_or_path": "me/hf_***REDACTED***",
        "datasets.0.keep_tokens": 2,
        "datasets.0.token_dropout_rate": 0.1,
        "plain": "hf_short",
    }


def test_secrets_never_reach_params_tags_or_artifacts(uri: str) -> None:
    cfg = make_cfg(name="secretive")
    cfg.model.name_or_path = f"https://user:{TOKEN}@huggingface.co/some/model"
    cfg.datasets[0].default_caption = f"a photo {TOKEN}"
    tracker = MlflowTracker(uri)
    run_id = tracker.start(cfg, tags={"hf_token": TOKEN, "origin": f"cli --token {TOKEN}"})
    tracker.set_tags({"HF_TOKEN": TOKEN, "api_key": "plain-secret"})
    tracker.log_params({"upload.password": "hunter2", "cmd": f"x {TOKEN}"})
    tracker.set_description(f"trained with {TOKEN}")
    tracker.log_text(f"log line {TOKEN}\n", "logs/train.log")
    tracker.log_image(_image("red"), "sample/0", 1, {"prompt": f"p {TOKEN}", "seed": 1})
    tracker.end("FINISHED")

    run = client(uri).get_run(run_id)
    texts = [*run.data.params, *run.data.params.values(), *run.data.tags, *run.data.tags.values()]
    files = artifact_files(uri, run_id)
    assert "config/train_config.yaml" in files
    assert "logs/train.log" in files
    assert not [t for t in texts if TOKEN in t]
    assert not [name for name, data in files.items() if TOKEN.encode() in data]
    lowered = {k.lower() for k in [*run.data.params, *run.data.tags]}
    assert not lowered & {"hf_token", "api_key", "upload.password"}
    assert run.data.params["datasets.0.keep_tokens"] == "0"  # caption tokens are not secrets
    assert run.data.tags["mlflow.note.content"] == "trained with hf_***REDACTED***"
    assert run.data.params["cmd"] == "x hf_***REDACTED***"
    assert "hf_***REDACTED***" in files["config/train_config.yaml"].decode()


def _dead_pid() -> tuple[int, float]:
    started = time.time()
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid, started


def test_reconcile_dead_runs(settings: StudioSettings, uri: str, tmp_path: Path) -> None:
    project = "reconcile"
    cfg = make_cfg(project=project, name="rec")
    exp_id = ensure_experiment(uri, project)
    jobs = tmp_path / "jobs"
    dead, live, reused, stopping, orphan, finished = (create_run(settings, cfg) for _ in range(6))
    pid, started = _dead_pid()
    own_start = psutil.Process().create_time()
    command = [sys.executable, "-m", "trainer", "run", "cfg.yaml"]
    write_job(jobs / dead, pid, dead, started, command, "cfg.yaml")
    write_progress(jobs / dead, {"phase": "training", "step": 12, "total_steps": 40})
    write_job(jobs / live, os.getpid(), live, own_start, command, "cfg.yaml")
    reused_job = write_job(jobs / reused, os.getpid(), reused, own_start, command, "c")
    reused_job.create_time = own_start - 3600  # this pid belonged to another, older process
    (jobs / reused / "job.json").write_text(json.dumps(reused_job.__dict__))
    write_job(jobs / stopping, pid, stopping, started, command, "cfg.yaml")
    write_progress(jobs / stopping, {"phase": "stopping", "step": 5})
    write_job(jobs / finished, pid, finished, started, command, "cfg.yaml")
    write_progress(jobs / finished, {"phase": "finished", "step": 40})

    changed = reconcile_dead_runs(uri, jobs, experiment_ids=[exp_id])
    assert set(changed) == {dead, reused, stopping, finished}
    status = {rid: client(uri).get_run(rid).info.status for rid in [*changed, live, orphan]}
    assert status == {
        dead: "FAILED",
        reused: "FAILED",
        stopping: "KILLED",
        finished: "FINISHED",
        live: "RUNNING",
        orphan: "RUNNING",  # no job folder, but younger than 15 minutes
    }
    note = client(uri).get_run(dead).data.tags["mlflow.note.content"]
    assert f"pid {pid}" in note
    assert "disappeared" in note
    assert "step 12/40" in note
    progress = read_progress(jobs / dead)
    assert progress is not None
    assert progress["phase"] == "failed"
    assert progress["step"] == 12
    assert "disappeared" in progress["last_error"]
    assert read_progress(jobs / stopping)["phase"] == "killed"

    # second pass: nothing left to do, then the job-less run once it is old enough
    assert reconcile_dead_runs(uri, jobs, experiment_ids=[exp_id]) == []
    changed = reconcile_dead_runs(client(uri), jobs, experiment_ids=[exp_id], stale_after_minutes=0)
    assert changed == [orphan]
    assert client(uri).get_run(orphan).info.status == "FAILED"
    assert client(uri).get_run(live).info.status == "RUNNING"
    client(uri).set_terminated(live, "FINISHED")


def test_pid_alive() -> None:
    me = psutil.Process()
    assert pid_alive(os.getpid())
    assert pid_alive(os.getpid(), me.create_time() + 1.5)
    assert not pid_alive(os.getpid(), me.create_time() + 10)
    pid, started = _dead_pid()
    assert not pid_alive(pid, started)


def test_progress_file_atomic_and_tolerant(tmp_path: Path) -> None:
    job = tmp_path / "job"
    assert read_progress(job) is None  # missing
    written = write_progress(job, {"phase": "training", "step": 3, "loss": 0.5})
    read = read_progress(job)
    assert read == {**dict.fromkeys(PROGRESS_KEYS), **written}
    assert read["step"] == 3
    assert read["eta_s"] is None
    assert abs(read["updated"] - time.time()) < 5
    assert sorted(p.name for p in job.iterdir()) == ["progress.json"]  # no temp file left
    with pytest.raises(ValueError, match="phase"):
        write_progress(job, {"phase": "dancing"})
    (job / "progress.json").write_text('{"phase": "train')  # a torn write
    assert read_progress(job) is None
    (job / "progress.json").write_text("[1, 2]")
    assert read_progress(job) is None

    # a reader never sees a partial file while a writer rewrites it continuously
    stop = threading.Event()

    def writer() -> None:
        step = 0
        while not stop.is_set():
            write_progress(job, {"phase": "training", "step": step, "pad": "x" * 5000})
            step += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        time.sleep(0.01)
        reads = [read_progress(job) for _ in range(500)]
    finally:
        stop.set()
        thread.join()
    assert all(r is not None and r["phase"] == "training" for r in reads)


def test_progress_writer_throttles(tmp_path: Path) -> None:
    writer = ProgressWriter(tmp_path, min_interval_s=60)
    assert writer.update(phase="training", step=1, total_steps=9)
    assert not writer.update(phase="training", step=2)  # too soon: kept in memory
    assert read_progress(tmp_path)["step"] == 1
    assert writer.update(phase="sampling", step=3)  # a phase change is written at once
    assert read_progress(tmp_path)["phase"] == "sampling"
    assert writer.update(step=4, last_error="boom")  # so is an error
    assert not writer.update(step=5)
    writer.close(phase="finished")
    final = read_progress(tmp_path)
    assert (final["phase"], final["step"], final["total_steps"]) == ("finished", 5, 9)


def test_job_file_roundtrip(tmp_path: Path) -> None:
    started = time.time()
    info = write_job(
        tmp_path / "j",
        os.getpid(),
        "run123",
        started,
        ["python", "-m", "trainer"],
        "c.yaml",
        log_path="train.log",
    )
    assert info.create_time == pytest.approx(psutil.Process().create_time())
    read = read_job(tmp_path / "j")
    assert read == info
    assert read.command == ["python", "-m", "trainer"]
    assert read.extra == {"log_path": "train.log"}
    (tmp_path / "j" / "job.json").write_text('{"pid": ')
    assert read_job(tmp_path / "j") is None
    assert read_job(tmp_path / "missing") is None


def test_list_runs_rating_note_and_lora_artifacts(uri: str, tmp_path: Path) -> None:
    project = "listing"
    ids = []
    for arch, intent in (("sd15", "person"), ("flux", "style")):
        cfg = make_cfg(project=project, name=f"list_{arch}", intent=intent)
        cfg.model.arch = arch
        cfg.model.name_or_path = f"demo:{arch}"
        tracker = MlflowTracker(uri)
        ids.append(tracker.start(cfg, tags={"studio.dataset_fingerprint": f"fp-{arch}"}))
        tracker.log_metrics({"loss": 0.1}, 5)
        tracker.end("FINISHED")
        time.sleep(0.01)
    set_rating(uri, ids[1], 4)
    set_note(uri, ids[1], "crisp style")
    with pytest.raises(ValueError, match="1 to 5"):
        set_rating(uri, ids[0], 6)

    records = list_runs(uri, [project])
    assert [r.run_id for r in records] == ids[::-1]  # newest first
    flux = records[0]
    assert isinstance(flux, RunRecord)
    assert (flux.arch, flux.intent, flux.rating, flux.note) == ("flux", "style", 4, "crisp style")
    assert flux.dataset_fingerprint == "fp-flux"
    assert flux.status == "FINISHED"
    assert flux.metrics["loss"] == 0.1
    assert flux.params["model.arch"] == "flux"
    assert flux.duration_s is not None
    assert flux.duration_s >= 0
    assert records[1].rating is None
    assert records[1].intent == "person"
    only_flux = list_runs(uri, [project], "tags.`studio.arch` = 'flux'")
    assert [r.run_id for r in only_flux] == [ids[1]]
    assert list_runs(uri, ["no such experiment"]) == []

    lora = tmp_path / "out"
    (lora / "step_10").mkdir(parents=True)
    (lora / "step_10" / "pytorch_lora_weights.safetensors").write_bytes(b"x")
    (lora / "final.safetensors").write_bytes(b"y")
    tracker = MlflowTracker(uri)
    tracker.run_id = ids[0]
    tracker.log_artifact(lora / "final.safetensors", "lora")
    tracker.log_artifacts(lora / "step_10", "checkpoints/step_10")
    tracker.log_text("not a lora", "other/readme.txt")
    assert tracker.errors == []
    assert lora_artifacts(uri, ids[0]) == [
        "checkpoints/step_10/pytorch_lora_weights.safetensors",
        "lora/final.safetensors",
    ]
    assert lora_artifacts(uri, ids[1]) == []


def test_dataset_input(uri: str) -> None:
    tracker = MlflowTracker(uri)
    run_id = tracker.start(make_cfg(name="with_dataset"))
    tracker.log_dataset_input("demo", "d1g3st", "/data/demo", {"images": 12})
    tracker.end("FINISHED")
    run = client(uri).get_run(run_id)
    inputs = run.inputs.dataset_inputs
    assert [(d.dataset.name, d.dataset.digest) for d in inputs] == [("demo", "d1g3st")]
    assert json.loads(inputs[0].dataset.profile) == {"images": 12}
    assert get_run_record(uri, run_id).dataset_fingerprint == "d1g3st"


def test_null_tracker_records_nothing(uri: str) -> None:
    before = len(list_runs(uri))
    tracker = NullTracker()
    assert isinstance(tracker, Tracker)
    assert isinstance(MlflowTracker(uri), Tracker)
    cfg = make_cfg(name="null")
    run_id = tracker.start(cfg, tags={"a": "b"})
    assert run_id.startswith("local-")
    assert tracker.start(cfg, run_id="given") == "given"
    tracker.log_config(cfg)
    assert tracker.log_params({"x": 1}) == []
    tracker.log_metrics({"loss": 1.0}, 1)
    tracker.flush()
    tracker.log_image(_image("red"), "sample/0", 1, {"prompt": "p"})
    tracker.log_artifact(__file__, "x")
    tracker.log_artifacts(ROOT / "trainer", "x")
    tracker.log_text("t", "t.txt")
    tracker.set_tags({"a": "b"})
    tracker.set_description("d")
    tracker.log_dataset_input("n", "d", "s")
    tracker.end("FAILED")
    assert len(list_runs(uri)) == before
    cfg.logging.use_mlflow = False
    assert isinstance(make_tracker(cfg, uri), NullTracker)
    cfg.logging.use_mlflow = True
    made = make_tracker(cfg, uri)
    assert isinstance(made, MlflowTracker)
    assert made.tracking_uri == uri
