"""`python -m trainer run` end to end: real subprocess, real MLflow SQLite store, real signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from jobs_support import tracking_ready, wait_for
from mlflow.tracking import MlflowClient

from trainer.quiet_libraries import HARMLESS_LOG_LINES
from trainer.tracking.artifacts import lora_artifacts, sample_images
from trainer.tracking.progress import read_progress
from trainer.tracking.records import list_runs, metric_history
from trainer.tracking.startup import read_startup

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def _env(home: Path, uri: str) -> dict[str, str]:
    env = {**os.environ, "STUDIO_HOME": str(home), "MLFLOW_TRACKING_URI": uri}
    env.pop("MLFLOW_RUN_ID", None)
    return env


def _run_cli(args: list[str], home: Path, uri: str, timeout: int = 300):
    return subprocess.run(
        [sys.executable, "-m", "trainer", "run", *args],
        cwd=ROOT,
        env=_env(home, uri),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.mark.parametrize("arch", ["sd15", "sdxl", "flux"])
def test_each_architecture_trains_through_the_cli(arch, demo_home, store, tmp_path) -> None:
    job = tmp_path / "job"
    result = _run_cli(
        [
            str(ROOT / "presets" / f"demo_{arch}.yaml"),
            "--job-dir",
            str(job),
            "--set",
            f"logging.run_name=cli_{arch}",
            "--set",
            "logging.log_every=5",
        ],
        demo_home,
        store,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    said = result.stdout + result.stderr  # what the Monitor's log shows: no harmless alarms
    assert not [text for _, text in HARMLESS_LOG_LINES if text in said], said[-3000:]
    assert "gradient_checkpointing_enable" not in said, said[-3000:]
    run = next(r for r in list_runs(store) if r.name == f"cli_{arch}")
    assert run.status == "FINISHED"
    assert run.arch == arch
    losses = metric_history(store, run.run_id, ["loss"])["loss"]
    assert [step for step, _, _ in losses] == [5, 10, 15, 20, 25, 30]
    assert run.metrics["s_per_step"] > 0 and "lr" in run.metrics
    samples = sample_images(store, run.run_id)
    assert {s.step for s in samples} == {0, 10, 20, 30}
    assert all(s.prompt and "sks" in s.prompt for s in samples)
    artifacts = lora_artifacts(store, run.run_id)
    assert f"lora/demo_{arch}.safetensors" in artifacts
    assert any(a.startswith("checkpoints/step_00000010/") for a in artifacts)
    assert read_progress(job)["phase"] == "finished"
    # Start-up ran without cyclic collection and froze what it loaded (trainer.startup_gc).
    assert read_startup(job)["frozen_objects"] > 100_000
    [used] = MlflowClient(store).get_run(run.run_id).inputs.dataset_inputs
    assert used.dataset.name == "0:demo" and len(used.dataset.digest) == 16
    assert json.loads(used.dataset.profile)["images"] == 12
    _assert_lora_changes_output(arch, demo_home, job / "lora" / f"demo_{arch}")


def _assert_lora_changes_output(arch: str, home: Path, diffusers_dir: Path) -> None:
    import diffusers

    cls = {
        "sd15": "StableDiffusionPipeline",
        "sdxl": "StableDiffusionXLPipeline",
        "flux": "FluxPipeline",
    }[arch]
    pipe = getattr(diffusers, cls).from_pretrained(
        home / "models" / "demo" / arch, dtype=torch.float32
    )
    pipe.set_progress_bar_config(disable=True)
    kwargs = {"max_sequence_length": 32} if arch == "flux" else {}

    def image() -> torch.Tensor:
        return pipe(
            "sks circle",
            num_inference_steps=2,
            height=64,
            width=64,
            output_type="pt",
            generator=torch.Generator().manual_seed(0),
            **kwargs,
        ).images

    before = image()
    pipe.load_lora_weights(str(diffusers_dir))
    assert (image() - before).abs().max() > 1e-4


def test_sigterm_checkpoints_and_ends_killed(demo_home, store, tmp_path) -> None:
    job = tmp_path / "job"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "trainer",
            "run",
            str(ROOT / "presets" / "demo_sd15.yaml"),
            "--job-dir",
            str(job),
            "--set",
            "train.steps=600",  # still training when stopped, after MLflow attached
            "--set",
            "sample.sample_every=0",
            "--set",
            "logging.run_name=cli_sigterm",
            "--set",
            "save.save_every=1000",
            # The studio's default loader: the persistent workers must end with the trainer.
            "--set",
            "runtime.num_workers=2",
            "--set",
            "runtime.persistent_workers=true",
        ],
        cwd=ROOT,
        env=_env(demo_home, store),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            progress = read_progress(job) or {}
            if progress.get("phase") == "training" and (progress.get("step") or 0) >= 3:
                break
            time.sleep(0.2)
        else:
            pytest.fail("the run never reached step 3")
        wait_for(tracking_ready(job), 120, "the MLflow run attached")  # the stop alone is timed
        sent = time.monotonic()
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
        exit_seconds = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 3, proc.stdout.read().decode()[-2000:]
    assert exit_seconds < 15
    run = next(r for r in list_runs(store) if r.name == "cli_sigterm")
    assert run.status == "KILLED"
    assert run.note.startswith(f"Stopped at step {read_progress(job)['step']}. Resume")
    assert "the Resume button on the Monitor" in run.note  # the Monitor shows it as it is
    progress = read_progress(job)
    assert progress["phase"] == "killed"
    checkpoints = sorted((job / "checkpoints").glob("step_*"))
    assert checkpoints and int(checkpoints[-1].name.split("_")[1]) == progress["step"]

    # Resume continues the same MLflow run from the checkpoint to the end.
    result = _run_cli(
        [
            str(ROOT / "presets" / "demo_sd15.yaml"),
            "--job-dir",
            str(job),
            "--resume",
            "--set",
            "train.steps=600",  # still training when stopped, after MLflow attached
            "--set",
            "sample.sample_every=0",
            "--set",
            "logging.run_name=cli_sigterm",
            "--set",
            "save.save_every=1000",
        ],
        demo_home,
        store,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    resumed = [r for r in list_runs(store) if r.name == "cli_sigterm"]
    assert len(resumed) == 1 and resumed[0].status == "FINISHED"
    steps = [step for step, _, _ in metric_history(store, run.run_id, ["loss"])["loss"]]
    assert steps[-1] == 600 and len(steps) == len(set(steps))


def test_a_crash_ends_failed_with_a_suggestion(demo_home, store, tmp_path) -> None:
    result = _run_cli(
        [
            str(ROOT / "presets" / "demo_sd15.yaml"),
            "--job-dir",
            str(tmp_path / "job"),
            "--set",
            "model.name_or_path=someone/not-downloaded-model",
            "--set",
            "logging.run_name=cli_offline",
        ],
        demo_home,
        store,
    )
    assert result.returncode == 1
    run = next(r for r in list_runs(store) if r.name == "cli_offline")
    assert run.status == "FAILED"
    assert "Suggestion:" in run.note and "offline" in run.note.lower()
    assert "Suggestion:" in read_progress(tmp_path / "job")["last_error"]


def test_invalid_config_exits_2_without_a_run(demo_home, store, tmp_path) -> None:
    before = len(list_runs(store))
    result = _run_cli(
        [
            str(ROOT / "presets" / "demo_sd15.yaml"),
            "--set",
            "train.lr=-1",
            "--set",
            "train.steps=auto",
        ],
        demo_home,
        store,
    )
    assert result.returncode == 2
    assert "train.lr: must be > 0.0" in result.stdout
    assert "train.steps: is still 'auto'" not in result.stdout  # reported once valid
    assert len(list_runs(store)) == before
