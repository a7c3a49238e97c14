"""Security (issue 9, item 5): local binding, no code from configs, no leaked tokens, no path
escapes from names the UI passes in."""

from __future__ import annotations

import io
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from trainer.config.io import ConfigError, load_config, loads_config
from trainer.jobs.folder import LaunchRefused, job_folder, log_tail
from trainer.jobs.launch import trainer_env
from trainer.settings import StudioSettings, load_settings

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "presets" / "demo_sd15.yaml"
FOLDERS = ("trainer", "advisor", "ui", "pages", "benchmarks")
SOURCES = [*sorted(p for f in FOLDERS for p in (ROOT / f).rglob("*.py")), ROOT / "streamlit_app.py"]


# ---------------------------------------------------------------------------- local binding
def test_make_run_binds_the_studio_to_localhost_by_default() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("STUDIO_HOST", "HOST")}
    out = subprocess.run(
        ["make", "-n", "run"], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    ).stdout
    assert "--server.address 127.0.0.1" in out, out
    # Binding elsewhere is an explicit setting (the studio then shows a warning: test_app).
    env["STUDIO_HOST"] = "0.0.0.0"
    out = subprocess.run(
        ["make", "-n", "run"], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    ).stdout
    assert "--server.address 0.0.0.0" in out


def test_a_bare_streamlit_run_binds_to_localhost_too() -> None:
    import tomllib

    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text(encoding="utf-8"))
    assert config["server"]["address"] == "127.0.0.1"


def test_the_studio_starts_no_network_server_bound_elsewhere() -> None:
    # The studio starts no MLflow server itself; any command that would must bind 127.0.0.1.
    for path in SOURCES:
        text = path.read_text(encoding="utf-8")
        for match in re.finditer(r"[\"']mlflow[\"']\s*,\s*[\"'](server|ui)[\"']", text):
            window = text[match.start() : match.start() + 400]
            assert "127.0.0.1" in window, f"{path}: mlflow {match.group(1)} without --host"
        assert "0.0.0.0" not in text, path


# ------------------------------------------------------------------- no code from configs
DANGEROUS = re.compile(
    r"yaml\.load\(|yaml\.unsafe_load|yaml\.(Full|Unsafe)?Loader\b|(?<![\w.])eval\(|"
    r"(?<![\w.])exec\(|pickle\.loads?\(|marshal\.loads?\(|shell=True|os\.system\(|"
    r"weights_only\s*=\s*False|__import__\("
)
# (file, pattern) pairs that are allowed, each with the reason.
ALLOWED: dict[tuple[str, str], str] = {
    ("trainer/tracking/sidecar.py", "pickle.loads("): (
        "the trainer and its own MLflow child talk over a socketpair the child inherits by file "
        "descriptor: no other process can connect or write to it, and no file is read"
    ),
}


def test_no_code_runs_from_user_files() -> None:
    found = []
    for path in SOURCES:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.lstrip().startswith("#"):
                continue
            for match in DANGEROUS.finditer(line):
                key = (str(path.relative_to(ROOT)), match.group(0))
                if key not in ALLOWED:
                    found.append(f"{key[0]}:{number}: {line.strip()}")
    assert not found, "unsafe loading/execution:\n" + "\n".join(found)


