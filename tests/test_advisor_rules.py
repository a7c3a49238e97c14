"""Validation rules: each fires on its case with the right severity, and its fix clears it;
applying all fixes never produces a new error (property test)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_advisor_cases import PROFILES, configs, infos, make, profiles, sized

from advisor.checks_unused import UNUSED
from advisor.dataset import DatasetInfo, FolderInfo
from advisor.findings import Finding
from advisor.model_source import MODEL_RULES
from advisor.patch import apply_patch, try_patch
from advisor.rules import RULES, apply_fixes, errors, validate

MIXED_SIZES = DatasetInfo(
    (
        FolderInfo(
            8,
            (
                (512, 512),
                (640, 384),
                (384, 640),
                (704, 320),
                (320, 704),
                (576, 448),
                (448, 576),
                (512, 512),
            ),
            captioned=8,
        ),
    )
)
TEN = DatasetInfo((FolderInfo(10, captioned=10),))
VAL = DatasetInfo(TEN.folders, validation=FolderInfo(0, folder="/v", missing=True))
SKS = ("a photo of sks dog", "sks on a table", "sks, outdoors")  # captions for another trigger
SKS_CAPTIONS = DatasetInfo((FolderInfo(3, captioned=3, captions=SKS),))

# rule id: (overrides, arch, machine, dataset, existing run names, severity)
CASES: dict[str, tuple[tuple[str, ...], str, str | None, Any, tuple[str, ...], str]] = {
    "cache_to_disk_without_cache": (
        ("datasets.0.cache_latents_to_disk=true",),
        "sd15",
        None,
        None,
        (),
        "warning",
    ),
    "cache_random_augmentation": (
        ("datasets.0.cache_latents=true", "datasets.0.random_crop=true"),
        "sd15",
        None,
        None,
        (),
        "warning",
    ),
    "cache_flip_variants": (
        ("datasets.0.cache_latents=true", "datasets.0.flip_x=true"),
        "sd15",
        None,
        None,
        (),
        "info",  # what caching flips costs: expected, nothing to change
    ),
    "text_cache_with_dropout": (
        ("train.cache_text_embeddings=true",),
        "sd15",
        None,
        None,
        (),
        "info",  # "caption dropout works with cached text": fine as it is
    ),
    "text_cache_off": ((), "sdxl", None, None, (), "suggestion"),
    "flip_asymmetric": (
        ("intent=person", "datasets.0.flip_x=true"),
        "sd15",
        None,
        None,
        (),
        "warning",
    ),
    "flip_y": (("datasets.0.flip_y=true",), "sd15", None, None, (), "suggestion"),
    "trigger_missing": (("intent=person",), "sd15", None, None, (), "warning"),
    "trigger_common_word": (
        ("datasets.0.trigger_word=woman",),
        "sd15",
        None,
        None,
        (),
        "suggestion",
    ),
    "dataset_smaller_than_batch": (
        ("train.batch_size=8",),
        "sd15",
        None,
        DatasetInfo.counts(3),
        (),
        "error",
    ),
    "dataset_missing": (
        (),
        "sd15",
        None,
        DatasetInfo((FolderInfo(0, folder="/no/such/images", missing=True),)),
        (),
        "error",
    ),
    "dataset_skipped_files": (
        (),
        "sd15",
        None,
        DatasetInfo((FolderInfo(5, skipped=(("a.gif", "not a supported image"),)),)),
        (),
        "warning",
    ),
    "dataset_no_captions": (
        (),
        "sd15",
        None,
        DatasetInfo((FolderInfo(10, captioned=0),)),
        (),
        "warning",
    ),
    "dataset_size_for_intent": (
        ("intent=person",),
        "sd15",
        None,
        DatasetInfo.counts(5),
        (),
        "suggestion",
    ),
    "bucket_fragmentation": (("train.batch_size=4",), "sd15", None, MIXED_SIZES, (), "suggestion"),
    "shuffle_without_keep": (
        ("datasets.0.shuffle_tokens=true", "datasets.0.trigger_word=ohwx"),
        "sd15",
        None,
        None,
        (),
        "suggestion",
    ),
    "caption_dropout_high": (
        ("datasets.0.caption_dropout_rate=0.5",),
        "sd15",
        None,
        None,
        (),
        "warning",
    ),
    "slow_disk_without_cache": ((), "sd15", "rtx2080", None, (), "suggestion"),
    "ram_cache_too_big": (
        ("datasets.0.cache_latents=true",),
        "flux",
        "cpu",
        DatasetInfo.counts(50_000),
        (),
        "warning",
    ),
    "alpha_mask_without_alpha": (
        ("datasets.0.alpha_mask=true",),
        "sd15",
        None,
        sized(4),
        (),
        "warning",
    ),
    "validation_folder_missing": (("validation.folder_path=/v",), "sd15", None, VAL, (), "error"),
    "validation_holdout_too_many": (("validation.holdout=10",), "sd15", None, TEN, (), "error"),
    "validation_holdout_large": (("validation.holdout=3",), "sd15", None, TEN, (), "warning"),
    "vram_over": ((), "flux", "rtx3060_64", None, (), "error"),
    "ram_over": (("model.quantize=true",), "flux", "rtx3060", None, (), "error"),
    "disk_over": (
        (
            "datasets.0.cache_latents=true",
            "datasets.0.cache_latents_to_disk=true",
            "model.quantize=true",
        ),
        "flux",
        "tiny_disk",
        DatasetInfo.counts(2000),
        (),
        "error",
    ),
    "vram_underused": ((), "sd15", "rtx4090", None, (), "suggestion"),
    "bf16_unsupported": (("train.dtype=bf16",), "sdxl", "rtx2080", None, (), "error"),
    "fp16_sdxl_vae": (("train.dtype=fp16",), "sdxl", None, None, (), "warning"),
    "fp16_flux": (("train.dtype=fp16",), "flux", None, None, (), "error"),
    "quant_needs_nvidia": (
        ("model.quantize=true", "model.qtype=nf4"),
        "sdxl",
        "rx7900",
        None,
        (),
        "error",
    ),
    "nf4_optimizer": (
        ("model.quantize=true", "model.qtype=nf4", "train.optimizer=adamw"),
        "sdxl",
        None,
        None,
        (),
        "suggestion",
    ),
    "quantized_samples": (("model.quantize=true",), "sdxl", None, None, (), "info"),
    "quantize_small_model": (("model.quantize=true",), "sd15", "rtx4090", None, (), "suggestion"),
    "device_missing": (("runtime.device=cuda",), "sd15", "cpu", None, (), "error"),
    "attention_unavailable": (
        ("model.attention_backend=flash",),
        "sd15",
        "m2max",
        None,
        (),
        "error",
    ),
    "cpu_training": ((), "sd15", "cpu", None, (), "warning"),
    "cpu_busy": (("model.name_or_path=demo:sd15",), "sd15", "cpu_busy", None, (), "warning"),
    "fp32_on_gpu": (("train.dtype=fp32",), "sd15", "rtx4090", None, (), "suggestion"),
    "workers_over_cores": (("runtime.num_workers=16",), "sd15", "cpu", None, (), "warning"),
    "prefetch_without_gpu": (
        ("runtime.gpu_prefetch_batches=2",),
        "sd15",
        "cpu",
        None,
        (),
        "suggestion",
    ),
    "checkpointing_not_needed": ((), "sd15", "rtx4090", None, (), "suggestion"),
    "auto_unresolved": (
        ("train.steps=auto", "train.lr=auto"),
        "sdxl",
        "rtx4090",
        None,
        (),
        "error",
    ),
    "prodigy_lr": (("train.optimizer=prodigy",), "sd15", None, None, (), "warning"),
    "prodigy_alpha": (
        ("train.optimizer=prodigy", "train.lr=1.0", "network.linear_alpha=8"),
        "sd15",
        None,
        None,
        (),
        "warning",
    ),
    "lion_lr": (("train.optimizer=lion", "train.lr=3e-4"), "sd15", None, None, (), "warning"),
    "optimizer_8bit_off_gpu": (("train.optimizer=adamw8bit",), "sd15", "cpu", None, (), "warning"),
    "lr_high": (("train.lr=1e-3",), "sdxl", None, None, (), "warning"),
    "lr_low": (("train.lr=1e-6",), "sdxl", None, None, (), "warning"),
    "lr_off_scale": (
        ("model.name_or_path=demo:sd15", "train.lr=1"),
        "sd15",
        None,
        None,
        (),
        "error",
    ),
    "te_lr_above_unet": (
        ("train.train_text_encoder=true", "train.text_encoder_lr=1e-3"),
        "sd15",
        None,
        None,
        (),
        "warning",
    ),
    "sdxl_text_encoder": (("train.train_text_encoder=true",), "sdxl", None, None, (), "suggestion"),
    "alpha_above_rank": (
        ("network.linear=8", "network.linear_alpha=32"),
        "sd15",
        None,
        None,
        (),
        "warning",
    ),
    "rank_high_small_data": (
        ("network.linear=128",),
        "sd15",
        None,
        DatasetInfo.counts(10),
        (),
        "warning",
    ),
    "steps_too_many": (("train.steps=20000",), "sd15", None, DatasetInfo.counts(20), (), "warning"),
    "repeats_out_of_band": (
        ("intent=person", "train.steps=100"),
        "sd15",
        None,
        DatasetInfo.counts(50),
        (),
        "warning",
    ),
    "warmup_with_constant": (
        ("train.lr_scheduler_params.warmup_ratio=0.05",),
        "sd15",
        None,
        None,
        (),
        "warning",
    ),
    "warmup_vs_cycle": (
        (
            "train.lr_scheduler=cosine_with_restarts",
            "train.lr_scheduler_params.num_cycles=40",
            "train.lr_scheduler_params.warmup_ratio=0.05",
        ),
        "sd15",
        None,
        None,
        (),
        "error",
    ),
    "warmup_long": (
        ("train.lr_scheduler=cosine", "train.lr_scheduler_params.warmup_ratio=0.5"),
        "sd15",
        None,
        None,
        (),
        "warning",
    ),
    "restarts_one_cycle": (
        ("train.lr_scheduler=cosine_with_restarts",),
        "sd15",
        None,
        None,
        (),
        "suggestion",
    ),
    "min_snr_missing": ((), "sd15", None, None, (), "suggestion"),
    "noise_offset_flux": (("train.noise_offset=0.1",), "flux", None, None, (), "suggestion"),
    "ema_too_slow": (
        ("train.use_ema=true", "train.ema_decay=0.9999"),
        "sd15",
        None,
        None,
        (),
        "warning",
    ),
    "processes_over_devices": (
        ("runtime.num_processes=2", "runtime.device=cuda"),
        "sd15",
        "rtx4090",
        None,
        (),
        "warning",
    ),
    "effective_batch": (
        ("train.gradient_accumulation_steps=4", "train.batch_size=2"),
        "sd15",
        None,
        None,
        (),
        "info",  # what the accumulation chosen means
    ),
    "sample_every_beyond_steps": (
        ("train.steps=100", "sample.prompts=[a]"),
        "sd15",
        None,
        None,
        (),
        "suggestion",
    ),
    "previews_too_often": (
        ("train.steps=2000", "sample.sample_every=10", "sample.prompts=[a]"),
        "sd15",
        "rtx3060",
        None,
        (),
        "warning",
    ),
    "saves_too_often": (
        ("train.steps=2000", "save.save_every=10"),
        "sd15",
        None,
        None,
        (),
        "warning",
    ),
    "samples_without_prompts": ((), "sd15", None, None, (), "suggestion"),
    "prompts_without_trigger": (
        ("datasets.0.trigger_word=ohwx", "sample.prompts=[a cat]"),
        "sd15",
        None,
        None,
        (),
        "suggestion",
    ),
    "sample_size_mismatch": (
        ("sample.width=512", "sample.height=512"),
        "sdxl",
        None,
        None,
        (),
        "suggestion",
    ),
    "resolution_off_native": (("datasets.0.resolution=[1024]",), "sd15", None, None, (), "warning"),
    "output_name_exists": ((), "sd15", None, None, ("my_lora", "my_lora_2"), "info"),
    "preservation_for_subject": (
        ("intent=person", "datasets.0.trigger_word=ohwx"),
        "sd15",
        None,
        None,
        (),
        "suggestion",
    ),
    "trigger_not_in_captions": (
        ("datasets.0.trigger_word=ohwx",),
        "sd15",
        None,
        SKS_CAPTIONS,
        (),
        "warning",
    ),
}
MACHINES = {**PROFILES}
MACHINES["rtx3060_64"] = PROFILES["rtx3060"].__class__(
    **{**PROFILES["rtx3060"].__dict__, "ram_total_gb": 64.0}
)
# A 2-core machine at load 11 (a browser and other work): 5.5 runnable threads per core.
MACHINES["cpu_busy"] = PROFILES["cpu"].__class__(**{**PROFILES["cpu"].__dict__, "cpu_load": 11.0})


def _run(rule_id: str) -> tuple[Any, list[Finding], tuple]:
    overrides, arch, machine, info, names, _severity = CASES[rule_id]
    cfg = make(*overrides, arch=arch)
    profile = MACHINES[machine] if machine else None
    return cfg, validate(cfg, profile, info, names), (profile, info, names)


def test_there_are_at_least_thirty_rules_and_every_one_has_a_case() -> None:
    substantive = {r for r in RULES if not r.startswith("unused.") and r not in MODEL_RULES}
    assert len(substantive) >= 30  # the model-source rules have their own cases
    assert set(CASES) == substantive
    assert len([r for r in RULES if r.startswith("unused.")]) == len(UNUSED)


@pytest.mark.parametrize("rule_id", sorted(CASES))
def test_rule_fires_and_its_fix_clears_it(rule_id: str) -> None:
    cfg, found, (profile, info, names) = _run(rule_id)
    mine = [f for f in found if f.rule == rule_id]
    assert mine, f"{rule_id} did not fire; found {[f.rule for f in found]}"
    finding = mine[0]
    assert finding.severity == CASES[rule_id][-1]
    assert finding.paths and finding.message
    if finding.fix:
        fixed = apply_patch(cfg, finding.fix)
        again = [f for f in validate(fixed, profile, info, names) if f.rule == rule_id]
        assert not again, f"{rule_id} still fires after its fix {finding.fix}: {again}"


NON_DEFAULT = {
    "network.lokr_factor": "4",
    "network.lokr_full_rank": "true",
    "train.huber_delta": "0.5",
    "train.timestep_shift": "5",
    "train.lr_scheduler_params.num_cycles": "3",
    "train.lr_scheduler_params.power": "2",
    "train.lr_scheduler_params.min_lr_ratio": "0.1",
    "train.ema_decay": "0.999",
    "train.cfg_scale": "5",
    "train.optimal_noise_pairing_samples": "8",
    "train.diff_output_preservation_multiplier": "2",
    "train.blank_prompt_preservation_multiplier": "2",
    "train.inverted_mask_prior_multiplier": "1",
    "train.batch_size_warmup_steps": "50",
    "model.layer_offloading_transformer_percent": "0.5",
    "model.layer_offloading_text_encoder_percent": "0.5",
    "model.qtype": "nf4",
    "model.qtype_te": "int8",
    "train.text_encoder_lr": "1e-4",
}


@pytest.mark.parametrize("path", [u[0] for u in UNUSED])
def test_unused_setting_is_reported_and_reset(path: str) -> None:
    cfg = make(f"{path}={NON_DEFAULT[path]}", arch="sd15")
    rule_id = "unused." + path.rsplit(".", 1)[-1]
    mine = [f for f in validate(cfg) if f.rule == rule_id]
    assert len(mine) == 1 and mine[0].fix == {path: None}
    assert not [f for f in validate(apply_patch(cfg, mine[0].fix)) if f.rule == rule_id]


def test_unused_setting_is_quiet_when_its_switch_is_on() -> None:
    cfg = make("network.type=lokr", "network.lokr_factor=4", arch="sd15")
    assert not [f for f in validate(cfg) if f.rule == "unused.lokr_factor"]


def test_findings_are_sorted_errors_first() -> None:
    cfg = make("train.dtype=fp16", "train.lr=1e-3", "datasets.0.flip_y=true", arch="flux")
    severities = [f.severity for f in validate(cfg)]
    assert severities == sorted(severities, key=("error", "warning", "suggestion", "info").index)
    assert severities[0] == "error"


def test_notes_rules_are_covered() -> None:
    """Each combination in docs/sources.md#rules-the-review-checks (and the issue) has a rule."""
    for rule_id in (
        "cache_to_disk_without_cache",
        "cache_random_augmentation",
        "text_cache_with_dropout",
        "prodigy_lr",
        "prodigy_alpha",
        "fp16_sdxl_vae",
        "fp16_flux",
        "dataset_smaller_than_batch",
        "steps_too_many",
        "warmup_vs_cycle",
        "output_name_exists",
        "sdxl_text_encoder",
        "quantized_samples",
        "nf4_optimizer",
        "effective_batch",
        "unused.lokr_factor",
    ):
        assert rule_id in RULES


