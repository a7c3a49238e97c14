"""Predictions: every published figure within ±25%, physical sanity, ranges, history."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_advisor_cases import PROFILES, make

from advisor.dataset import DatasetInfo
from advisor.figures import FIGURES, figure_table
from advisor.memory import peak_vram
from advisor.models import FACTS, kohya_swap_share
from advisor.predict import predict
from advisor.runs import config_from_params
from advisor.timing import step_time
from advisor.workload import workload
from trainer.config.io import load_config
from trainer.config.paths import flatten

ROOT = Path(__file__).resolve().parent.parent

RTX4090 = PROFILES["rtx4090"]


@pytest.mark.parametrize("figure", FIGURES, ids=[f.key for f in FIGURES])
def test_published_figure_within_25_percent(figure) -> None:
    assert abs(figure.error) <= 0.25, (figure.claim, figure.published, figure.predicted)


def test_figure_table_lists_every_figure_with_its_setup() -> None:
    table = figure_table()
    assert len(table) == len(FIGURES) >= 20
    assert {row["key"] for row in table} >= {"flux_512_bf16", "sdxl_8gb", "sd15_bs2_6gb"}
    assert all(row["claim"] and row["published"] > 0 for row in table)


def test_lora_parameter_counts_match_known_values() -> None:
    # diffusers' train_text_to_image_lora.py reports 797,184 trainable U-Net params at rank 4.
    assert FACTS["sd15"].lora_params(4) == 797_184
    assert FACTS["flux"].lora_params(16) == 16 * 266 * 2 * 3072
    assert sum(FACTS["flux"].block_params) == pytest.approx(FACTS["flux"].denoiser_params, rel=0.01)


def test_kohya_block_swap_mapping() -> None:
    assert kohya_swap_share(0) == 0
    assert kohya_swap_share(16) == pytest.approx(0.418, abs=0.005)  # 8 double + 16 single
    assert kohya_swap_share(28) == pytest.approx(0.731, abs=0.005)
    assert kohya_swap_share(100) == kohya_swap_share(35)  # kohya caps at 17 double, 36 single


def _vram(*overrides: str, arch: str = "sdxl", profile=RTX4090) -> float:
    return peak_vram(workload(make(*overrides, arch=arch), profile)).total_gib


def _step(*overrides: str, arch: str = "sdxl", profile=RTX4090) -> float:
    return step_time(workload(make(*overrides, arch=arch), profile)).seconds_per_step


def test_memory_grows_with_batch_and_size_and_shrinks_with_savings() -> None:
    assert _vram("train.batch_size=4") > _vram("train.batch_size=2") > _vram("train.batch_size=1")
    assert _vram("datasets.0.resolution=[1024]") > _vram("datasets.0.resolution=[768]")
    assert _vram("train.gradient_checkpointing=false") > _vram("train.gradient_checkpointing=true")
    assert _vram("model.quantize=true") < _vram("model.quantize=false")
    assert _vram("model.quantize=true", "model.qtype=nf4") < _vram("model.quantize=true")
    cached = ("train.cache_text_embeddings=true", "train.unload_text_encoder=true")
    assert _vram(*cached) < _vram() - 1.4  # SDXL's two text encoders: ~1.5 GB in bf16
    assert _vram("train.optimizer=adamw") > _vram("train.optimizer=adamw8bit")
    assert _vram("network.linear=128") > _vram("network.linear=8")


def test_time_grows_with_work_and_offloading() -> None:
    assert _step("train.batch_size=4") > 3 * _step("train.batch_size=1")
    assert _step("train.gradient_checkpointing=true") > _step("train.gradient_checkpointing=false")
    assert (
        _step(
            "train.diff_output_preservation=true",
            "datasets.0.trigger_word=ohwx",
            "train.diff_output_preservation_class=dog",
        )
        > _step()
    )
    offload = ("model.layer_offloading=true", "model.layer_offloading_transformer_percent=0.5")
    assert _step(*offload) > _step()
    assert _vram(*offload) < _vram()
    slow = PROFILES["rtx3060"]
    assert _step(profile=slow) > 4 * _step(profile=RTX4090)


def test_prediction_has_ranges_parts_and_assumptions() -> None:
    cfg = make("train.steps=auto", "sample.sample_every=100", "sample.prompts=[a]", arch="flux")
    pred = predict(cfg, RTX4090)
    for estimate in (pred.vram, pred.ram, pred.step_time, pred.total_time, pred.disk):
        assert estimate.low < estimate.value < estimate.high
        assert estimate.parts and estimate.source == "prior"
    assert set(pred.vram.parts) >= {"denoiser weights", "LoRA + optimizer", "activations"}
    assert set(pred.total_time.parts) == {
        "starting the trainer",
        "loading models",
        "caching",
        "training",
        "sampling",
        "saving",
    }
    assert pred.total_time.parts["sampling"] > 0
    text = " ".join(pred.assumptions)
    assert "1000 steps assumed" in text and "20 images assumed" in text and "4090" in text
    assert pred.vram_fit == "no"  # bf16 Flux with resident text encoders does not fit 24 GB
    assert pred.to_dict()["vram_fit"] == "no"


def test_a_cpu_run_is_described_as_one_no_gpu_words() -> None:
    cpu = " ".join(predict(make(arch="sd15"), PROFILES["cpu"]).assumptions)
    assert "fp32 TFLOPS" in cpu and "text encoders in RAM with the model" in cpu
    assert "16-bit" not in cpu and "GPU" not in cpu
    gpu = " ".join(predict(make(arch="sd15"), RTX4090).assumptions)
    assert "dense 16-bit TFLOPS (vendor spec)" in gpu and "fp32 TFLOPS" not in gpu


def test_unified_memory_uses_seventy_percent_of_ram() -> None:
    pred = predict(make(arch="sdxl"), PROFILES["m2max"])
    assert pred.vram_available_gb == pytest.approx(32 * 0.7)
    assert any("unified memory" in a for a in pred.assumptions)


def test_disk_prediction_counts_caches_checkpoints_and_mlflow_copies() -> None:
    cfg = make(
        "datasets.0.cache_latents=true",
        "datasets.0.cache_latents_to_disk=true",
        "train.steps=1000",
        "save.save_every=100",
        "save.max_step_saves_to_keep=3",
        arch="flux",
    )
    parts = predict(cfg, RTX4090, DatasetInfo.counts(100)).disk.parts
    # Flux latents at 1024 px: 16 × 128 × 128 × 2 bytes = 0.5 MiB each.
    assert parts["latent cache"] == pytest.approx(100 * 0.5 / 1024, rel=0.01)
    lora_gib = FACTS["flux"].lora_params(16) * 2 / 2**30
    assert parts["MLflow artifact copies"] == pytest.approx((10 + 2) * lora_gib, rel=0.01)
    assert parts["checkpoints"] > 3 * lora_gib


def test_flux_quantize_on_load_needs_about_50_gb_ram() -> None:
    ram = predict(make("model.quantize=true", arch="flux"), RTX4090).ram
    assert 42 < ram.value < 55 and ram.parts["loading peak"] > 40


def test_the_demo_prediction_is_near_what_the_demo_measures() -> None:
    # Measured: the demo SD1.5 preset trains at 0.03 s/step on a quiet core and 0.14-0.57 s/step
    # on a loaded 2-core machine; an 8-step studio run took ~10 s from launch to exit.
    pred = predict(load_config(ROOT / "presets" / "demo_sd15.yaml"), PROFILES["cpu"])
    assert 0.03 <= pred.step_time.value <= 0.3
    assert pred.total_time.parts["starting the trainer"] >= 3
    assert pred.total_time.parts["caching"] < 1 and pred.total_time.parts["sampling"] < 5


def test_demo_models_predict_small_numbers() -> None:
    cfg = make(
        "model.name_or_path=demo:flux", "datasets.0.resolution=[64]", "train.steps=30", arch="flux"
    )
    pred = predict(cfg, PROFILES["cpu"])
    assert pred.vram.value < 5 and pred.total_time.value < 300


def _record(cfg, s_per_step: float, peak_mb: float, device: str, run_id: str = "r1") -> dict:
    return {
        "run_id": run_id,
        "params": flatten(cfg),
        "metrics": {"s_per_step": s_per_step, "peak_memory_mb": peak_mb},
        "device": device,
    }


def test_history_of_the_same_setup_replaces_the_priors() -> None:
    cfg = make("train.batch_size=2", arch="sdxl")
    prior = predict(cfg, RTX4090)
    past = make("train.batch_size=1", arch="sdxl")  # same arch, size and device; batch differs
    past_prior = predict(past, RTX4090)
    runs = [
        _record(past, past_prior.step_time.value * 2.0, 9000, RTX4090.label, "a"),
        _record(past, past_prior.step_time.value * 2.2, 9100, RTX4090.label, "b"),
        _record(past, 0.01, 100, "Another GPU", "c"),  # other device: ignored
        _record(make(arch="sd15"), 0.01, 100, RTX4090.label, "d"),  # other arch: ignored
    ]
    pred = predict(cfg, RTX4090, history=runs)
    assert pred.history_runs == 2
    assert pred.step_time.source == "history" and pred.vram.source == "history"
    assert pred.step_time.value == pytest.approx(prior.step_time.value * 2.1, rel=0.01)
    assert pred.step_time.low <= pred.step_time.value <= pred.step_time.high
    assert any("from 2 past runs like this one (a, b: " in a for a in pred.assumptions)
    assert pred.vram.value != pytest.approx(prior.vram.value, rel=0.01)


def test_runs_tagged_with_a_bare_device_kind_match_by_host() -> None:
    from advisor.runs import as_run, comparable, mismatches

    cfg = make(arch="sdxl")

    def run(device: str, host: str):
        return as_run({**_record(cfg, 1.0, 100, device), "tags": {"studio.host": host}})

    # The launcher tags the torch device kind, which names no card: the host decides.
    assert comparable(run("cpu", "box"), cfg, "CPU Some Model", host="box")
    assert not comparable(run("cuda:1", "other"), cfg, "RTX 4090", host="box")
    assert comparable(run(RTX4090.label, "other"), cfg, RTX4090.label, host="box")
    assert mismatches(run("Another GPU", "box"), cfg, RTX4090.label, "box") == ("device",)


def test_runs_of_another_resolution_do_not_count() -> None:
    cfg = make(arch="sdxl")
    other = make("datasets.0.resolution=[768]", arch="sdxl")
    pred = predict(cfg, RTX4090, history=[_record(other, 9.0, 9000, RTX4090.label)])
    assert pred.history_runs == 0 and pred.step_time.source == "prior"


def test_config_round_trips_through_mlflow_params() -> None:
    cfg = make(
        "name='123'",
        "train.lr=3e-4",
        "datasets.0.trigger_word=ohwx",
        "sample.prompts=[a cat, '[trigger] dog']",
        "network.target_modules=[to_q, to_v]",
        arch="sdxl",
    )
    assert config_from_params(flatten(cfg)) == cfg
    assert config_from_params({}) is None
    assert config_from_params({"model.arch": "nonsense"}) is None


# ----------------------------------------------------------------- a busy CPU, the time split
def test_a_busy_cpu_is_said_beside_the_times_without_inflating_them() -> None:
    from advisor.profile import synthetic_profile

    cfg = load_config(ROOT / "presets" / "demo_sd15.yaml")
    quiet = predict(cfg, synthetic_profile(None, ram_gb=16.0, cores=2, disk="ssd", load=0.4))
    busy = predict(cfg, synthetic_profile(None, ram_gb=16.0, cores=2, disk="ssd", load=11.0))
    # The numbers stay the prior's: how much longer depends on what else runs.
    assert busy.step_time == quiet.step_time and busy.total_time == quiet.total_time
    assert quiet.time_caveat == ""
    assert "the CPU was quiet when checked (load 0.2 per core)" in " ".join(quiet.assumptions)
    assert busy.time_caveat.startswith("the CPU is busy (load 5.5 per core when checked)")
    assert "expect several times longer than predicted" in busy.time_caveat
    assert "about 6.5x slower" in busy.time_caveat  # the fair share of the cores: 1 / (5.5 + 1)
    assert busy.time_caveat in busy.assumptions
    unknown = predict(cfg, synthetic_profile(None, ram_gb=16.0, cores=2, disk="ssd"))
    assert unknown.time_caveat == "" and "per core" not in " ".join(unknown.assumptions)


def test_a_busy_cpu_is_not_stacked_on_a_correction_from_past_runs() -> None:
    """Past runs measured on a busy machine carry its slow-down in their ×3 correction: the
    caveat must not add another 'about 6.5x slower' on top."""
    from advisor.cpu_load import busy_cpu_caveat

    corrected = busy_cpu_caveat(5.5, (), "cpu", history_factor=3.0)
    assert "already include a ×3.0 correction from past runs" in corrected
    assert "6.5x slower" not in corrected and "expect several times longer" not in corrected
    near = busy_cpu_caveat(5.5, (), "cpu", history_factor=1.1)  # past runs near the formulas
    assert "about 6.5x slower" in near and near == busy_cpu_caveat(5.5, (), "cpu")


def test_a_busy_cpu_beside_a_gpu_only_slows_the_cpu_side() -> None:
    from dataclasses import replace

    busy = replace(RTX4090, cpu_load=40.0, cpu_busy_processes=("ffmpeg (390%)",))
    caveat = predict(make(arch="sdxl"), busy).time_caveat
    assert caveat.startswith("the CPU is busy (load 2.5 per core when checked; busiest: ffmpeg")
    assert "loading the model" in caveat and "several times" not in caveat


def test_the_total_time_is_split_into_its_parts_in_words() -> None:
    from advisor.predict import duration, time_split

    parts = {
        "starting the trainer": 4.0,
        "loading models": 2.0,
        "caching": 0.01,
        "training": 3.0,
        "sampling": 8.0,
        "saving": 0.0,
    }
    assert time_split(parts, preview_images=9) == (
        "previews 8.00 s for 9 images, starting and loading 6.00 s, training 3.00 s"
    )  # largest first; parts under 2% of the total left out
    cfg = load_config(ROOT / "presets" / "demo_sd15.yaml")
    pred = predict(cfg, PROFILES["cpu"])
    assert pred.preview_images == 8  # 2 prompts at steps 0, 10, 20 and 30
    text = time_split(pred.total_time.parts, pred.preview_images)
    total = pred.total_time.parts
    assert f"training {duration(total['training'])}" in text
    assert f"previews {duration(total['sampling'])} for 8 images" in text
    assert "starting and loading" in text and "caching" not in text  # 0.09 s of 9 s


def test_a_finding_quotes_the_total_time_the_predictions_show() -> None:
    """The walk: the header said '≈ 17 s in all' beside a warning 'predicted 13 s': the studio's
    findings were validated without the past runs that corrected its prediction. Now both come
    from one ``predict`` call with the same history."""
    from advisor.rules import validate
    from ui import advice

    cfg = make("model.name_or_path=demo:sd15", "datasets.0.resolution=[64]", arch="sd15")
    busy = PROFILES["cpu"].__class__(**{**PROFILES["cpu"].__dict__, "cpu_load": 11.0})
    runs = [{"run_id": "id-1", "name": "my_lora", "params": flatten(cfg),
             "metrics": {"s_per_step": 0.9}, "device": busy.label}]  # fmt: skip
    calibrated, prior = predict(cfg, busy, history=runs), predict(cfg, busy)
    assert calibrated.total_time.value > 1.5 * prior.total_time.value  # the history matters
    [warned] = [f for f in validate(cfg, busy, history=runs) if f.rule == "cpu_busy"]
    assert f"predicted {calibrated.total_time.text()} in all" in warned.message
    hw = advice._from_profile(busy)
    shown = advice.predict(cfg, hw, runs)
    found = advice.findings(cfg.model_dump(mode="json"), [], cfg, hw, None, runs)
    [studio] = [f for f in found if f.rule == "cpu_busy"]
    assert shown is not None and shown.total_s == pytest.approx(calibrated.total_time.value)
    assert f"predicted {calibrated.total_time.text()} in all" in studio.message
