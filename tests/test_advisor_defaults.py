"""Smart defaults: the seed's formulas, intent priors, complete configs with reasons."""

from __future__ import annotations

import itertools

import pytest
from test_advisor_cases import PROFILES, make, sized

from advisor import seed_formulas
from advisor.dataset import DatasetInfo, repeats_per_image, steps_per_epoch
from advisor.defaults import UserIntent, recommend, resolve_autos
from advisor.fit import budget_gb, predicted_gb
from advisor.patch import config_diff
from advisor.profile import synthetic_profile
from advisor.rules import errors, validate
from trainer.config.introspection import unresolved_autos
from trainer.config.paths import get_path
from trainer.config.schema import TrainingConfig

TECHNICAL_AUTOS = (
    "train.dtype",
    "train.noise_scheduler",
    "train.timestep_type",
    "sample.sampler",
    "sample.guidance_scale",
    "model.attention_backend",
    "model.vae_dtype",
    "model.te_dtype",
    "model.vae_device",
    "model.te_device",
    "runtime.device",
    "network.target_modules",
)


# ------------------------------------------------------------------------------ seed formulas
@pytest.mark.parametrize(
    ("vram", "size", "batch", "most"),
    [
        (24, 512, 8, 16),
        (6, 512, 4, 8),  # at least 4 at 512 px
        (80, 512, 16, 32),  # at most 16
        (24, 768, 6, 12),
        (12, 1024, 2, 4),
        (4, 1024, 1, 2),
        (48, 1024, 4, 8),
        (24, 1536, 2, 4),
    ],
)
def test_seed_batch_formula(vram: float, size: int, batch: int, most: int) -> None:
    found = seed_formulas.batch_defaults(vram, size, "speed")
    assert (found.batch_size, found.max_batch_size) == (batch, most)
    assert found.auto_scale and not seed_formulas.batch_defaults(vram, size, "quality").auto_scale


def test_seed_caching_formula() -> None:
    machine = synthetic_profile("NVIDIA GeForce RTX 4090", 24, ram_gb=40)  # 32 GB available
    assert seed_formulas.caching_defaults(machine, 10).to_disk is False  # 10 < (32-8)*0.7
    assert seed_formulas.caching_defaults(machine, 17).to_disk is True
    mac = PROFILES["m2max"]
    assert seed_formulas.caching_defaults(mac, 500).to_disk is False  # unified: always memory


@pytest.mark.parametrize(
    ("name", "priority", "expected"),
    [
        ("rtx2080", "quality", 3),
        ("rtx3060", "quality", 2),
        ("rtx4090", "quality", 1),
        ("rtx4090", "speed", 2),
        ("rtx2080", "memory", 2),
        ("rtx4090", "memory", 0),
        ("m2max", "speed", 1),
        ("cpu", "speed", 0),
    ],
)
def test_seed_prefetch_formula(name: str, priority: str, expected: int) -> None:
    assert seed_formulas.prefetch_defaults(PROFILES[name], priority) == expected


def test_seed_worker_formula() -> None:
    assert seed_formulas.worker_defaults(PROFILES["rtx4090"]) == (8, True)  # 64 GB, 16 cores
    assert seed_formulas.worker_defaults(PROFILES["cpu"]) == (2, True)  # 16 GB, 2 cores
    small = synthetic_profile("GPU", 8, ram_gb=6)
    assert seed_formulas.worker_defaults(small) == (0, False)


def test_unified_memory_notes_only_for_unified_machines() -> None:
    assert len(seed_formulas.unified_memory_notes(PROFILES["m2max"])) == 2
    assert seed_formulas.unified_memory_notes(PROFILES["rtx4090"]) == []


# -------------------------------------------------------------------------- recommendations
CASES = list(
    itertools.product(
        ("sd15", "sdxl", "flux"), ("person", "character", "style", "object", "concept", "other")
    )
)