def test_yaml_tags_that_would_run_code_are_config_errors(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    for text in (
        f"model: !!python/object/apply:os.system ['touch {marker}']\n",
        f"!!python/object/new:os.system ['touch {marker}']\n",
        "model: !!python/name:os.system\n",
    ):
        with pytest.raises(ConfigError):
            loads_config(text)
        preset = tmp_path / "evil.yaml"
        preset.write_text(text, encoding="utf-8")
        with pytest.raises(ConfigError):
            load_config(preset)
    assert not marker.exists()


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _checkpoint(tmp_path: Path, demo_home: Path) -> Path:
    sys.path.insert(0, str(ROOT / "tests"))
    from options_support import run, tiny_config

    cfg = tiny_config(train={"steps": 1}, save={"save_every": 1})
    run(cfg, demo_home, tmp_path / "job")
    from trainer.engine.checkpoint import latest_checkpoint

    found = latest_checkpoint(tmp_path / "job" / "checkpoints")
    assert found is not None
    return found


@pytest.mark.slow
def test_checkpoint_state_loads_weights_only_and_refuses_pickled_code(
    tmp_path: Path, demo_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trainer.engine.checkpoint import STATE_FILE, CheckpointError, load_checkpoint

    monkeypatch.setenv("STUDIO_HOME", str(demo_home))
    folder = _checkpoint(tmp_path, demo_home)
    # Our own state is plain data: the strict loader reads it.
    state = torch.load(folder / STATE_FILE, weights_only=True)
    assert state["step"] == 1 and isinstance(state["rng"]["numpy"][1], list)
    assert load_checkpoint(folder).step == 1

    # A state file from before the numpy RNG was stored as ints still resumes.
    import numpy as np

    old = {**state, "rng": {**state["rng"], "numpy": np.random.get_state()}}
    torch.save(old, folder / STATE_FILE)
    assert load_checkpoint(folder).step == 1

    # A checkpoint handed over by someone else cannot run code on load.
    marker = tmp_path / "pwned"
    torch.save({**state, "payload": _Evil(marker)}, folder / STATE_FILE)
    with pytest.raises(CheckpointError, match="damaged"):
        load_checkpoint(folder)
    assert not marker.exists()
    assert pickle.dumps(_Evil(marker))  # the payload really is a pickle that would run


# -------------------------------------------------------------------------------- path escapes
@pytest.fixture()
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> StudioSettings:
    monkeypatch.setenv("STUDIO_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return load_settings()


BAD_IDS = ["../x", "../../etc", "a/b", "/abs", "..", ".", "", "a\\..\\b", "x\x00y", "~root"]


@pytest.mark.parametrize("run_id", BAD_IDS)
def test_run_ids_cannot_leave_the_jobs_folder(settings: StudioSettings, run_id: str) -> None:
    from ui.jobs import resume_job, stop_job

    with pytest.raises(LaunchRefused, match="not a run id"):
        job_folder(settings, run_id)
    with pytest.raises(LaunchRefused):
        stop_job(run_id, settings=settings)
    with pytest.raises(LaunchRefused):
        resume_job(run_id, "KILLED", settings)
    # Real ids (MLflow hex ids, the trainer's own ids) are fine.
    for good in ("0f3a9c", "busy_run", "a" * 32):
        assert job_folder(settings, good).parent == settings.jobs_dir


@pytest.mark.parametrize("name", ["../../evil", "/etc/passwd", "a/../../b", "..", "x\x00"])
def test_exported_preset_names_stay_in_the_presets_folder(
    settings: StudioSettings, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import datetime

    from ui import compare

    monkeypatch.setattr("ui.compare_actions.load_run_config", lambda uri, run_id: "name: t\n")
    rec = type("Rec", (), {"start_time": datetime(2026, 1, 1), "name": "r", "run_id": "abc"})()
    written = compare.preset_from_run(settings, rec, name)
    assert written.parent == settings.presets_dir and written.exists()
    assert written.resolve().is_relative_to(settings.presets_dir.resolve())


def test_experiment_folders_stay_under_the_artifact_root(tmp_path: Path) -> None:
    from trainer.tracking.new_run import ensure_experiment

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ensure_experiment(uri, "../../escape", artifact_root=tmp_path / "art")
    assert [p.parent for p in (tmp_path / "art").iterdir()] == [tmp_path / "art"]
    assert not (tmp_path.parent / "escape").exists()


# ------------------------------------------------------------------------------ token leaks
SECRETS = {
    "HF_TOKEN": "hf_FakeTokenForLeakTestAbCdEfGhIjKlMnOp",
    "HUGGING_FACE_HUB_TOKEN": "hf_AnotherFakeLeakTokenQrStUvWxYz012345",
    "MY_SERVICE_API_KEY": "sk-fake-leak-test-0123456789abcdef",
}


def _scan(root: Path, needles: dict[str, str]) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            hits += [f"{path}: {name}" for name, value in needles.items() if value.encode() in data]
    return hits


@pytest.mark.slow
def test_tokens_never_reach_the_store_artifacts_logs_or_presets(
    tmp_path: Path, demo_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import datetime

    from trainer.tracking.records import get_run_record
    from ui import compare
    from ui.jobs import launch_draft

    home = tmp_path / "home"
    home.mkdir()
    for name in ("models", "datasets"):
        (home / name).symlink_to(demo_home / name, target_is_directory=True)
    monkeypatch.setenv("STUDIO_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    cfg = load_config(
        DEMO,
        ["train.steps=4", "save.save_every=2", "sample.sample_every=2", "logging.run_name=leak"],
    )
    job = launch_draft(cfg, settings)
    assert job.process.wait(timeout=300) == 0, log_tail(job.job_dir)
    record = get_run_record(settings.tracking_uri, job.run_id)
    assert record.status == "FINISHED"
    rec = type("Rec", (), {"start_time": datetime(2026, 1, 1), "name": "leak"})()
    rec.run_id = job.run_id
    compare.preset_from_run(settings, rec, "exported")

    # The whole home: mlflow.db (and its -wal), mlartifacts/, jobs/<run>/, presets/.
    assert (home / "mlflow.db").exists() and (home / "presets" / "exported.yaml").exists()
    assert list((home / "mlartifacts").rglob("*.safetensors"))
    hits = _scan(home, SECRETS)
    assert not hits, hits
    # The trainer did see the token (its environment is ours): the absence above is redaction
    # or never logging it, not a missing variable.
    assert "HF_TOKEN" in trainer_env(settings, job.run_id)
    # And the scan would see a leak (a positive control).
    (home / "jobs" / "control.txt").write_text(SECRETS["HF_TOKEN"], encoding="utf-8")
    assert _scan(home, SECRETS) == [f"{home / 'jobs' / 'control.txt'}: HF_TOKEN"]


def _png() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (10, 200, 10)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("bad", ["../evil.png", "../../evil.png", "/etc/evil.png", "a/../../e.png"])
def test_dataset_manager_names_cannot_escape_the_datasets_folder(tmp_path: Path, bad: str) -> None:
    import zipfile

    from trainer.data import library as dm

    root = tmp_path / "datasets"
    root.mkdir()
    for name in ("../x", "../../x", "a/b", "..", ".", "/abs"):
        with pytest.raises(dm.DatasetUploadError):
            dm.validate_name(name)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("ok.png", _png())
        handle.writestr(bad, _png())
    with pytest.raises(dm.DatasetUploadError, match="unsafe"):
        dm.import_zip(root, "zipped", archive.getvalue())
    assert not (root / "zipped").exists()  # refused before anything was written

    result = dm.import_files(root, "plain", [("ok.png", _png())])
    folder = result.folder
    assert folder.parent == root
    for call in (
        lambda: dm.set_caption(folder, bad, "pwned"),
        lambda: dm.remove_images(folder, [bad]),
    ):
        with pytest.raises(dm.DatasetUploadError):
            call()
    escaped = [p for p in tmp_path.rglob("*") if not p.resolve().is_relative_to(root.resolve())]
    assert escaped == [], escaped
