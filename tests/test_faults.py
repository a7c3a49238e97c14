"""Faults the studio survives (issue 9, item 3), on the tiny demo models.

SIGKILL mid-run, a full disk while saving, two launches at once, a studio restart during
training, and corrupt cache files. Each test injects the fault and checks nothing is lost beyond
what the design allows (at most ``save_every`` steps after a kill) and the error is clear.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from jobs_support import fresh_settings, make_home, training_at, wait_for
from options_support import run, tiny_config

from trainer.config.io import load_config, save_config
from trainer.engine.checkpoint import list_checkpoints, load_checkpoint
from trainer.files import atomic_write_text
from trainer.jobs.folder import LOG_FILE, LaunchRefused, log_tail
from trainer.jobs.launch import LaunchedJob, launch
from trainer.settings import StudioSettings
from trainer.tracking.progress import read_progress
from trainer.tracking.records import get_run_record

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "presets" / "demo_sd15.yaml"


@pytest.fixture()
def settings(tmp_path: Path, demo_home: Path, monkeypatch: pytest.MonkeyPatch) -> StudioSettings:
    return fresh_settings(tmp_path, demo_home, monkeypatch)


def no_space(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


# ----------------------------------------------------------------- disk full / write errors
def test_a_failed_config_write_leaves_the_previous_file_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "job" / "config.yaml"
    before = load_config(DEMO)
    save_config(before, path)
    original = path.read_bytes()
    caption = tmp_path / "data" / "img_000.txt"
    atomic_write_text(caption, "a photo of sks")

    from trainer import files

    monkeypatch.setattr(files.os, "fsync", no_space)  # the data never reaches the disk
    with pytest.raises(OSError) as err:
        save_config(load_config(DEMO, ["train.steps=99"]), path)
    assert err.value.errno == errno.ENOSPC
    with pytest.raises(OSError):
        atomic_write_text(caption, "a new caption")
    monkeypatch.undo()

    assert path.read_bytes() == original and load_config(path) == before
    assert caption.read_text(encoding="utf-8") == "a photo of sks"
    leftovers = [p.name for p in (*path.parent.iterdir(), *caption.parent.iterdir())]
    assert sorted(leftovers) == ["config.yaml", "img_000.txt"]  # no temporaries left behind


def test_disk_full_while_saving_a_checkpoint(
    tmp_path: Path, demo_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second checkpoint fails half-written: the first is intact and resumes; the run ends
    FAILED with a note that says the disk is full and the last checkpoint is intact."""
    from trainer.engine.run import run_job

    home = make_home(tmp_path, demo_home)
    monkeypatch.setenv("STUDIO_HOME", str(home))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    cfg = tiny_config(train={"steps": 4}, save={"save_every": 2}, logging={"use_mlflow": True})
    config = save_config(cfg, tmp_path / "config.yaml")
    job = tmp_path / "job"

    real_save, calls = torch.save, []

    def save_then_fail(obj, f, *args, **kwargs):
        calls.append(f)
        if len(calls) == 2:  # mid-save of step 4: half a file, then the disk is full
            Path(f).write_bytes(b"PK\x03\x04 half a zip")
            no_space()
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_then_fail)
    result = run_job(config, job_dir=job, tracking_uri=uri)
    monkeypatch.setattr(torch, "save", real_save)

    assert result.status == "FAILED" and len(calls) == 2
    assert "No space left on device" in result.message and "disk is full" in result.message
    assert "last complete checkpoint is intact" in result.message
    record = get_run_record(uri, result.run_id)
    assert record.status == "FAILED" and "disk is full" in record.note
    progress = read_progress(job)
    assert progress["phase"] == "failed" and "disk is full" in progress["last_error"]
    saved = list_checkpoints(job / "checkpoints")
    assert [p.name for p in saved] == ["step_00000002"]
    assert not [p for p in (job / "checkpoints").iterdir() if p.name.startswith(".")]
    assert load_checkpoint(saved[0]).step == 2

    # With space again, the run resumes from the intact checkpoint and finishes.
    outcome, _ = run(cfg, home, job, resume=saved[0])
    assert outcome.step == 4 and not outcome.stopped