@pytest.mark.parametrize(("arch", "kind"), CASES)
def test_recommendation_is_complete_reasoned_and_error_free(arch: str, kind: str) -> None:
    profile = PROFILES["rtx4090"]
    info = DatasetInfo.counts(30)
    result = recommend(UserIntent(kind, "quality", class_word="dog"), arch, profile, info)
    cfg = result.config
    assert unresolved_autos(cfg) == []
    assert all(get_path(cfg, p) != "auto" for p in TECHNICAL_AUTOS)
    recommended = {r.path for r in result.recommendations}
    changed = set(config_diff(TrainingConfig(), cfg)) - {"model.name_or_path", "model.arch"}
    assert changed <= recommended | {p.rsplit(".", 1)[0] for p in recommended}
    assert all(r.reason and r.source for r in result.recommendations)
    found = validate(cfg, profile, info)
    assert errors(found) == [], [f.message for f in errors(found)]
    assert predicted_gb(cfg, profile, info) <= budget_gb(profile)


def test_flux_on_a_12_gb_card_gets_quantized_and_cached() -> None:
    machine = synthetic_profile("NVIDIA GeForce RTX 3060", 12.0, ram_gb=64.0)
    result = recommend(UserIntent("person", "quality"), "flux", machine)
    cfg = result.config
    assert cfg.model.quantize and cfg.train.cache_text_embeddings and cfg.train.unload_text_encoder
    assert cfg.train.batch_size == 1 and cfg.train.gradient_checkpointing
    assert result.get("model.quantize").source.startswith("advisor VRAM model")
    assert predicted_gb(cfg, machine, None) <= budget_gb(machine)


def test_too_little_ram_to_quantize_flux_offloads_instead() -> None:
    machine = PROFILES["rtx3060"]  # 32 GB of RAM: quantizing Flux on load needs ~50 GB
    cfg = recommend(UserIntent("person", "quality"), "flux", machine).config
    assert not cfg.model.quantize and cfg.model.layer_offloading
    assert predicted_gb(cfg, machine, None) <= budget_gb(machine)


def test_person_on_sd15_trains_the_text_encoder_at_half_rate() -> None:
    cfg = recommend(UserIntent("person"), "sd15", PROFILES["rtx4090"]).config
    assert cfg.train.train_text_encoder and not cfg.train.cache_text_embeddings
    assert cfg.train.text_encoder_lr == pytest.approx(cfg.train.lr / 2)
    assert cfg.network.linear == 16 and cfg.network.linear_alpha == 8
    assert not cfg.datasets[0].flip_x and cfg.train.min_snr_gamma == 5
    assert (
        cfg.train.diff_output_preservation and cfg.train.diff_output_preservation_class == "person"
    )


def test_style_flips_and_uses_locon_on_sd() -> None:
    cfg = recommend(UserIntent("style"), "sdxl", PROFILES["rtx4090"]).config
    assert cfg.datasets[0].flip_x and cfg.network.type == "locon"
    assert cfg.train.content_or_style == "style" and not cfg.train.train_text_encoder


def test_steps_come_from_target_repeats_bucket_aware() -> None:
    profile = PROFILES["rtx4090"]
    info = DatasetInfo((sized(20, 512, 512).folders[0],))
    for priority, target in (("quality", 120), ("speed", 80)):
        cfg = recommend(UserIntent("person", priority), "sd15", profile, info).config
        assert repeats_per_image(cfg, info) == pytest.approx(target)
        assert cfg.train.steps == target * steps_per_epoch(cfg, info)


def test_bucket_aware_steps_count_partial_batches() -> None:
    cfg = make("train.batch_size=4", arch="sd15")
    square = DatasetInfo(sized(10, 512, 512).folders)
    mixed = DatasetInfo((square.folders[0].__class__(10, ((512, 512),) * 5 + ((768, 512),) * 5),))
    assert steps_per_epoch(cfg, square) == 3  # ceil(10 / 4)
    assert steps_per_epoch(cfg, mixed) == 4  # ceil(5 / 4) per bucket
    assert steps_per_epoch(cfg, DatasetInfo.counts(10)) == 3


