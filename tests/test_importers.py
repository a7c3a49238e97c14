"""Importing ai-toolkit and kohya configs: every source setting is mapped or reported with a reason."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from trainer.config.importers import import_file, import_text
from trainer.config.io import load_config

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = Path(__file__).resolve().parent / "import_samples"


def leaves(data, prefix: str = "") -> set[str]:
    """Dotted paths of every leaf setting (lists of scalars are one leaf)."""
    if isinstance(data, dict) and data:
        return {p for k, v in data.items() for p in leaves(v, f"{prefix}.{k}" if prefix else k)}
    if isinstance(data, list) and data and all(isinstance(i, dict) for i in data):
        return {p for i, v in enumerate(data) for p in leaves(v, f"{prefix}.{i}")}
    return {prefix}


def accounted(imported, source_leaves: set[str]) -> set[str]:
    """Source leaves that are neither mapped nor reported (nor inside a reported/mapped key)."""
    seen = set(imported.mapped) | {u.key for u in imported.unmapped}
    return {
        leaf
        for leaf in source_leaves
        if not any(leaf == key or leaf.startswith(key + ".") for key in seen)
    }


def test_ai_toolkit_job_maps_onto_the_config_and_reports_the_rest() -> None:
    path = SAMPLES / "ai_toolkit_flux.yaml"
    imported = import_file(path)
    cfg = imported.config
    assert imported.kind == "ai-toolkit"
    assert cfg.name == "my_first_flux_lora_v1" and cfg.model.arch == "flux"
    assert cfg.model.name_or_path == "black-forest-labs/FLUX.1-dev" and cfg.model.quantize
    assert (cfg.network.linear, cfg.network.linear_alpha) == (16, 16)
    assert cfg.train.lr == pytest.approx(1e-4) and cfg.train.optimizer == "adamw8bit"
    assert cfg.train.steps == 2000 and cfg.train.use_ema and cfg.train.ema_decay == 0.99
    assert cfg.save.dtype == "fp16" and cfg.save.save_every == 250  # float16 translated
    data = cfg.datasets[0]
    assert data.folder_path == "/data/person" and data.trigger_word == "p3r5on"
    assert data.resolution == [512, 768, 1024]
    assert len(cfg.sample.prompts) == 2 and cfg.sample.sample_steps == 20
    reasons = {u.key: u.reason for u in imported.unmapped}
    assert set(reasons) == {
        "meta",
        "config.process.0.type",
        "config.process.0.training_folder",
        "config.process.0.performance_log_every",
        "config.process.0.network.network_kwargs",
        "config.process.0.datasets.0.num_workers",
        "config.process.0.train.linear_timesteps",
    }
    assert all(reasons.values())
    assert not accounted(imported, leaves(yaml.safe_load(path.read_text())) - {"job"})


def test_kohya_toml_maps_grouped_sd_scripts_arguments() -> None:
    path = SAMPLES / "kohya_sdxl.toml"
    imported = import_file(path)
    cfg = imported.config
    assert imported.kind == "kohya-toml" and cfg.model.arch == "sdxl"
    assert (cfg.network.linear, cfg.network.linear_alpha) == (32, 16)
    assert not cfg.train.train_text_encoder and cfg.train.optimizer == "adamw8bit"
    assert cfg.train.lr_scheduler == "cosine" and cfg.train.steps == 1600
    assert cfg.datasets[0].resolution == [1024] and cfg.datasets[0].caption_ext == "txt"
    assert cfg.sample.sampler == "euler_a" and cfg.save.save_every == 400
    reasons = {u.key: u.reason for u in imported.unmapped}
    assert cfg.train.epochs == 10 and imported.mapped["max_train_epochs"] == "train.epochs"
    assert "MLflow" in reasons["logging_dir"]
    assert set(reasons) >= {"color_aug", "xformers", "sample_prompts", "lr_warmup_steps"}
    flat = {k for table in tomllib.loads(path.read_text()).values() for k in table}
    assert not accounted(imported, flat)


def test_kohya_gui_json_reports_empty_and_unknown_values() -> None:
    path = SAMPLES / "kohya_gui_sd15.json"
    imported = import_file(path)
    cfg = imported.config
    assert imported.kind == "kohya-json" and cfg.model.arch == "sd15"
    assert cfg.train.optimizer == "prodigy" and cfg.sample.sampler == "dpmpp_2m"
    assert cfg.train.loss_type == "mse" and cfg.train.huber_delta == 0.1
    assert cfg.datasets[0].flip_x and cfg.train.text_encoder_lr == pytest.approx(5e-5)
    reasons = {u.key: u.reason for u in imported.unmapped}
    assert reasons["seed"].startswith("empty") and "clip_skip" in reasons
    assert not accounted(imported, set(json.loads(path.read_text())))


def test_refused_values_are_dropped_and_reported_not_fatal() -> None:
    text = "[training_arguments]\nlearning_rate = -3\noptimizer_type = 'DAdaptation'\n"
    imported = import_text(text, "x.toml")
    reasons = {u.key: u.reason for u in imported.unmapped}
    assert "not accepted" in reasons["learning_rate"] and "DAdaptation" not in str(imported.mapped)
    assert "optimizer_type" in reasons
    assert imported.config.train.lr > 0


def test_secrets_are_not_echoed() -> None:
    imported = import_text('{"wandb_api_key": "abc123", "network_dim": 4}', "c.json")
    assert "abc123" not in imported.report()


def test_cli_writes_a_valid_config_and_lists_unmapped(tmp_path: Path) -> None:
    out = tmp_path / "imported.yaml"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "trainer",
            "import",
            str(SAMPLES / "kohya_sdxl.toml"),
            "-o",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "7 setting(s) not mapped" in done.stderr and "xformers" in done.stderr
    assert load_config(out).network.linear == 32
    bad = tmp_path / "bad.txt"
    bad.write_text("just: text\n")
    done = subprocess.run(
        [sys.executable, "-m", "trainer", "import", str(bad)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "Cannot import" in done.stderr
