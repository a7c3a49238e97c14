"""The built-in presets: every file validates, round-trips and keeps the field's priors.

Real presets are ``presets/<intent>_<arch>.yaml``; demo presets are ``presets/demo_<arch>.yaml``
and must train the tiny models on a CPU. The value checks come from docs/sources.md.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from trainer.config.fields import ARCH_DEFAULTS
from trainer.config.introspection import resolved, unresolved_autos
from trainer.config.io import dump_yaml, load_config, loads_config
from trainer.config.schema import TrainingConfig

ROOT = Path(__file__).resolve().parent.parent
PRESET_DIR = ROOT / "presets"
PRESETS = sorted(PRESET_DIR.glob("*.yaml"))
INTENTS = ("person", "character", "style", "object", "concept")
ARCHS = ("sd15", "sdxl", "flux")
NATIVE = {"sd15": 512, "sdxl": 1024, "flux": 1024}
SOURCES = (
    "docs/sources.md",
    "kohya-ss",
    "sd-scripts",
    "OneTrainer",
    "ai-toolkit",
    "SimpleTuner",
    "hollowstrawberry",
    "diffusers",
)


def _split(path: Path) -> tuple[str, str]:
    intent, _, arch = path.stem.rpartition("_")
    return intent, arch


def _is_demo(path: Path) -> bool:
    return _split(path)[0] == "demo"


REAL = [p for p in PRESETS if not _is_demo(p)]
DEMO = [p for p in PRESETS if _is_demo(p)]


def _ids(paths: list[Path]) -> list[str]:
    return [p.stem for p in paths]


@pytest.fixture(scope="module")
def configs() -> dict[str, TrainingConfig]:
    return {p.stem: load_config(p) for p in PRESETS}


def test_every_intent_and_arch_has_a_preset() -> None:
    assert len(PRESETS) >= 18, [p.name for p in PRESETS]
    stems = {p.stem for p in PRESETS}
    expected = {f"{i}_{a}" for i in INTENTS for a in ARCHS} | {f"demo_{a}" for a in ARCHS}
    assert expected <= stems, sorted(expected - stems)
    for path in PRESETS:
        intent, arch = _split(path)
        assert intent in (*INTENTS, "demo") and arch in ARCHS, path.name


@pytest.mark.parametrize("path", PRESETS, ids=_ids(PRESETS))
def test_preset_validates_and_round_trips(path: Path) -> None:
    cfg = load_config(path)
    text = dump_yaml(cfg)
    again = loads_config(text)
    assert again == cfg
    assert dump_yaml(again) == text
    bare = dump_yaml(cfg, comments=False)
    assert loads_config(bare) == cfg


@pytest.mark.parametrize("path", PRESETS, ids=_ids(PRESETS))
def test_preset_starts_with_a_source_comment(path: Path) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    header: list[str] = []
    for line in lines:
        if not line.startswith("#"):
            break
        header.append(line)
    assert len(header) >= 3, f"{path.name} must open with a comment block explaining its numbers"
    text = "\n".join(header)
    assert any(source in text for source in SOURCES), f"{path.name}: no source named"


@pytest.mark.parametrize("path", PRESETS, ids=_ids(PRESETS))
def test_preset_names_itself(path: Path, configs: dict[str, TrainingConfig]) -> None:
    cfg = configs[path.stem]
    intent, arch = _split(path)
    assert cfg.preset == path.stem
    assert cfg.model.arch == arch
    if intent == "demo":
        assert cfg.intent in ("object", "other")
    else:
        assert cfg.intent == intent


@pytest.mark.parametrize("path", PRESETS, ids=_ids(PRESETS))
def test_resolution_and_samples_fit_the_arch(
    path: Path, configs: dict[str, TrainingConfig]
) -> None:
    cfg = configs[path.stem]
    arch = cfg.model.arch
    size = 64 if _is_demo(path) else NATIVE[arch]
    for ds in cfg.datasets:
        assert ds.resolution == [size], (path.name, ds.resolution)
    assert (cfg.sample.width, cfg.sample.height) == (size, size)
    assert cfg.sample.prompts, "presets show progress with sample prompts"
    assert all("[trigger]" in p.prompt for p in cfg.sample.prompts)
    assert cfg.datasets[0].trigger_word
    # Training noise and preview sampler belong to the model family.
    family = ARCH_DEFAULTS[arch]["noise_scheduler"]
    assert resolved(cfg, "noise_scheduler") == family
    assert (resolved(cfg, "sampler") == "flowmatch") == (arch == "flux")


@pytest.mark.parametrize("path", PRESETS, ids=_ids(PRESETS))
def test_caching_does_not_conflict(path: Path, configs: dict[str, TrainingConfig]) -> None:
    # docs/sources.md#caching-rules: latent caching cannot coexist with pixel augmentations.
    for ds in configs[path.stem].datasets:
        pixel_changes = ds.flip_x or ds.flip_y or ds.random_crop or ds.augmentations
        if pixel_changes:
            assert not ds.cache_latents and not ds.cache_latents_to_disk, path.name
        if ds.cache_latents_to_disk:
            assert ds.cache_latents, path.name


ASYMMETRIC = [p for p in PRESETS if _split(p)[0] in ("person", "character")]


@pytest.mark.parametrize("path", ASYMMETRIC, ids=_ids(ASYMMETRIC))
def test_asymmetric_subjects_are_not_flipped(
    path: Path, configs: dict[str, TrainingConfig]
) -> None:
    # docs/sources.md#flip-and-asymmetric-subjects: flip off for faces and text.
    assert all(not ds.flip_x for ds in configs[path.stem].datasets)


@pytest.mark.parametrize("path", PRESETS, ids=_ids(PRESETS))
def test_no_decision_left_to_auto(path: Path, configs: dict[str, TrainingConfig]) -> None:
    assert unresolved_autos(configs[path.stem]) == []


FLUX = [p for p in PRESETS if _split(p)[1] == "flux"]


@pytest.mark.parametrize("path", FLUX, ids=_ids(FLUX))
def test_flux_presets(path: Path, configs: dict[str, TrainingConfig]) -> None:
    cfg = configs[path.stem]
    assert cfg.train.noise_scheduler in ("flowmatch", "auto")
    assert not cfg.train.train_text_encoder
    assert cfg.train.dtype != "fp16", "fp16 Flux gives NaN/black images"
    if not _is_demo(path):
        assert cfg.model.quantize, "a 24 GB card needs the quantized Flux base"
        assert cfg.train.batch_size == 1
        assert cfg.train.lr == pytest.approx(1e-4)
        assert 16 <= cfg.network.linear <= 32


@pytest.mark.parametrize("path", REAL, ids=_ids(REAL))
def test_real_presets(path: Path, configs: dict[str, TrainingConfig]) -> None:
    cfg = configs[path.stem]
    intent, arch = _split(path)
    train = cfg.train
    assert isinstance(train.steps, int) and 500 <= train.steps <= 10_000
    assert not cfg.model.name_or_path.startswith("demo:")
    assert "/" in cfg.model.name_or_path, "a Hugging Face id such as owner/name"
    assert all(not ds.folder_path.startswith("demo:") for ds in cfg.datasets)
    assert train.gradient_checkpointing
    assert cfg.save.save_every == 250
    if arch == "sd15":
        assert train.min_snr_gamma == 5
    elif arch == "sdxl":
        assert train.min_snr_gamma == 8
        assert not train.train_text_encoder, "SDXL LoRA: U-Net only"
        assert cfg.model.vae_dtype != "fp16", "SDXL's VAE gives NaN/black images in fp16"
    if intent in ("style", "object", "concept"):
        assert not train.train_text_encoder
    if intent in ("person", "object"):
        assert train.diff_output_preservation
        assert train.diff_output_preservation_class.strip()
    if intent == "person":
        assert train.diff_output_preservation_class == "person"
    warmup = train.lr_scheduler_params.warmup_steps or round(
        train.lr_scheduler_params.warmup_ratio * train.steps
    )
    assert warmup < train.steps


@pytest.mark.parametrize("path", DEMO, ids=_ids(DEMO))
def test_demo_presets_are_tiny(path: Path, configs: dict[str, TrainingConfig]) -> None:
    cfg = configs[path.stem]
    _, arch = _split(path)
    assert cfg.model.name_or_path == f"demo:{arch}"
    assert [ds.folder_path for ds in cfg.datasets] == ["demo:dataset"]
    assert unresolved_autos(cfg) == []
    assert isinstance(cfg.train.steps, int) and cfg.train.steps <= 60
    assert cfg.train.batch_size * cfg.train.gradient_accumulation_steps <= 12  # demo set size
    assert cfg.network.linear <= 8
    assert 0 < cfg.sample.sample_every <= cfg.train.steps
    assert cfg.sample.sample_steps <= 4
    assert cfg.save.save_every <= cfg.train.steps
    assert cfg.train.optimizer == "adamw"
    assert not cfg.model.quantize
    assert cfg.runtime.device == "auto" and cfg.train.dtype == "auto"


def test_one_preset_validates_through_the_cli() -> None:
    path = PRESET_DIR / "demo_sd15.yaml"
    result = subprocess.run(
        [sys.executable, "-m", "trainer", "validate", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout
