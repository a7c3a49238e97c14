"""The config contract: metadata on every field, YAML round trips, overrides, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from trainer.config.fields import WIZARD_STEPS
from trainer.config.introspection import field_meta, iter_fields, resolved, unresolved_autos
from trainer.config.io import (
    ConfigError,
    apply_overrides,
    dump_yaml,
    load_config,
    loads_config,
    save_config,
)
from trainer.config.paths import flatten
from trainer.config.schema import TrainingConfig

ROOT = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------------- metadata
@pytest.mark.parametrize(("path", "info"), list(iter_fields()), ids=lambda v: str(v)[:60])
def test_every_field_carries_wizard_metadata(path, info) -> None:
    meta = field_meta(info)
    assert info.description and len(info.description) >= 20, path
    assert meta["step"] in WIZARD_STEPS, path
    assert meta["level"] in ("basic", "advanced", "expert"), path
    assert set(meta["affects"]) <= {"quality", "speed", "memory", "disk"}, path


def test_every_wizard_step_has_fields_and_basic_ones() -> None:
    steps = {field_meta(info)["step"] for _, info in iter_fields()}
    assert steps == set(WIZARD_STEPS)
    basic = [p for p, info in iter_fields() if field_meta(info)["level"] == "basic"]
    assert 20 <= len(basic) <= 60


def test_defaults_validate_and_hold_no_decision_autos() -> None:
    cfg = TrainingConfig()
    assert unresolved_autos(cfg) == []
    assert resolved(cfg, "noise_scheduler") == "ddpm"
    flux = TrainingConfig.model_validate({"model": {"arch": "flux"}, "sample": {"width": 512}})
    assert resolved(flux, "noise_scheduler") == "flowmatch"
    assert resolved(flux, "guidance_scale") == 3.5


def test_validate_assignment_rejects_bad_values() -> None:
    cfg = TrainingConfig()
    with pytest.raises(ValueError):
        cfg.train.lr = -1
    cfg.train.lr = 2e-4
    assert cfg.train.lr == 2e-4


# ---------------------------------------------------------------------------------- YAML I/O
def test_yaml_round_trip_is_exact(tmp_path: Path) -> None:
    cfg = loads_config(
        """
name: round_trip
model: {arch: sdxl, name_or_path: "demo:sdxl"}
network: {type: lokr, linear: 8, linear_alpha: 4, lokr_factor: 4}
datasets:
  - {folder_path: a, trigger_word: sks, resolution: [512, 768], num_repeats: 5}
  - folder_path: reg
    is_reg: true
    loss_multiplier: 0.5
    augmentations: [{type: color_jitter, probability: 0.3, strength: 0.2}]
train:
  lr: 1e-4
  steps: auto
  optimizer_params: {betas: [0.9, 0.99], eps: 1e-8}
  lr_scheduler: cosine_with_restarts
  lr_scheduler_params: {warmup_steps: 50, num_cycles: 3}
sample:
  prompts: ["a photo of [trigger]", {prompt: "[trigger] at night", seed: 7, width: 768}]
