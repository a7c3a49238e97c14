"""Save-and-share options: each test trains the tiny SD1.5 model and fails if the option is
ignored — the files written, their tensor dtype, the checkpoints kept, and the Hub upload (a fake
``HfApi`` online; the real client offline), with a scan for the token everywhere a run writes.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from options_support import run, tiny_config

from trainer.config.io import save_config
from trainer.engine.checkpoint import list_checkpoints
from trainer.lora.hub import HubUploadError, push_lora_folder
from trainer.lora.io import WEIGHTS_NAME, read_lora_tensors
from trainer.lora.usage import USAGE_FILES

PROVES = {
    "save.dtype": "test_save_format_and_dtype_decide_the_files",
    "save.save_format": "test_save_format_and_dtype_decide_the_files",
    "save.save_every": "test_checkpoints_follow_save_every_and_max_step_saves_to_keep",
    "save.max_step_saves_to_keep": "test_checkpoints_follow_save_every_and_max_step_saves_to_keep",
    "save.push_to_hub": [
        "test_push_to_hub_uploads_the_saved_folder_to_the_repo",
        "test_push_to_hub_offline_saves_then_fails_clearly_and_never_leaks_the_token",
    ],
    "save.hf_repo_id": "test_push_to_hub_uploads_the_saved_folder_to_the_repo",
    "save.hf_private": "test_push_to_hub_uploads_the_saved_folder_to_the_repo",
}

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
TOKEN = "hf_FakeTokenForLoraStudioTests0123456789xyz"


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize(
    ("save_format", "dtype"), [("webui", "bf16"), ("diffusers", "fp32"), ("both", "fp16")]
)
def test_save_format_and_dtype_decide_the_files(
    save_format: str, dtype: str, demo_home: Path, tmp_path: Path
) -> None:
    cfg = tiny_config(save={"save_format": save_format, "dtype": dtype}, train={"steps": 1})
    outcome, _ = run(cfg, demo_home, tmp_path / "job")
    expected = {
        "webui": {"t.safetensors"},
        "diffusers": {f"t/{WEIGHTS_NAME}"},
        "both": {"t.safetensors", f"t/{WEIGHTS_NAME}"},
    }[save_format]
    # Beside the LoRA: its model card, diffusers script and ComfyUI workflow (trainer.lora.usage).
    assert files_under(tmp_path / "job" / "lora") == expected | set(USAGE_FILES)
    assert {str(p.relative_to(tmp_path / "job" / "lora")) for p in outcome.lora_files} == expected
    checkpoint_lora = next((tmp_path / "job" / "checkpoints").glob("step_*/lora/t.safetensors"))
    for path in [*outcome.lora_files, checkpoint_lora]:
        weights = {k: v for k, v in read_lora_tensors(path).items() if not k.endswith(".alpha")}
        assert weights and {v.dtype for v in weights.values()} == {DTYPES[dtype]}, path


def test_checkpoints_follow_save_every_and_max_step_saves_to_keep(
    demo_home: Path, tmp_path: Path
) -> None:
    cfg = tiny_config(train={"steps": 5}, save={"save_every": 2, "max_step_saves_to_keep": 2})
    _, rec = run(cfg, demo_home, tmp_path / "job")
    # Saved at 2 and 4 (save_every) and 5 (the end); only the newest 2 are kept.
    kept = [p.name for p in list_checkpoints(tmp_path / "job" / "checkpoints")]
    assert kept == ["step_00000004", "step_00000005"]
    logged = sorted({folder for _, folder in rec.artifacts if folder.startswith("checkpoints/")})
    assert logged == [
        "checkpoints/step_00000002",
        "checkpoints/step_00000004",
        "checkpoints/step_00000005",
    ]


class FakeHfApi:
    """Stands in for huggingface_hub.HfApi: records calls and what the folder held."""

    calls: ClassVar[list[tuple[str, dict[str, Any]]]] = []

    def __init__(self, token: str | None = None) -> None:
        FakeHfApi.calls.append(("init", {"token": token}))

    def create_repo(self, repo_id: str, **kwargs: Any) -> None:
        FakeHfApi.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))

    def upload_folder(self, *, folder_path: str, repo_id: str, **kwargs: Any) -> None:
        held = sorted(files_under(Path(folder_path)))
        FakeHfApi.calls.append(
            ("upload_folder", {"folder_path": folder_path, "repo_id": repo_id, "files": held})
        )


def test_push_to_hub_uploads_the_saved_folder_to_the_repo(
    demo_home: Path, tmp_path: Path, monkeypatch
) -> None:
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHfApi)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    FakeHfApi.calls = []
    cfg = tiny_config(train={"steps": 1})
    run(cfg, demo_home, tmp_path / "off")
    assert FakeHfApi.calls == []  # push_to_hub off: nothing is uploaded
    save = {"push_to_hub": True, "hf_repo_id": "me/my-lora", "hf_private": False}
    outcome, rec = run(tiny_config(train={"steps": 1}, save=save), demo_home, tmp_path / "on")
    assert [name for name, _ in FakeHfApi.calls] == ["init", "create_repo", "upload_folder"]
    init, create, upload = (args for _, args in FakeHfApi.calls)
    assert init == {"token": TOKEN}  # from HF_TOKEN, handed to the client only
    assert create["repo_id"] == "me/my-lora" and create["private"] is False
    assert upload["repo_id"] == "me/my-lora"
    assert Path(upload["folder_path"]) == tmp_path / "on" / "lora"
    # saved before the upload started, with its model card and usage files
    assert upload["files"] == sorted({"t.safetensors", *USAGE_FILES})
    assert rec.tags["hub.repo_id"] == "me/my-lora"
    assert TOKEN not in repr(rec.tags) + repr(rec.texts) + repr(rec.artifacts)
    # hf_private (default on) reaches create_repo.
    FakeHfApi.calls = []
    push_lora_folder(outcome.lora_files[0].parent, tiny_config(save={**save, "hf_private": True}))
    assert FakeHfApi.calls[1][1]["private"] is True


def test_push_to_hub_network_error_is_clear_and_redacted(tmp_path: Path, monkeypatch) -> None:
    import huggingface_hub

    class Unreachable(FakeHfApi):
        def create_repo(self, repo_id: str, **kwargs: Any) -> None:
            raise ConnectionError(f"Name or service not known (token={TOKEN})")

    monkeypatch.setattr(huggingface_hub, "HfApi", Unreachable)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    cfg = tiny_config(save={"push_to_hub": True, "hf_repo_id": "me/my-lora"})
    with pytest.raises(HubUploadError) as info:
        push_lora_folder(tmp_path, cfg)
    message = str(info.value)
    assert "network" in message and str(tmp_path) in message and "hf upload" in message
    assert TOKEN not in message


def test_push_to_hub_offline_saves_then_fails_clearly_and_never_leaks_the_token(
    studio_env: Path, tmp_path: Path, monkeypatch, capfd
) -> None:
    from mlflow.tracking import MlflowClient

    from trainer.engine.run import EXIT_OK, run_job
    from trainer.tracking.artifacts import lora_artifacts

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = tiny_config(
        train={"steps": 2},
        save={"push_to_hub": True, "hf_repo_id": "me/my-lora", "hf_private": True},
        logging={"use_mlflow": True, "log_system_metrics": False, "log_every": 1},
        sample={
            "sample_every": 2,
            "prompts": ["[trigger]"],
            "width": 64,
            "height": 64,
            "sample_steps": 1,
        },
    )
    save_config(cfg, tmp_path / "config.yaml")
    job = tmp_path / "job"
    result = run_job(tmp_path / "config.yaml", job_dir=job)
    # Saved locally first ...
    assert (job / "lora" / "t.safetensors").is_file()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert "lora/t.safetensors" in lora_artifacts(uri, result.run_id)
    # ... then the run still FINISHED (the training is done), with a clear warning: what failed,
    # why (offline), where the files are — in the run's note, a warning tag and the log.
    assert result.exit_code == EXIT_OK and result.status == "FINISHED"
    run_info = MlflowClient(uri).get_run(result.run_id)
    assert run_info.info.status == "FINISHED"
    note = run_info.data.tags.get("mlflow.note.content", "")
    warning = run_info.data.tags.get("studio.warning.hub_upload", "")
    for needle in ("not uploaded", "me/my-lora", "HF_HUB_OFFLINE", str(job / "lora")):
        assert needle in note and needle in warning
    assert note.startswith("Training finished, but") and "saved locally" in note
    assert "name_or_path" not in note
    # The token is nowhere: MLflow params/tags/notes (the whole store), artifacts, job folder,
    # config, console output.
    out, err = capfd.readouterr()
    assert "Warning: Training finished, but push_to_hub" in err and "Finished 2 steps" in out
    assert TOKEN not in out + err
    assert all(TOKEN not in value for value in run_info.data.params.values())
    assert all(TOKEN not in value for value in run_info.data.tags.values())
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'"):
            assert TOKEN not in repr(db.execute(f"SELECT * FROM {table}").fetchall()), table
    scanned = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any("mlartifacts" in p.parts for p in scanned) and any(p.parent == job for p in scanned)
    for path in scanned:
        assert TOKEN.encode() not in path.read_bytes(), path
