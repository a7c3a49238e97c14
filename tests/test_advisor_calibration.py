"""Calibration from past runs: only runs like this one (same base model family and size,
resolution, device) correct a prediction, and the prediction says which runs did it."""

from __future__ import annotations

import pytest
from test_advisor_cases import PROFILES, make

from advisor.calibration import calibrate
from advisor.predict import predict
from advisor.runs import as_run, mismatches
from trainer.config.paths import flatten

CPU = PROFILES["cpu"]
RTX4090 = PROFILES["rtx4090"]


def demo_sd15(*overrides: str):
    return make(
        "model.name_or_path=demo:sd15", "datasets.0.resolution=[64]", *overrides, arch="sd15"
    )


def real_sd15(*overrides: str):
    return make("datasets.0.resolution=[64]", *overrides, arch="sd15")


def measured(cfg, name: str, s_per_step: float, peak_mb: float | None, device: str) -> dict:
    metrics = {"s_per_step": s_per_step} | ({"peak_memory_mb": peak_mb} if peak_mb else {})
    return {"run_id": f"id-{name}", "name": name, "params": flatten(cfg), "metrics": metrics,
            "device": device}  # fmt: skip


def _numbers(pred) -> tuple[float, ...]:
    return (pred.vram.value, pred.ram.value, pred.step_time.value, pred.total_time.value)


def test_demo_runs_do_not_change_a_real_model_prediction() -> None:
    # The newcomer's case: two demo runs on a CPU, then a real SD1.5 at the same 64 px. Before,
    # the demo's measured ÷ prior ratios (here ×6 speed, ×60 memory) scaled the real model's
    # priors (the newcomer saw 79 GB and 3 min per step).
    demo_runs = [
        measured(demo_sd15(), "demo-1", 0.4, 1500, CPU.label),
        measured(demo_sd15(), "demo-2", 0.5, 1600, CPU.label),
    ]
    real = real_sd15()
    pred = predict(real, CPU, history=demo_runs)
    assert _numbers(pred) == _numbers(predict(real, CPU))
    assert pred.history_runs == 0 and pred.step_time.source == pred.ram.source == "prior"
    assert pred.calibration.other_models == (("demo Stable Diffusion 1.5", 2),)
    assert "2 past runs were on the demo Stable Diffusion 1.5 model: not used for this model" in (
        pred.assumptions
    )
    # ...while the same runs do calibrate the demo model they measured.
    demo = predict(demo_sd15(), CPU, history=demo_runs)
    assert demo.history_runs == 2 and demo.step_time.source == "history"
    assert demo.step_time.value == pytest.approx(0.45, rel=0.01)  # the median of what they ran


def test_real_runs_do_not_change_a_demo_prediction() -> None:
    real_runs = [measured(real_sd15(), "real", 30.0, 9000, CPU.label)]
    demo = demo_sd15()
    pred = predict(demo, CPU, history=real_runs)
    assert _numbers(pred) == _numbers(predict(demo, CPU)) and pred.history_runs == 0
    assert pred.calibration.lines() == [
        "1 past run was on Stable Diffusion 1.5: not used for this model"
    ]


def test_another_model_size_is_not_comparable_but_another_checkpoint_is() -> None:
    sdxl = make("datasets.0.resolution=[64]", arch="sdxl")
    other_sd15 = real_sd15("model.name_or_path=someone/sd15-finetune")
    base = as_run(measured(other_sd15, "x", 1.0, None, RTX4090.label))
    assert mismatches(base, real_sd15(), RTX4090.label) == ()  # same family and size
    assert mismatches(base, sdxl, RTX4090.label) == ("model",)
    assert mismatches(base, demo_sd15(), RTX4090.label) == ("model",)
    assert mismatches(base, real_sd15(), "NVIDIA GeForce RTX 3060") == ("device",)