def test_disk_full_while_writing_the_lora_keeps_the_old_file_and_the_checkpoint(
    tmp_path: Path, demo_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import safetensors.torch

    from trainer.engine.run import run_job
    from trainer.lora.io import atomic_save_file

    real = safetensors.torch.save_file

    def half_then_full(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"\x08\x00\x00\x00half")
        no_space()

    # The helper alone: an earlier LoRA of the same name survives a failed overwrite.
    lora = tmp_path / "out" / "t.safetensors"
    atomic_save_file({"w": torch.ones(2)}, lora, {"step": 1})
    monkeypatch.setattr(safetensors.torch, "save_file", half_then_full)
    with pytest.raises(OSError):
        atomic_save_file({"w": torch.zeros(2)}, lora, {"step": 2})
    monkeypatch.setattr(safetensors.torch, "save_file", real)
    assert torch.equal(safetensors.torch.load_file(lora)["w"], torch.ones(2))
    assert [p.name for p in lora.parent.iterdir()] == ["t.safetensors"]

    # A whole run whose final LoRA cannot be written: FAILED, disk full, checkpoint intact.
    home = make_home(tmp_path, demo_home)
    monkeypatch.setenv("STUDIO_HOME", str(home))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    cfg = tiny_config(train={"steps": 2}, save={"save_every": 2}, logging={"use_mlflow": True})
    config = save_config(cfg, tmp_path / "config.yaml")
    job = tmp_path / "job"
    monkeypatch.setattr(safetensors.torch, "save_file", half_then_full)
    result = run_job(config, job_dir=job, tracking_uri=uri)
    monkeypatch.setattr(safetensors.torch, "save_file", real)
    assert result.status == "FAILED" and "disk is full" in result.message
    assert get_run_record(uri, result.run_id).status == "FAILED"
    [saved] = list_checkpoints(job / "checkpoints")
    assert load_checkpoint(saved).step == 2
    assert not [p for p in job.rglob(".*") if p.is_file()]  # no half-written temporaries


# ---------------------------------------------------------------------------- corrupt cache
def test_corrupt_cache_files_are_rebuilt_not_trained_on(
    tmp_path: Path, demo_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = make_home(tmp_path, demo_home)
    monkeypatch.setenv("STUDIO_HOME", str(home))
    cfg = tiny_config(
        train={"steps": 3, "cache_text_embeddings": True},
        datasets=[{"cache_latents_to_disk": True}],
    )
    clean, clean_tracker = run(cfg, home, tmp_path / "clean")
    files = sorted(p for p in (home / "cache").rglob("*.safetensors"))
    assert len(files) >= 4
    good = {p: p.read_bytes() for p in files}

    # Four kinds of damage: truncated, zero bytes, garbage, and a valid file of other data.
    for index, path in enumerate(files):
        data = good[path]
        damaged = [data[: len(data) // 2], b"", os.urandom(len(data)), good[files[0]]]
        kind = damaged[index % 4]
        if kind == data:  # files[0] itself: damage it another way
            kind = data[:-7]
        path.write_bytes(kind)

    again, again_tracker = run(cfg, home, tmp_path / "again")
    assert again_tracker.losses() == clean_tracker.losses()  # bit-identical: not trained on
    from safetensors.torch import load as load_tensors

    for path in files:  # every damaged file was detected and written again, correct
        rebuilt, original = load_tensors(path.read_bytes()), load_tensors(good[path])
        assert rebuilt.keys() == original.keys(), path.name
        assert all(torch.equal(rebuilt[k], original[k]) for k in original), path.name
    assert clean.step == again.step == 3


# ------------------------------------------------------------------------ real processes
def long_config(name: str, steps: int, save_every: int):
    return load_config(
        DEMO,
        [
            f"train.steps={steps}",
            "sample.sample_every=0",
            f"save.save_every={save_every}",
            f"logging.run_name={name}",
        ],
    )


@pytest.mark.slow
def test_sigkill_is_reconciled_and_resume_loses_at_most_save_every_steps(
    settings: StudioSettings,
) -> None:
    from ui.jobs import launch_draft, reconcile_on_load, resume_job

    # Enough steps that the kill lands mid-training on a fast machine (the progress file is
    # written about once a second, so a short run can finish between two readings).
    save_every, steps = 5, 400
    job = launch_draft(long_config("kill_resume", steps, save_every), settings)
    wait_for(training_at(job.job_dir, 9), 240, "step 9")
    os.killpg(job.pid, signal.SIGKILL)
    job.process.wait(timeout=10)
    killed_at = read_progress(job.job_dir)["step"]  # the last step the studio saw done
    assert killed_at < steps

    assert reconcile_on_load(settings, force=True) == [job.run_id]
    record = get_run_record(settings.tracking_uri, job.run_id)
    assert record.status in ("FAILED", "KILLED")
    saved = load_checkpoint(list_checkpoints(job.job_dir / "checkpoints")[-1]).step
    lost = killed_at - saved
    print(f"\nSIGKILL at step {killed_at}; last checkpoint step {saved}; {lost} steps lost")
    # The progress file lags the trainer by up to a second, so the checkpoint may be newer than
    # the last step the studio saw (nothing it knew of was lost); never more than save_every.
    assert lost <= save_every and saved >= 5

    again = resume_job(job.run_id, record.status, settings)
    assert again.process.wait(timeout=300) == 0, log_tail(job.job_dir)
    assert get_run_record(settings.tracking_uri, job.run_id).status == "FINISHED"
    assert read_progress(job.job_dir)["step"] == steps
    log = (job.job_dir / LOG_FILE).read_text()
    assert "resuming run" in log and f"Finished {steps} steps" in log


@pytest.mark.slow
def test_two_launches_at_once_then_a_studio_restart_finds_the_job(
    settings: StudioSettings,
) -> None:
    from ui.jobs import launch_blocker, stop_job

    results: list[object] = []
    barrier = threading.Barrier(2)

    def launch_twin(name: str) -> None:
        cfg = long_config(name, 20_000, 100_000)  # still training when checked: stopped at the end
        barrier.wait()
        try:
            results.append(launch(settings, cfg))
        except LaunchRefused as err:
            results.append(err)

    threads = [threading.Thread(target=launch_twin, args=(f"twin{i}",)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    launched = [r for r in results if isinstance(r, LaunchedJob)]
    refused = [r for r in results if isinstance(r, LaunchRefused)]
    assert len(launched) == 1 and len(refused) == 1, results
    assert "already training on cpu" in str(refused[0])
    [job] = launched
    assert [p.name for p in settings.jobs_dir.iterdir() if p.is_dir()] == [job.run_id]
    try:
        wait_for(training_at(job.job_dir, 1), 240, "step 1")
        assert "already training on cpu" in launch_blocker(load_config(DEMO), settings)

        # A new studio process (nothing in memory) finds the running job from its folder.
        probe = (
            "import json; from trainer.jobs.active import active_jobs, busy_reason;"
            "from trainer.jobs.control import reconcile; from trainer.settings import load_settings;"
            "from trainer.tracking.job_file import read_job, pid_alive; s = load_settings();"
            "[a] = active_jobs(s); info = read_job(s.jobs_dir / a.run_id);"
            "print(json.dumps({'run_id': a.run_id, 'phase': a.phase, 'pid': info.pid,"
            "'alive': pid_alive(info.pid, info.create_time), 'reconciled': reconcile(s),"
            "'busy': busy_reason(s, 'cpu')}))"
        )
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        out = subprocess.run(
            [sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        found = json.loads(out.stdout.strip().splitlines()[-1])
        assert found["run_id"] == job.run_id and found["pid"] == job.pid and found["alive"]
        assert found["phase"] == "training" and found["reconciled"] == []
        assert "already training on cpu" in found["busy"]
        assert get_run_record(settings.tracking_uri, job.run_id).status == "RUNNING"
    finally:
        stop_job(job.run_id, force=True, settings=settings)
        job.process.wait(timeout=30)


def test_a_failed_caption_edit_in_the_dataset_manager_keeps_the_old_caption(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io as _io

    from PIL import Image

    from trainer.data import library as dm

    buffer = _io.BytesIO()
    Image.new("RGB", (16, 16)).save(buffer, format="PNG")
    folder = dm.import_files(tmp_path, "set", [("a.png", buffer.getvalue())]).folder
    dm.set_caption(folder, "a.png", "the old caption")
    monkeypatch.setattr(dm.os, "fsync", no_space)
    with pytest.raises(OSError) as err:
        dm.set_caption(folder, "a.png", "the new caption")
    monkeypatch.undo()
    assert err.value.errno == errno.ENOSPC
    assert dm.read_captions(folder) == {"a.png": "the old caption"}
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]
