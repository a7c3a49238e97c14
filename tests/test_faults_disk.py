"""A full disk, told as one sentence (issue 16, item 4): "Disk full at PATH: X free, about Y
needed", with what to do, whatever the writer (torch.save's zip writer, safetensors, plain
OSError ENOSPC / EDQUOT / EFBIG).

A real small tmpfs needs root, so the edge is simulated where it is true: a trainer process whose
file-size limit (RLIMIT_FSIZE, SIGXFSZ ignored) is lowered after its first checkpoint, so that
torch.save's next write fails exactly as on a full disk ("unexpected pos"). In-process runs with
MLflow check the note, the progress file and that earlier checkpoints survive.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from jobs_support import make_home
from options_support import tiny_config
from safetensors import SafetensorError

from trainer.config.io import save_config
from trainer.engine.checkpoint import (
    DiskFullError,
    folder_bytes,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
    tensor_bytes,
)
from trainer.engine.failures import disk_full_note, explain_failure, is_write_full
from trainer.tracking.progress import read_progress

ROOT = Path(__file__).resolve().parent.parent
TORCH_FULL = "[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534"

# Lowers this process's file-size limit once the first checkpoint is saved: the next checkpoint's
# training state (about 150 KB) cannot be written, the files before it (under 60 KB) could.
LIMITED_TRAINER = """
import resource, signal, sys
from trainer.engine import loop
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG from write(), as ENOSPC from a full disk
real_save = loop.save_checkpoint
def save_then_fill_the_disk(*args, **kwargs):
    saved = real_save(*args, **kwargs)
    hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, hard))
    return saved