def test_batch_follows_seed_then_fits_vram() -> None:
    sdxl = recommend(UserIntent("object", "speed"), "sdxl", PROFILES["rtx4090"]).config
    assert sdxl.train.batch_size <= 4 and sdxl.train.auto_scale_batch_size
    flux = recommend(UserIntent("object", "speed"), "flux", PROFILES["rtx4090"]).config
    assert flux.train.batch_size == 1  # the seed says 4; the DiT prior and VRAM say 1


def test_lr_scales_with_the_batch_but_stays_in_the_band() -> None:
    big = synthetic_profile("NVIDIA A100-SXM4-80GB", 80, ram_gb=256)
    cfg = recommend(UserIntent("character", "speed"), "sd15", big, DatasetInfo.counts(80)).config
    assert cfg.train.max_batch_size >= 8
    assert cfg.train.lr <= 5e-4


def test_machine_specific_choices() -> None:
    mac = recommend(UserIntent("style"), "sd15", PROFILES["m2max"]).config
    assert mac.train.optimizer == "adamw" and mac.runtime.device == "mps"
    assert mac.runtime.gpu_prefetch_batches == 1
    cpu = recommend(UserIntent("style"), "sd15", PROFILES["cpu"]).config
    assert cpu.train.dtype == "fp32" and cpu.runtime.gpu_prefetch_batches == 0
    old = recommend(UserIntent("style"), "sdxl", PROFILES["rtx2080"]).config
    assert old.train.dtype == "fp16" and old.model.vae_dtype == "fp32"
    old_flux = recommend(UserIntent("style"), "flux", PROFILES["rtx2080"]).config
    assert old_flux.train.dtype == "fp32"


def test_speed_priority_drops_checkpointing_when_it_fits() -> None:
    big = synthetic_profile("NVIDIA A100-SXM4-80GB", 80, ram_gb=256)
    fast = recommend(UserIntent("object", "speed"), "sd15", big).config
    assert not fast.train.gradient_checkpointing
    careful = recommend(UserIntent("object", "quality"), "sd15", PROFILES["rtx2080"]).config
    assert careful.train.gradient_checkpointing


def test_demo_models_get_demo_sized_defaults() -> None:
    base = make("model.name_or_path=demo:sd15", arch="sd15")
    cfg = recommend(UserIntent("person"), "sd15", PROFILES["cpu"], base=base).config
    assert cfg.datasets[0].resolution == [64] and cfg.train.steps == 30
    assert cfg.model.name_or_path == "demo:sd15"


def test_recommend_keeps_names_folders_and_prompts_of_the_base() -> None:
    base = make(
        "name=mine",
        "datasets.0.folder_path=/data/cat",
        "sample.prompts=[a cat]",
        "datasets.0.trigger_word=zkw",
        arch="sdxl",
    )
    cfg = recommend(UserIntent("object"), "sdxl", PROFILES["rtx4090"], base=base).config
    assert cfg.name == "mine" and cfg.datasets[0].folder_path == "/data/cat"
    assert [p.prompt for p in cfg.sample.prompts] == ["a cat"]
    assert cfg.datasets[0].trigger_word == "zkw"


def test_resolve_autos_answers_only_the_autos() -> None:
    cfg = make(
        "train.steps=auto",
        "train.lr=auto",
        "network.linear=32",
        "network.linear_alpha=auto",
        "train.batch_size=2",
        "train.dtype=fp32",
        arch="sdxl",
    )
    result = resolve_autos(cfg, PROFILES["rtx4090"], DatasetInfo.counts(40))
    out = result.config
    assert unresolved_autos(out) == []
    assert out.network.linear == 32 and out.network.linear_alpha == 16.0  # from the user's rank
    assert out.train.batch_size == 2 and out.train.dtype == "fp32"  # user choices kept
    assert isinstance(out.train.steps, int) and isinstance(out.train.lr, float)
    changed = set(config_diff(cfg, out))
    assert changed == {r.path for r in result.recommendations if get_path(cfg, r.path) == "auto"}
    assert "train.dtype" not in changed


