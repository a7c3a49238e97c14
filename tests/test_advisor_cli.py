"""``python -m advisor report``: text and JSON reports, profiles from JSON, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from test_advisor_cases import PROFILES, make

from advisor.__main__ import main
from advisor.dataset import DatasetInfo
from advisor.report import build_report
from trainer.config.io import save_config

ROOT = Path(__file__).resolve().parent.parent
RTX3060 = {
    "gpu": {"name": "NVIDIA GeForce RTX 3060", "vram_total_gb": 12},
    "ram_total_gb": 64,
    "disk_type": "ssd",
    "disk_free_gb": 200,
    "cpu_cores": 8,
}


@pytest.fixture()
def profile_file(tmp_path: Path) -> Path:
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(RTX3060))
    return path


def test_report_has_findings_predictions_fixes_and_comparison() -> None:
    cfg = make("train.dtype=fp16", "train.steps=auto", arch="flux")
    report = build_report(cfg, PROFILES["rtx3060"], DatasetInfo.counts(30))
    rules = {f.rule for f in report.findings}
    assert {"fp16_flux", "auto_unresolved", "vram_over"} <= rules
    assert report.fixes["train.dtype"] == "bf16" and isinstance(report.fixes["train.steps"], int)
    assert report.comparison and report.steps_per_epoch == 30
    text = report.text()
    for section in ("Predictions:", "peak VRAM", "Assumptions:", "Automatic fixes", "ERROR"):
        assert section in text
    data = json.loads(json.dumps(report.to_dict(), default=str))
    assert data["prediction"]["vram_fit"] in ("no", "tight") and data["fixes"]


def test_cli_text_report_and_error_exit(tmp_path: Path, profile_file: Path, capsys) -> None:
    config = save_config(make("train.dtype=fp16", arch="flux"), tmp_path / "flux.yaml")
    code = main(["report", str(config), "--profile", str(profile_file)])
    out = capsys.readouterr().out
    assert code == 1  # the report has errors
    assert "Advisor report" in out and "NVIDIA GeForce RTX 3060" in out and "fp16" in out


def test_cli_json_report_scans_the_dataset(tmp_path: Path, profile_file: Path, capsys) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for i in range(6):
        Image.new("RGB", (512, 512 if i < 4 else 768)).save(images / f"{i}.png")
        (images / f"{i}.txt").write_text("a photo of ohwx")
    cfg = make(f"datasets.0.folder_path={images}", "train.batch_size=2", arch="sd15")
    config = save_config(cfg, tmp_path / "sd15.yaml")
    code = main(["report", str(config), "--profile", str(profile_file), "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["arch"] == "sd15"
    assert data["steps_per_epoch"] == 3  # 4 square (2 batches) + 2 portrait (1 batch)
    assert not any("images assumed" in a for a in data["prediction"]["assumptions"])


def test_cli_refuses_bad_config_and_bad_profile(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {steps: -3}\n")
    assert main(["report", str(bad)]) == 2
    good = save_config(make(arch="sd15"), tmp_path / "good.yaml")
    broken = tmp_path / "profile.json"
    broken.write_text(json.dumps({"gpu": {"name": "x", "vram": 3}}))
    assert main(["report", str(good), "--profile", str(broken)]) == 2
    assert "not a usable profile" in capsys.readouterr().err


def test_python_dash_m_advisor_runs(tmp_path: Path, profile_file: Path) -> None:
    config = save_config(make(arch="sdxl"), tmp_path / "sdxl.yaml")
    done = subprocess.run(
        [sys.executable, "-m", "advisor", "report", str(config), "--profile", str(profile_file)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "Predictions:" in done.stdout and "step time" in done.stdout