def test_caption_dropout_with_cached_text_is_information_not_a_problem() -> None:
    cfg = make(
        "train.cache_text_embeddings=true", "datasets.0.caption_dropout_rate=0.1", arch="sdxl"
    )
    mine = [f for f in validate(cfg) if "caption_dropout_rate" in " ".join(f.paths)]
    assert mine and all(f.severity == "info" and f.fix is None for f in mine)


def test_one_severity_scale_with_information_last_and_never_a_problem() -> None:
    from advisor.findings import (
        SEVERITIES,
        SEVERITY_MEANING,
        count_severities,
        is_problem,
        severity_rank,
    )

    assert SEVERITIES == ("error", "warning", "suggestion", "info")
    assert set(SEVERITY_MEANING) == set(SEVERITIES)
    assert [is_problem(s) for s in SEVERITIES] == [True, True, True, False]
    assert sorted(["info", "error", "suggestion", "warning"], key=severity_rank) == list(SEVERITIES)
    found = [Finding("a", s, ("train.lr",), "m") for s in ("info", "warning", "info")]
    assert count_severities(found) == {"error": 0, "warning": 1, "suggestion": 0, "info": 2}


def test_a_message_that_says_all_is_fine_is_information() -> None:
    """A note saying a setting is fine, works or is as expected must not read as a problem;
    and each rule keeps to the severities it is meant to give (errors only where allowed)."""
    from advisor.rules import SUGGESTION_ONLY

    fine = ("fine", "ok", "works", "as expected", "nothing to change")
    for rule_id in CASES:
        for finding in _run(rule_id)[1]:
            if finding.severity != "info":
                assert not finding.message.lower().startswith(fine), finding
            if finding.rule in SUGGESTION_ONLY:
                assert finding.severity in ("suggestion", "info"), finding