CAPTIONS = [
    "a photo of sks white square on a black background",
    "a photo of sks yellow circle on a green background",
    "a photo of sks red star on a blue background",
]


def test_the_rare_token_every_caption_contains_is_found() -> None:
    from advisor.dataset import caption_trigger

    assert caption_trigger(CAPTIONS) == "sks"
    assert caption_trigger(["ohwx, smiling", "ohwx in a car", "OHWX."]) == "ohwx"
    assert caption_trigger(["a dog", "a cat", "a cow"]) is None  # only common words shared
    assert caption_trigger(CAPTIONS[:2]) is None  # too few captions to tell
    assert caption_trigger(["sks zwx dog", "sks zwx cat", "sks zwx cow"]) is None  # ambiguous


def test_the_trigger_word_follows_what_the_captions_already_use() -> None:
    from advisor.dataset import FolderInfo, caption_trigger

    info = DatasetInfo((FolderInfo(3, captioned=3, caption_trigger=caption_trigger(CAPTIONS)),))
    found = recommend(UserIntent("object"), "sd15", PROFILES["rtx4090"], info)
    assert found.config.datasets[0].trigger_word == "sks"
    assert "already contains 'sks'" in found.get("datasets.0.trigger_word").reason
    told = recommend(UserIntent("object", trigger_word="zkw"), "sd15", PROFILES["rtx4090"], info)
    assert told.config.datasets[0].trigger_word == "zkw"  # what the person said comes first
    plain = recommend(UserIntent("object"), "sd15", PROFILES["rtx4090"], DatasetInfo.counts(3))
    assert plain.config.datasets[0].trigger_word == "ohwx"


def test_the_demo_dataset_scan_finds_its_trigger(demo_dataset) -> None:
    from ui.dataset_facts import _count_folder

    folder = _count_folder(str(demo_dataset), 0, "txt")
    assert folder.caption_trigger == "sks" and folder.captioned == folder.images > 0


# ------------------------------------------------- reasons that match the values they explain
def test_a_switch_is_recommended_with_the_reason_for_the_side_chosen() -> None:
    from advisor.draft import Draft

    d = Draft(TrainingConfig().model_dump(), UserIntent(), PROFILES["cpu"], None)
    with pytest.raises(TypeError, match="set_flag"):
        d.set("train.use_ema", False, "a smoother result", "test")
    d.set_flag("train.use_ema", False, "a smoother result", "not needed here", "test")
    assert d.get("train.use_ema") is False
    assert d.recs["train.use_ema"].reason == "not needed here"
    d.set_flag("train.use_ema", True, "a smoother result", "not needed here", "test")
    assert d.recs["train.use_ema"].reason == "a smoother result"


def _switch_reasons(profiles: tuple[str, ...]) -> dict[tuple[str, bool], set[str]]:
    """Every reason given to each value of each switch, over architectures, training types,
    priorities, machines and dataset sizes."""
    found: dict[tuple[str, bool], set[str]] = {}
    for arch, kind, priority, machine, images in itertools.product(
        ("sd15", "sdxl", "flux"),
        ("person", "character", "style", "object", "concept", "other"),
        ("quality", "speed", "memory"),
        profiles,
        (None, 5),
    ):
        info = DatasetInfo.counts(images) if images else None
        result = recommend(UserIntent(kind, priority), arch, PROFILES[machine], info)
        for rec in result.recommendations:
            if isinstance(rec.value, bool):
                assert rec.reason, rec.path
                found.setdefault((rec.path, rec.value), set()).add(rec.reason)
    return found