loop.save_checkpoint = save_then_fill_the_disk
from trainer.cli import main
sys.exit(main(sys.argv[1:]))
"""


# -------------------------------------------------------------------------- what is recognised
@pytest.mark.parametrize(
    "error",
    [
        RuntimeError(TORCH_FULL),
        RuntimeError("PytorchStreamWriter failed writing file data/3: file write failed"),
        OSError(errno.ENOSPC, "No space left on device"),
        OSError(errno.EDQUOT, "Disk quota exceeded"),
        OSError(errno.EFBIG, "File too large"),
        SafetensorError("Error while serializing: I/O error: File too large (os error 27)"),
        SafetensorError(
            "Error while serializing: I/O error: No space left on device (os error 28)"
        ),
        DiskFullError("/x/y", 10, RuntimeError("short write")),
    ],
    ids=["torch_pos", "torch_writer", "enospc", "edquot", "efbig", "st_efbig", "st_enospc", "own"],
)
def test_every_kind_of_write_refusal_is_told_as_disk_full(error: Exception, tmp_path) -> None:
    note = explain_failure(error, writing_to=tmp_path / "job" / "lora", needed_bytes=5 * 2**20)
    head, _, suggestion = note.partition("\n\nSuggestion: ")
    if isinstance(error, DiskFullError):  # its own path and size win over the hints
        assert head.startswith("Disk full at /x/y: ") and "about 10 bytes needed" in head
    else:
        assert head.startswith(f"Disk full at {tmp_path / 'job' / 'lora'}: ")
        assert "free, about 5.0 MB needed" in head
        assert f"{type(error).__name__}: {error}" in head  # the original error stays readable
    assert "Free space" in suggestion and "move the studio home" in suggestion


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError("PytorchStreamReader failed reading zip archive: failed finding central"),
        FileNotFoundError(errno.ENOENT, "No such file or directory", "/x/model"),
        RuntimeError("CUDA out of memory"),
    ],
)
def test_other_failures_are_not_called_disk_full(error: Exception) -> None:
    assert not is_write_full(error)
    assert "Disk full" not in explain_failure(error, writing_to="/tmp", needed_bytes=1)


def test_the_note_wraps_the_cause_and_names_free_space(tmp_path: Path) -> None:
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "f.bin"))
        except OSError as inner:
            raise RuntimeError("saving failed") from inner
    except RuntimeError as outer:
        note = disk_full_note(outer, writing_to="/elsewhere", needed_bytes=None)
    # The path the OSError names beats the hint; the free space is the disk's own figure.
    free = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize
    assert note.startswith(f"Disk full at {tmp_path / 'f.bin'}: ")
    shown = note.split(": ", 1)[1].split(" free")[0]
    value, unit = shown.split()
    scale = {"bytes": 1, "KB": 2**10, "MB": 2**20, "GB": 2**30}[unit]
    assert abs(float(value) * scale - free) <= max(0.06 * free, 2**20)
    assert "needed" not in note.split("\n")[0]  # no size known: none is made up


def test_save_checkpoint_says_where_and_how_much(tmp_path: Path, monkeypatch) -> None:
    lora = {"unet": {"a": torch.zeros(1000), "b": torch.zeros(10, 10)}}
    state = {"optimizer": {"state": {0: {"exp_avg": torch.zeros(1000)}}}, "run_id": "r"}
    cfg = tiny_config()
    real_save = torch.save

    def full(*_args, **_kwargs):
        raise RuntimeError(TORCH_FULL)

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(DiskFullError) as info:  # the first: its tensors are the estimate
        save_checkpoint(tmp_path / "checkpoints", 1, lora, state, cfg, keep=3)
    assert info.value.path == tmp_path / "checkpoints" / "step_00000001"
    assert info.value.needed_bytes == tensor_bytes(lora) + tensor_bytes(state) == 8400
    assert info.value.errno == errno.ENOSPC and TORCH_FULL in str(info.value)
    assert list((tmp_path / "checkpoints").iterdir()) == []

    monkeypatch.setattr(torch, "save", real_save)
    first = save_checkpoint(tmp_path / "checkpoints", 1, lora, state, cfg, keep=3)
    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(DiskFullError) as info:  # later ones: the previous checkpoint's size
        save_checkpoint(tmp_path / "checkpoints", 2, lora, state, cfg, keep=3)
    assert info.value.needed_bytes == folder_bytes(first) > 8400
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == [first.name]


# ----------------------------------------------------------------------------- whole runs
def test_a_file_size_limit_mid_run_ends_with_the_disk_full_note_and_keeps_the_checkpoint(
    tmp_path: Path, demo_home: Path
) -> None:
    home = make_home(tmp_path, demo_home)
    cfg = tiny_config(train={"steps": 4}, save={"save_every": 2})  # MLflow off: see the docstring
    config = save_config(cfg, tmp_path / "config.yaml")
    job = tmp_path / "job"
    env = {**os.environ, "STUDIO_HOME": str(home), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", LIMITED_TRAINER, "run", str(config), "--job-dir", str(job)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1, done.stderr[-3000:]
    failed_at = job / "checkpoints" / "step_00000004"
    progress = read_progress(job)
    assert progress["phase"] == "failed"
    note = progress["last_error"]
    assert note.startswith(f"Disk full at {failed_at}: ")
    assert " free, about " in note and "needed" in note and "unexpected pos" in note
    assert "a quota or a file-size limit" in note  # the disk itself has room: say so
    assert "move the studio home" in note and f"Run failed: {note}" in done.stderr
    [kept] = list_checkpoints(job / "checkpoints")
    assert kept.name == "step_00000002" and load_checkpoint(kept).step == 2
    assert not [p for p in job.rglob(".*")]  # no half-written temporaries


def test_a_torch_write_failure_in_a_tracked_run_is_noted_as_disk_full(
    tmp_path: Path, demo_home: Path, monkeypatch
) -> None:
    from mlflow import MlflowClient

    from trainer.engine.run import run_job

    home = make_home(tmp_path, demo_home)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("STUDIO_HOME", str(home))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    cfg = tiny_config(
        train={"steps": 4},
        save={"save_every": 2},
        logging={"use_mlflow": True, "log_system_metrics": False},
    )
    config = save_config(cfg, tmp_path / "config.yaml")
    job = tmp_path / "job"
    real_save, calls = torch.save, []

    def save_then_full(obj, f, *args, **kwargs):
        calls.append(f)
        if len(calls) == 2:  # the second checkpoint: torch's writer runs out of room
            Path(f).write_bytes(b"PK\x03\x04 part of a zip")
            raise RuntimeError(TORCH_FULL)
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_then_full)
    result = run_job(config, job_dir=job, tracking_uri=uri)
    monkeypatch.setattr(torch, "save", real_save)

    assert result.status == "FAILED"
    assert result.message.startswith(f"Disk full at {job / 'checkpoints' / 'step_00000004'}: ")
    run = MlflowClient(uri).get_run(result.run_id)
    assert run.info.status == "FAILED" and run.data.tags["mlflow.note.content"] == result.message
    assert read_progress(job)["last_error"] == result.message
    [kept] = list_checkpoints(job / "checkpoints")
    assert load_checkpoint(kept).step == 2


def test_a_safetensors_failure_on_the_final_lora_names_it_and_its_size(
    tmp_path: Path, demo_home: Path, monkeypatch
) -> None:
    import trainer.lora.io as lora_io
    from trainer.engine.run import run_job

    home = make_home(tmp_path, demo_home)
    monkeypatch.setenv("STUDIO_HOME", str(home))
    cfg = tiny_config(train={"steps": 2}, save={"save_every": 100})
    config = save_config(cfg, tmp_path / "config.yaml")
    job = tmp_path / "job"
    real_save_lora = lora_io.save_lora

    def final_lora_full(arch, out, *args, **kwargs):
        if Path(out) == job / "lora":  # the checkpoint's own copy is written, the final is not
            raise SafetensorError(
                "Error while serializing: I/O error: No space left on device (os error 28)"
            )
        return real_save_lora(arch, out, *args, **kwargs)

    monkeypatch.setattr("trainer.engine.loop.save_lora", final_lora_full)
    result = run_job(config, job_dir=job)
    assert result.status == "FAILED"
    head = result.message.split("\n")[0]
    assert head.startswith(f"Disk full at {job / 'lora' / 't'}: ")
    lora_bytes = (job / "checkpoints" / "step_00000002" / "lora" / "t.safetensors").stat().st_size
    assert f"about {lora_bytes / 1024:.1f} KB needed" in head
    assert "os error 28" in head
    assert load_checkpoint(list_checkpoints(job / "checkpoints")[0]).step == 2