def test_the_evidence_names_the_runs_what_they_measured_and_the_factor() -> None:
    cfg = make("train.batch_size=2", arch="sd15")
    past = make("train.batch_size=1", arch="sd15")
    prior_step = predict(past, RTX4090).step_time.value
    runs = [
        measured(past, "my_lora", prior_step * 1.7, 4096, RTX4090.label),
        measured(past, "my_lora-2", prior_step * 1.9, 4608, RTX4090.label),
        measured(demo_sd15("datasets.0.resolution=[512]"), "demo", 0.1, 900, RTX4090.label),
        measured(past, "on-a-3060", prior_step * 9, 4096, "NVIDIA GeForce RTX 3060"),
    ]
    pred = predict(cfg, RTX4090, history=runs)
    found = pred.calibration
    assert [r.run for r in found.runs] == ["my_lora", "my_lora-2"]
    assert [r.speed_factor for r in found.runs] == pytest.approx([1.7, 1.9])
    assert found.speed_factor == pytest.approx(1.8)
    assert pred.step_time.value == pytest.approx(predict(cfg, RTX4090).step_time.value * 1.8)
    memory = found.memory_factor
    assert memory is not None and memory > 0
    first, second = (f"{prior_step * k:.3g}" for k in (1.7, 1.9))
    assert found.lines() == [
        f"Speed corrected ×1.8 and memory ×{memory:.2g} from 2 past runs like this one "
        f"(my_lora, my_lora-2: {first} and {second} s/step, peak 4.0 and 4.5 GB measured)",
        "1 past run was on the demo Stable Diffusion 1.5 model: not used for this model",
    ]
    assert set(found.lines()) <= set(pred.assumptions)
    assert any("corrected by 2 past run(s) like this one" in a for a in pred.assumptions)


def test_on_a_cpu_the_measured_peak_corrects_ram_not_vram() -> None:
    cfg = demo_sd15()
    prior = predict(cfg, CPU)
    runs = [measured(cfg, "cpu-run", 0.3, prior.ram.value * 1024 * 0.5, CPU.label)]
    pred = predict(cfg, CPU, history=runs)
    assert pred.ram.source == "history" and pred.ram.value == pytest.approx(prior.ram.value * 0.5)
    assert pred.vram.value == prior.vram.value  # the RSS says nothing about a GPU's memory
    assert pred.calibration.lines()[0].startswith("Speed corrected ×")
    assert (
        " and RAM ×0.5 from 1 past run like this one (cpu-run: 0.3 s/step, peak "
        in (pred.calibration.lines()[0])
    )


def test_many_runs_are_counted_not_all_named_and_unmeasured_runs_are_left_out() -> None:
    cfg = make(arch="sd15")
    runs = [measured(cfg, f"r{i}", 1.0 + i / 10, None, RTX4090.label) for i in range(5)]
    runs.append({"run_id": "idle", "params": flatten(demo_sd15()), "device": RTX4090.label})
    found = calibrate(cfg, RTX4090, runs)
    assert len(found.runs) == 5 and found.memory_factor is None and found.other_models == ()
    assert "(r0, r1, r2 and 2 more: 1, 1.1 and 1.2 s/step measured)" in found.lines()[0]
    assert found.lines()[0].startswith("Speed corrected ×") and "memory" not in found.lines()[0]


def test_renaming_the_run_changes_no_prediction() -> None:
    """The walk: the RAM went 3.5 → 0.7 GB 'after a rename'; the rename was not the cause."""
    cfg = demo_sd15()
    runs = [measured(cfg, "my_lora", 0.12, 700, CPU.label)]
    for history in (None, runs):
        renamed = predict(make_renamed(cfg, "my_lora_b"), CPU, history=history)
        assert _numbers(renamed) == _numbers(predict(cfg, CPU, history=history))


def make_renamed(cfg, name: str):
    return cfg.model_copy(update={"name": name})


def test_a_finished_demo_run_on_a_cpu_barely_moves_the_ram_prediction() -> None:
    """What moved it was the first finished run: its measured 0.7 GB peak RSS 'corrected' a
    prior of 3.5 GB ×0.19 (the prior counted a GPU process's 2.8 GB of runtime). A CPU run's
    prior now starts near what such runs measure, and the correction says where it comes from."""
    cfg = demo_sd15("train.dtype=fp32", "train.optimizer=adamw")
    prior = predict(cfg, CPU)
    assert 0.5 < prior.ram.value < 1.2  # a demo run on a CPU measured 0.7 GB
    pred = predict(cfg, CPU, history=[measured(cfg, "my_lora", 0.12, 0.7 * 1024, CPU.label)])
    assert 0.6 < pred.ram.value / prior.ram.value < 1.4
    assert pred.ram.source == "history"
    assert "RAM ×" in pred.calibration.lines()[0] and "my_lora" in pred.calibration.lines()[0]
    gpu_prior = predict(real_sd15(), RTX4090)
    assert gpu_prior.ram.parts["Python + libraries"] == 2.8  # a GPU process keeps its runtime