def test_apply_fixes_skips_conflicts_and_invalid_patches() -> None:
    cfg = make(arch="sd15")
    a = Finding("a", "error", ("train.lr",), "x", {"train.lr": 2e-4})
    b = Finding("b", "warning", ("train.lr",), "y", {"train.lr": 3e-4})  # conflicts with a
    c = Finding("c", "suggestion", ("train.steps",), "z", {"train.steps": -5})  # invalid
    d = Finding("d", "suggestion", ("train.steps",), "w", {"train.steps": 500})
    result = apply_fixes(cfg, [d, c, b, a])
    assert result.config.train.lr == 2e-4 and result.config.train.steps == 500
    assert [f.rule for f in result.applied] == ["a", "d"]
    assert {f.rule for f in result.skipped} == {"b", "c"}


def test_apply_fixes_repairs_a_broken_flux_config() -> None:
    machine = MACHINES["rtx3060_64"]
    cfg = make("train.dtype=fp16", "train.steps=auto", "train.noise_offset=0.1", arch="flux")
    found = validate(cfg, machine)
    assert {"fp16_flux", "auto_unresolved", "vram_over"} <= {f.rule for f in errors(found)}
    fixed = apply_fixes(cfg, found, machine).config
    assert errors(validate(fixed, machine)) == []
    assert fixed.train.dtype == "bf16" and isinstance(fixed.train.steps, int)