"""
    )
    text = dump_yaml(cfg)
    again = loads_config(text)
    assert again == cfg
    assert dump_yaml(again) == text
    path = save_config(cfg, tmp_path / "c.yaml")
    assert load_config(path) == cfg
    assert again.train.optimizer_params["eps"] == pytest.approx(1e-8)
    assert again.sample.prompts[1].seed == 7
    assert again.train.steps == "auto"


def test_yaml_has_a_comment_per_field() -> None:
    text = dump_yaml(TrainingConfig())
    lines = text.splitlines()
    keyed = [i for i, line in enumerate(lines) if line.strip().startswith("lr_scheduler:")]
    assert keyed and lines[keyed[0] - 1].strip().startswith("#")
    comment_lines = sum(1 for line in lines if line.strip().startswith("#"))
    assert comment_lines >= len(list(iter_fields()))


def test_numbers_are_lax() -> None:
    cfg = loads_config("train: {lr: 1e-4, steps: '300', weight_decay: '1e-2'}")
    assert cfg.train.lr == pytest.approx(1e-4)
    assert cfg.train.steps == 300
    assert yaml.safe_load("lr: 1e-4")["lr"] == "1e-4"  # the PyYAML quirk this guards against


# --------------------------------------------------------------------------------- overrides
def test_overrides_reach_any_field_and_list_items() -> None:
    cfg = loads_config(
        "datasets: [{folder_path: a}]",
        [
            "datasets.0.num_repeats=5",
            "train.lr=3e-4",
            "datasets.1.folder_path=b",
            "train.steps=auto",
        ],
    )
    assert cfg.datasets[0].num_repeats == 5
    assert cfg.datasets[1].folder_path == "b"
    assert cfg.train.lr == pytest.approx(3e-4)
    assert cfg.train.steps == "auto"


def test_override_does_not_mutate_input() -> None:
    data = {"train": {"lr": 0.1}}
    apply_overrides(data, ["train.lr=0.2"])
    assert data == {"train": {"lr": 0.1}}


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (
            "datasets.5.num_repeats=2",
            "datasets.5.num_repeats: has 1 item(s); index 5 is out of range",
        ),
        ("nonsense", "nonsense: is not KEY=VALUE"),
        ("train.lr.x=1", "train.lr.x: cannot go into train.lr"),
        ("train.lrr=1", "train.lrr: unknown option 'lrr' — did you mean 'lr'?"),
    ],
)
def test_bad_overrides_are_explained(override: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        loads_config("train: {lr: 0.1}", [override])
    assert expected in str(err.value)


# -------------------------------------------------------------------------------- bad input
BAD_CONFIGS = {
    "unknown key": ("train: {colour: red}", "train.colour: unknown option 'colour'"),
    "typo": ("train: {lr_schedular: cosine}", "did you mean 'lr_scheduler'?"),
    "wrong section": ("noise_offset: 0.1", "move it under 'train:'"),
    "wrong type": ("train: {steps: lots}", "train.steps: expects a whole number, got 'lots'"),
    "bool type": ("train: {gradient_checkpointing: maybe}", "expects true or false"),
    "out of range": ("network: {linear: 5000}", "network.linear: must be ≤ 1024"),
    "negative": ("train: {noise_offset: -0.5}", "train.noise_offset: must be ≥ 0.0"),
    "bad choice": ("train: {optimizer: adamw9bit}", "did you mean 'adamw8bit'?"),
    "bad list item": (
        "datasets: [{resolution: [512, 10]}]",
        "datasets.0.resolution.1: must be ≥ 64",
    ),
    "section not mapping": ("train: 5", "train: should be a section"),
    "bad name": ("name: 'my lora!'", "name: 'my lora!' has characters that are not allowed"),
    "yaml syntax": ("train: {lr: 1e-4\nsteps: [", "is not valid YAML"),
    "tabs": ("train:\n\tlr: 1", "is not valid YAML"),
    "empty": ("", "config: is empty"),
    "comment only": ("# nothing\n", "config: is empty"),
    "top-level list": ("- a\n- b\n", "holds a list, not settings"),
    "top-level scalar": ("42", "holds a int, not settings"),
    "flux + ddpm": (
        "model: {arch: flux}\ntrain: {noise_scheduler: ddpm}",
        "train.noise_scheduler: ddpm does not fit Flux",
    ),
    "flux + te": (
        "model: {arch: flux}\ntrain: {train_text_encoder: true}",
        "train.train_text_encoder",
    ),
    "flux + locon": (
        "model: {arch: flux}\nnetwork: {type: locon}",
        "network.conv: Flux's transformer",
    ),
    "sd + flowmatch": ("train: {noise_scheduler: flowmatch}", "flow matching is for Flux"),
    "unload without cache": (
        "train: {unload_text_encoder: true}",
        "train.unload_text_encoder: needs cache_text_embeddings",
    ),
    "cache + te training": (
        "train: {cache_text_embeddings: true, train_text_encoder: true}",
        "train.cache_text_embeddings: cannot be on",
    ),
    "cache + shuffle": (
        "train: {cache_text_embeddings: true}\ndatasets: [{shuffle_tokens: true}]",
        "datasets.0.shuffle_tokens",
    ),
    "warmup >= steps": (
        "train: {steps: 100, lr_scheduler_params: {warmup_steps: 100}}",
        "train.lr_scheduler_params.warmup_steps",
    ),
    "denoise range": (
        "train: {min_denoising_steps: 800, max_denoising_steps: 200}",
        "train.min_denoising_steps: must be below",
    ),
    "batch range": ("train: {min_batch_size: 8, max_batch_size: 2}", "train.min_batch_size"),
    "hub without repo": ("save: {push_to_hub: true}", "save.hf_repo_id: is needed"),
    "dop without class": (
        "train: {diff_output_preservation: true}",
        "train.diff_output_preservation_class",
    ),
    "dop without trigger": (
        "train: {diff_output_preservation: true, diff_output_preservation_class: dog}",
        "datasets.0.trigger_word",
    ),
    "fp16 on cpu": ("train: {dtype: fp16}\nruntime: {device: cpu}", "train.dtype: fp16 on the CPU"),
    "resolution multiple": (
        "model: {arch: flux}\ndatasets: [{resolution: [520]}]\nsample: {width: 512, height: 512}",
        "datasets.0.resolution: 520 is not a multiple of 16",
    ),
    "only reg data": (
        "datasets: [{is_reg: true}]",
        "datasets: every dataset is a regularisation set",
    ),
    "no datasets": ("datasets: []", "datasets: needs at least 1 item"),
    "skip and force": (
        "sample: {skip_first_sample: true, force_first_sample: true}",
        "sample.force_first_sample",
    ),
    "mask prior without masks": (
        "train: {inverted_mask_prior: true}",
        "train.inverted_mask_prior: needs masks",
    ),
    "persistent without workers": (
        "runtime: {persistent_workers: true}",
        "runtime.persistent_workers",
    ),
    "refiner on sd15": ("model: {refiner_name_or_path: x}", "model.refiner_name_or_path"),
}


@pytest.mark.parametrize(("text", "expected"), BAD_CONFIGS.values(), ids=BAD_CONFIGS.keys())
def test_bad_config_gets_its_specific_message(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        loads_config(text)
    message = str(err.value)
    assert expected in message
    assert "Traceback" not in message
    for line in message.splitlines():
        assert ": " in line  # every line is "path: what — fix"


def test_several_problems_are_all_reported() -> None:
    with pytest.raises(ConfigError) as err:
        loads_config("train: {lr: -1, steps: 0, optimizer: sgd}\nnetwork: {linear: 0}")
    assert {p.path for p in err.value.problems} == {
        "train.lr",
        "train.steps",
        "train.optimizer",
        "network.linear",
    }


def test_binary_and_non_utf8_files(tmp_path: Path) -> None:
    binary = tmp_path / "model.yaml"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00")
    with pytest.raises(ConfigError, match="binary data"):
        load_config(binary)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(latin)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="is a folder"):
        load_config(tmp_path)


def test_flatten_gives_dotted_string_params() -> None:
    cfg = loads_config("datasets: [{folder_path: a, resolution: [512, 768]}]")
    flat = flatten(cfg)
    assert flat["train.lr"] == "0.0001"
    assert flat["datasets.0.resolution"] == "[512, 768]"
    assert flat["model.arch"] == "sd15"
    assert all(isinstance(v, str) for v in flat.values())
    assert len(flat) >= len(list(iter_fields())) - 5


# ---------------------------------------------------------------------------------------- CLI
def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trainer", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )


def test_cli_validate_exit_codes_and_lines(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("train: {lr: 1e-4}\n")
    result = _cli("validate", str(good), "--set", "datasets.0.num_repeats=3")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout

    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {lr: fast, lr_schedular: cosine}\n")
    result = _cli("validate", str(bad), "--set", "network.linear=0")
    assert result.returncode == 2
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 3
    assert any(line.startswith("train.lr: expects a number") for line in lines)
    assert any("did you mean 'lr_scheduler'" in line for line in lines)
    assert any(line.startswith("network.linear: must be ≥ 1") for line in lines)
    assert "Traceback" not in result.stderr


def test_cli_schema_carries_metadata() -> None:
    result = _cli("schema")
    assert result.returncode == 0
    schema = json.loads(result.stdout)
    train = schema["$defs"]["TrainConfig"]["properties"]
    assert train["lr_scheduler"]["step"] == "optimizer"
    assert train["lr_scheduler"]["level"] == "basic"
    assert "quality" in train["lr_scheduler"]["affects"]
    assert schema["additionalProperties"] is False