def test_no_reason_is_given_to_both_values_of_a_switch() -> None:
    """'use_ema = off — a smoother, less overfit result' read as a reason for off: a switch's
    reason must be the one for the value recommended, never the same text for on and off."""
    found = _switch_reasons(("rtx2080", "rtx4090", "cpu"))
    switches = {path for path, _ in found}
    assert {"train.use_ema", "train.blank_prompt_preservation", "datasets.0.flip_x"} <= switches
    for path in switches:
        both = found.get((path, True), set()) & found.get((path, False), set())
        assert not both, f"{path}: the same reason for on and off: {both}"
    assert not any("smoother" in r for r in found[("train.use_ema", False)])
    assert all("protects" not in r for r in found[("train.blank_prompt_preservation", False)])


def test_the_preview_reason_counts_the_previews_the_run_makes() -> None:
    from trainer.engine.previews import sample_due

    demo = make("model.name_or_path=demo:sd15", arch="sd15")
    for base, arch, intent in (
        (demo, "sd15", UserIntent("person")),
        (None, "sdxl", UserIntent("style", "speed")),
        (None, "flux", UserIntent("person", "quality")),
    ):
        result = recommend(intent, arch, PROFILES["rtx4090"], DatasetInfo.counts(12), base)
        cfg = result.config
        steps = cfg.train.steps
        made = sum(sample_due(cfg, step, steps) for step in range(1, steps + 1))
        reason = result.get("sample.sample_every").reason
        assert reason.startswith(f"{made} preview{'s' if made != 1 else ''} over the {steps} ")
        assert f"one every {cfg.sample.sample_every})" in reason
        assert "one before training" in reason  # the baseline at step 0 (default settings)
    demo_result = recommend(UserIntent("person"), "sd15", PROFILES["cpu"], base=demo)
    assert demo_result.get("sample.sample_every").reason.startswith("3 previews over the 30 steps")


@pytest.mark.parametrize(
    ("steps", "every", "start"),
    [(30, 10, 0), (30, 7, 0), (5, 10, 0), (1000, 125, 0), (100, 10, 35), (100, 10, 101), (9, 3, 3)],
)
def test_previews_in_run_counts_like_the_trainer(steps: int, every: int, start: int) -> None:
    from advisor.defaults import previews_in_run
    from trainer.engine.previews import sample_due

    cfg = make(
        "sample.prompts=[a cat]",
        f"sample.sample_every={every}",
        f"sample.sample_start_step={start}",
        arch="sd15",
    )
    made = sum(sample_due(cfg, step, steps) for step in range(1, steps + 1))
    assert previews_in_run(steps, every, start) == made


def test_the_steps_reason_names_the_repeats_of_the_steps_chosen() -> None:
    """Three images would need fewer than the 100-step minimum: the reason says what the
    steps chosen give, not the target they could not reach."""
    import re

    info = DatasetInfo.counts(3)
    for arch, images in (("sd15", info), ("flux", info), ("sdxl", DatasetInfo.counts(30))):
        result = recommend(UserIntent("style", "speed"), arch, PROFILES["rtx4090"], images)
        reason = result.get("train.steps").reason
        said = int(re.match(r"≈(\d+) repeats per image", reason).group(1))
        assert said == round(repeats_per_image(result.config, images)), reason


def test_the_batch_reason_names_the_memory_that_holds_the_run() -> None:
    """On a CPU the batch is sized to the RAM: 'fits the predicted VRAM' beside 'CPU: no VRAM'
    read as a contradiction."""
    on_cpu = recommend(UserIntent("person", "quality"), "sd15", PROFILES["cpu"])
    on_gpu = recommend(UserIntent("person", "quality"), "sd15", PROFILES["rtx4090"])
    for result, memory in ((on_cpu, "RAM"), (on_gpu, "VRAM")):
        batch, most = result.get("train.batch_size"), result.get("train.max_batch_size")
        assert batch.reason.endswith(f"fits the predicted {memory}"), batch.reason
        assert most.reason == f"the largest batch that fits the {memory}"