SETTINGS = settings(
    max_examples=120, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
)


@SETTINGS
@given(configs(), profiles, infos, st.sampled_from([(), ("my_lora",)]))
def test_applying_all_fixes_never_produces_a_new_error(cfg, profile, info, names) -> None:
    if cfg is None:
        return
    found = validate(cfg, profile, info, names)
    result = apply_fixes(cfg, found, profile, info, names)
    before = {f.rule for f in errors(found)}
    after = {f.rule for f in errors(validate(result.config, profile, info, names))}
    assert after - before == set()


@SETTINGS
@given(configs(), profiles, infos)
def test_every_fix_alone_gives_a_valid_config(cfg, profile, info) -> None:
    if cfg is None:
        return
    for finding in validate(cfg, profile, info):
        if finding.fix:
            assert try_patch(cfg, finding.fix) is not None, (finding.rule, finding.fix)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(configs(), profiles, infos)
def test_reports_and_auto_resolution_never_fail(cfg, profile, info) -> None:
    from advisor.defaults import resolve_autos
    from advisor.report import build_report
    from trainer.config.introspection import unresolved_autos

    if cfg is None:
        return
    assert build_report(cfg, profile, info).text()
    resolved = resolve_autos(cfg, profile, info).config
    assert unresolved_autos(resolved) == []


def test_a_busy_cpu_warns_about_the_time_of_a_cpu_run_and_informs_a_gpu_run() -> None:
    cpu_run = make("model.name_or_path=demo:sd15", arch="sd15")
    [busy] = [f for f in validate(cpu_run, MACHINES["cpu_busy"]) if f.rule == "cpu_busy"]
    assert busy.severity == "warning" and busy.fix is None  # only a person can free the cores
    assert "in all, but the CPU is busy (load 5.5 per core" in busy.message
    assert "several times longer" in busy.message
    assert not [f for f in validate(cpu_run, MACHINES["cpu"]) if f.rule == "cpu_busy"]
    gpu = PROFILES["rtx4090"].__class__(**{**PROFILES["rtx4090"].__dict__, "cpu_load": 32.0})
    [side] = [f for f in validate(make(arch="sdxl"), gpu) if f.rule == "cpu_busy"]
    assert side.severity == "info" and "loading the model" in side.message
