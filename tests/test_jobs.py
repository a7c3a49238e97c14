"""Launch, stop, resume and reconcile real trainer processes the way the studio does."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from jobs_support import fresh_settings, tracking_ready, training_at, wait_for

from trainer.config.io import load_config
from trainer.durations import format_duration
from trainer.jobs.active import active_jobs, busy_reason
from trainer.jobs.folder import LOG_FILE, LaunchRefused, log_tail, read_exit, stop_requested
from trainer.jobs.launch import resolve_device, resumable, train_command, trainer_env
from trainer.settings import StudioSettings
from trainer.tracking.artifacts import lora_artifacts
from trainer.tracking.job_file import read_job, write_job
from trainer.tracking.progress import read_progress
from trainer.tracking.records import get_run_record, list_runs

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "presets" / "demo_sd15.yaml"


@pytest.fixture()
def settings(tmp_path: Path, demo_home: Path, monkeypatch: pytest.MonkeyPatch) -> StudioSettings:
    return fresh_settings(tmp_path, demo_home, monkeypatch)


def long_config(name: str):
    return load_config(
        DEMO,
        [
            "train.steps=80",
            "sample.sample_every=0",
            "save.save_every=1000",
            f"logging.run_name={name}",
        ],
    )


# ------------------------------------------------------------------------------------ fast
def test_train_command_is_the_cli(tmp_path: Path) -> None:
    cmd = train_command(tmp_path / "c.yaml", tmp_path)
    assert cmd[1:5] == ["-m", "trainer", "run", str(tmp_path / "c.yaml")]
    assert cmd[-2:] == ["--job-dir", str(tmp_path)]
    assert train_command("c.yaml", "j", resume="latest")[-1] == "--resume"
    assert train_command("c.yaml", "j", resume="/x/step_1")[-2:] == ["--resume", "/x/step_1"]


def test_env_points_the_trainer_at_the_run(settings: StudioSettings) -> None:
    env = trainer_env(settings, "abc123")
    assert env["MLFLOW_RUN_ID"] == "abc123"
    assert env["MLFLOW_TRACKING_URI"] == f"sqlite:///{settings.home / 'mlflow.db'}"
    assert env["STUDIO_HOME"] == str(settings.home)
    assert str(ROOT) in env["PYTHONPATH"].split(os.pathsep)


def test_auto_device_resolves_without_torch_on_this_machine() -> None:
    assert resolve_device("cuda") == "cuda"
    assert resolve_device("auto") == "cpu"  # no GPU here


def test_unresolved_autos_are_refused_before_a_run_exists(settings: StudioSettings) -> None:
    from ui.jobs import launch_draft

    cfg = load_config(DEMO, ["train.steps=auto"])
    with pytest.raises(LaunchRefused, match=r"train\.steps"):
        launch_draft(cfg, settings)
    assert not (settings.home / "mlflow.db").exists()


def test_a_busy_device_refuses_a_second_launch(settings: StudioSettings) -> None:
    # A live trainer on the CPU: this very process stands in for it.
    folder = settings.jobs_dir / "busy_run"
    folder.mkdir(parents=True)
    write_job(
        folder, os.getpid(), "busy_run", time.time(), ["x"], folder / "c", name="busy", device="cpu"
    )
    (folder / "progress.json").write_text(json.dumps({"phase": "training", "step": 3}))
    [active] = active_jobs(settings)
    assert active.run_id == "busy_run" and active.phase == "training"
    from ui.jobs import launch_blocker, launch_draft

    cfg = load_config(DEMO)
    assert "already training on cpu" in launch_blocker(cfg, settings)
    with pytest.raises(LaunchRefused, match="already training on cpu"):
        launch_draft(cfg, settings)
    # Another device is free, and nothing was created for the refused launch.
    assert busy_reason(settings, "cuda") is None
    assert sorted(p.name for p in settings.jobs_dir.iterdir() if p.is_dir()) == ["busy_run"]


def test_log_tail_collapses_progress_bars(tmp_path: Path) -> None:
    lines = [f"line {i}" for i in range(100)]
    text = "\n".join(lines) + "\nLoading: 10%\rLoading: 50%\rLoading: 100%\n\x1b[A\n"
    (tmp_path / LOG_FILE).write_text(text)
    tail = log_tail(tmp_path, lines=3)
    assert tail.splitlines() == ["line 98", "line 99", "Loading: 100%"]
    assert log_tail(tmp_path / "missing") == ""


def test_format_duration() -> None:
    assert format_duration(None) == "—"
    assert format_duration(5.4) == "5 s"
    assert format_duration(185) == "3 min 05 s"
    assert format_duration(7800) == "2 h 10 min"


# ------------------------------------------------------------------------- real processes
@pytest.mark.slow
def test_launch_draft_runs_the_demo_to_the_end(settings: StudioSettings) -> None:
    from ui.jobs import launch_draft

    cfg = load_config(DEMO)
    job = launch_draft(cfg, settings)
    assert job.job_dir == settings.jobs_dir / job.run_id
    assert get_run_record(settings.tracking_uri, job.run_id).status == "RUNNING"
    assert os.getpgid(job.pid) == job.pid  # a session (and process group) of its own
    info = read_job(job.job_dir)
    assert info.pid == job.pid and info.run_id == job.run_id
    assert abs(info.started - time.time()) < 60 and info.create_time is not None
    assert info.command == job.command and info.extra["device"] == "cpu"
    assert load_config(job.config_path) == cfg
    assert [a.run_id for a in active_jobs(settings)] == [job.run_id]

    assert job.process.wait(timeout=240) == 0, log_tail(job.job_dir)
    record = get_run_record(settings.tracking_uri, job.run_id)
    assert record.status == "FINISHED"
    assert record.tags["studio.device"] == "cpu"
    assert record.params["train.steps"] == "30"
    assert read_progress(job.job_dir)["phase"] == "finished"
    log = (job.job_dir / LOG_FILE).read_text()
    assert "=== " in log and "Finished 30 steps" in log
    assert "lora/demo_sd15.safetensors" in lora_artifacts(settings.tracking_uri, job.run_id)
    wait_for(lambda: read_exit(job.job_dir), 5, "exit.json")
    assert read_exit(job.job_dir)["code"] == 0
    assert active_jobs(settings) == []
    assert "finished" in resumable(settings, job.run_id, record.status)


@pytest.mark.slow
def test_stop_ends_killed_then_resume_finishes_the_same_run(settings: StudioSettings) -> None:
    from ui.jobs import launch_draft, resume_job, stop_job

    job = launch_draft(long_config("stop_resume"), settings)
    wait_for(training_at(job.job_dir, 3), 180, "step 3")
    wait_for(tracking_ready(job.job_dir), 120, "the MLflow run attached")
    with pytest.raises(LaunchRefused, match="already training"):
        launch_draft(load_config(DEMO), settings)
    with pytest.raises(LaunchRefused, match="still running"):
        resume_job(job.run_id, "RUNNING", settings)

    sent = time.monotonic()
    assert stop_job(job.run_id, settings=settings)
    job.process.wait(timeout=30)
    assert time.monotonic() - sent < 15
    assert job.process.returncode == 3, log_tail(job.job_dir)
    record = get_run_record(settings.tracking_uri, job.run_id)
    assert record.status == "KILLED"
    stopped_at = read_progress(job.job_dir)["step"]
    assert 3 <= stopped_at < 80
    assert stop_requested(settings, job.run_id) is not None
    assert not stop_job(job.run_id, settings=settings)  # nothing left to stop

    again = resume_job(job.run_id, record.status, settings)
    assert again.run_id == job.run_id and again.resumed and "--resume" in again.command
    assert again.process.wait(timeout=240) == 0, log_tail(job.job_dir)
    record = get_run_record(settings.tracking_uri, job.run_id)
    assert record.status == "FINISHED"
    assert len([r for r in list_runs(settings.tracking_uri) if r.name == "stop_resume"]) == 1
    info = read_job(job.job_dir)
    assert info.pid == again.pid and len(info.extra["launches"]) == 2
    log = (job.job_dir / LOG_FILE).read_text()
    assert log.count("=== ") == 2 and "resuming run" in log and "Finished 80 steps" in log


@pytest.mark.slow
def test_a_sigkilled_trainer_is_reconciled_on_the_next_load(settings: StudioSettings) -> None:
    from ui.jobs import launch_draft, reconcile_on_load

    job = launch_draft(long_config("sigkill"), settings)
    wait_for(training_at(job.job_dir, 2), 180, "step 2")
    os.killpg(job.pid, signal.SIGKILL)
    job.process.wait(timeout=10)
    assert get_run_record(settings.tracking_uri, job.run_id).status == "RUNNING"
    assert active_jobs(settings) == []

    assert reconcile_on_load(settings, force=True) == [job.run_id]
    record = get_run_record(settings.tracking_uri, job.run_id)
    assert record.status in ("FAILED", "KILLED")
    assert f"pid {job.pid}" in record.note and "killed" in record.note.lower()
    assert read_progress(job.job_dir)["phase"] == record.status.lower()
    assert reconcile_on_load(settings, force=True) == []


def test_launch_records_the_whole_run_prediction_for_the_monitor(
    settings: StudioSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess
    import sys

    from trainer.jobs import launch as launching
    from trainer.tracking.layout import TAG_PREDICTED, TAG_PREDICTED_TOTAL
    from ui.monitor_view import load_view

    def no_trainer(cmd, env, log_path, banner):  # the record is the point, not the training
        log_path.parent.mkdir(parents=True, exist_ok=True)
        return subprocess.Popen([sys.executable, "-c", "pass"])

    monkeypatch.setattr(launching, "_start", no_trainer)
    job = launching.launch(
        settings, load_config(DEMO), predicted_s_per_step=0.097, predicted_total_s=123.4
    )
    job.process.wait(timeout=30)
    tags = get_run_record(settings.tracking_uri, job.run_id).tags
    assert tags[TAG_PREDICTED] == "0.097" and tags[TAG_PREDICTED_TOTAL] == "123.4"
    extra = read_job(job.job_dir).extra
    assert extra["predicted_total_s"] == 123.4 and extra["predicted_s_per_step"] == 0.097
    view = load_view(settings, job.run_id)
    assert view.predicted_total_s == 123.4 and view.predicted_s_per_step == 0.097
    unpredicted = launching.launch(settings, load_config(DEMO, ["logging.run_name=bare"]))
    unpredicted.process.wait(timeout=30)
    assert "predicted_total_s" not in read_job(unpredicted.job_dir).extra
    assert load_view(settings, unpredicted.run_id).predicted_total_s is None
