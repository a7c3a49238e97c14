"""Sampling options: each test fails if the option is ignored.

Preview settings go through the loop's own ``sample_and_log`` on a tiny SD1.5 model with a
random (strong) LoRA, with spies on what reaches the pipeline: the scheduler class, the per-image
settings and the number of denoiser calls. When previews happen (sample_every, start step,
skip/force first sample) is checked with real training runs.
"""

from __future__ import annotations

import shutil
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from options_support import RecordingTracker, StopAfter, run, tiny_config
from pydantic import ValidationError

from trainer.arch.base import Arch
from trainer.arch.pipelines import SAMPLERS
from trainer.arch.registry import load_arch
from trainer.config.schema import TrainingConfig
from trainer.engine.context import RunContext
from trainer.engine.previews import sample_and_log

PROVES = {
    "sample.sampler": "test_sampler_sets_the_scheduler_and_changes_the_image",
    "sample.sample_steps": "test_sample_steps_is_the_number_of_denoising_steps",
    "sample.guidance_scale": "test_guidance_scale_reaches_the_pipeline_and_changes_the_image",
    "sample.seed": "test_seed_and_walk_seed",
    "sample.walk_seed": "test_seed_and_walk_seed",
    "sample.width": "test_width_and_height_are_the_image_size",
    "sample.height": "test_width_and_height_are_the_image_size",
    "sample.neg": [
        "test_negative_prompt_changes_the_image",
        "test_schema_refuses_sampling_options_that_cannot_work",
    ],
    "sample.prompts": "test_prompts_with_per_prompt_overrides_win",
    "sample.network_multiplier": "test_network_multiplier_zero_is_the_base_model",
    "sample.sample_every": "test_when_previews_are_made",
    "sample.sample_start_step": "test_when_previews_are_made",
    "sample.skip_first_sample": "test_when_previews_are_made",
    "sample.force_first_sample": "test_force_first_sample_on_resume",
}

CPU = torch.device("cpu")
SAMPLE: dict[str, Any] = {
    "prompts": ["[trigger] red circle"],
    "width": 64,
    "height": 64,
    "sample_steps": 2,
    "guidance_scale": 5.0,
    "sampler": "euler",
    "seed": 1,
    "sample_every": 10,
}


def sample_cfg(arch: str = "sd15", **sample: Any) -> TrainingConfig:
    model = {"arch": arch, "name_or_path": f"demo:{arch}"}
    if arch == "flux":
        sample.setdefault("sampler", "flowmatch")
        sample.setdefault("guidance_scale", 3.5)
    return tiny_config(model=model, sample={**SAMPLE, **sample})


def with_random_lora(arch: Arch) -> Arch:
    groups = arch.add_lora(arch.cfg.network)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in groups["unet"]:
            param.copy_(torch.randn(param.shape, generator=gen) * 0.3)
    return arch


@pytest.fixture(scope="module")
def models(demo_home: Path) -> dict[str, Arch]:
    """sd15 with a strong random LoRA, the same base without adapters, flux with a LoRA."""
    return {
        "sd15": with_random_lora(load_arch(sample_cfg(), demo_home, CPU, torch.float32)),
        "base": load_arch(sample_cfg(), demo_home, CPU, torch.float32),
        "flux": with_random_lora(load_arch(sample_cfg("flux"), demo_home, CPU, torch.float32)),
    }


class Previews:
    """What one ``sample_and_log`` call made: images, per-image settings, schedulers, calls."""

    def __init__(self, images, settings, schedulers, denoiser_calls, logged) -> None:
        self.images: list[np.ndarray] = images
        self.settings: list[dict[str, Any]] = settings
        self.schedulers: list[str] = schedulers
        self.denoiser_calls: int = denoiser_calls
        self.logged: list[dict[str, Any]] = logged


def previews(arch: Arch, cfg: TrainingConfig, tmp_path: Path, monkeypatch) -> Previews:
    settings: list[dict[str, Any]] = []
    schedulers: list[str] = []
    real_one, real_scheduler = arch._sample_one, arch._sampling_scheduler

    def sample_one(**kwargs):
        settings.append(kwargs)
        return real_one(**kwargs)

    def sampling_scheduler(name):
        scheduler = real_scheduler(name)
        schedulers.append(type(scheduler).__name__)
        return scheduler

    monkeypatch.setattr(arch, "_sample_one", sample_one)
    monkeypatch.setattr(arch, "_sampling_scheduler", sampling_scheduler)
    calls = []
    hook = arch.denoiser.register_forward_hook(lambda *_: calls.append(1))
    tracker = RecordingTracker()
    ctx = RunContext(home=tmp_path, job_dir=tmp_path / "job", tracker=tracker)
    try:
        sample_and_log(arch, cfg, ctx, step=0)
    finally:
        hook.remove()
        monkeypatch.undo()
    images = [np.asarray(image, dtype=np.float64) for _, _, _, image in tracker.images]
    logged = [extra for _, _, extra, _ in tracker.images]
    return Previews(images, settings, schedulers, len(calls), logged)


def differ(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape != b.shape or float(np.abs(a - b).mean()) > 0.5


# ---------------------------------------------------------------------------- how images are made
def test_sampler_sets_the_scheduler_and_changes_the_image(models, tmp_path, monkeypatch) -> None:
    images = {}
    for name in ("ddpm", "euler", "euler_a", "dpmpp_2m"):
        got = previews(models["sd15"], sample_cfg(sampler=name), tmp_path, monkeypatch)
        assert got.schedulers == [SAMPLERS[name]]
        assert got.logged[0]["sampler"] == name
        images[name] = got.images[0]
    for a, b in combinations(images, 2):
        assert differ(images[a], images[b]), f"{a} and {b} gave the same image"
    auto = previews(models["sd15"], sample_cfg(sampler="auto"), tmp_path, monkeypatch)
    assert auto.schedulers == ["EulerDiscreteScheduler"]  # SD's auto answer
    flux = previews(models["flux"], sample_cfg("flux"), tmp_path, monkeypatch)
    assert flux.schedulers == ["FlowMatchEulerDiscreteScheduler"]
    assert flux.images[0].shape == (64, 64, 3)


def test_sample_steps_is_the_number_of_denoising_steps(models, tmp_path, monkeypatch) -> None:
    two = previews(models["sd15"], sample_cfg(sample_steps=2), tmp_path, monkeypatch)
    four = previews(models["sd15"], sample_cfg(sample_steps=4), tmp_path, monkeypatch)
    assert (two.denoiser_calls, four.denoiser_calls) == (2, 4)  # CFG runs batched: 1 call/step
    assert two.logged[0]["sample_steps"] == 2 and four.logged[0]["sample_steps"] == 4
    assert differ(two.images[0], four.images[0])


def test_guidance_scale_reaches_the_pipeline_and_changes_the_image(
    models, tmp_path, monkeypatch
) -> None:
    for arch in ("sd15", "flux"):
        low = previews(models[arch], sample_cfg(arch, guidance_scale=1.5), tmp_path, monkeypatch)
        high = previews(models[arch], sample_cfg(arch, guidance_scale=8.0), tmp_path, monkeypatch)
        assert low.settings[0]["guidance_scale"] == 1.5
        assert high.settings[0]["guidance_scale"] == 8.0
        assert differ(low.images[0], high.images[0]), arch


def test_seed_and_walk_seed(models, tmp_path, monkeypatch) -> None:
    prompts = ["[trigger] red circle"] * 3
    fixed = previews(models["sd15"], sample_cfg(prompts=prompts, seed=3), tmp_path, monkeypatch)
    assert [s["seed"] for s in fixed.settings] == [3, 3, 3]
    assert not differ(fixed.images[0], fixed.images[1])  # same prompt, same seed: same image
    other = previews(models["sd15"], sample_cfg(prompts=prompts, seed=4), tmp_path, monkeypatch)
    assert differ(fixed.images[0], other.images[0])
    walk = previews(
        models["sd15"], sample_cfg(prompts=prompts, seed=3, walk_seed=True), tmp_path, monkeypatch
    )
    assert [s["seed"] for s in walk.settings] == [3, 4, 5]  # seed + i
    assert [e["seed"] for e in walk.logged] == [3, 4, 5]
    assert not differ(walk.images[0], fixed.images[0])
    np.testing.assert_array_equal(walk.images[1], other.images[0])  # seed 4 either way
    assert differ(walk.images[1], walk.images[2])


def test_width_and_height_are_the_image_size(models, tmp_path, monkeypatch) -> None:
    got = previews(models["sd15"], sample_cfg(width=96, height=128), tmp_path, monkeypatch)
    assert got.images[0].shape == (128, 96, 3)
    flux = previews(models["flux"], sample_cfg("flux", width=96, height=64), tmp_path, monkeypatch)
    assert flux.images[0].shape == (64, 96, 3)


def test_negative_prompt_changes_the_image(models, tmp_path, monkeypatch) -> None:
    plain = previews(models["sd15"], sample_cfg(), tmp_path, monkeypatch)
    neg = previews(models["sd15"], sample_cfg(neg="blue square"), tmp_path, monkeypatch)
    assert plain.settings[0]["neg"] == "" and neg.settings[0]["neg"] == "blue square"
    assert differ(plain.images[0], neg.images[0])


def test_prompts_with_per_prompt_overrides_win(models, tmp_path, monkeypatch) -> None:
    override = {
        "prompt": "[trigger] blue square",
        "neg": "red",
        "seed": 9,
        "width": 96,
        "height": 128,
        "guidance_scale": 2.0,
        "sample_steps": 3,
        "network_multiplier": 0.5,
    }
    cfg = sample_cfg(prompts=[override, "plain [trigger]"], neg="green", walk_seed=True)
    got = previews(models["sd15"], cfg, tmp_path, monkeypatch)
    first, second = got.settings
    assert first == {
        "prompt": "sks blue square",
        "neg": "red",
        "seed": 9,  # beats walk_seed's seed + 0
        "width": 96,
        "height": 128,
        "steps": 3,
        "guidance_scale": 2.0,
    }
    assert second == {
        "prompt": "plain sks",
        "neg": "green",
        "seed": 2,  # walk_seed: seed 1 + 1
        "width": 64,
        "height": 64,
        "steps": 2,
        "guidance_scale": 5.0,
    }
    assert got.images[0].shape == (128, 96, 3) and got.images[1].shape == (64, 64, 3)
    assert got.denoiser_calls == 3 + 2
    assert [e["prompt"] for e in got.logged] == ["sks blue square", "plain sks"]
    # The per-prompt LoRA strength applies to its image only.
    full = previews(
        models["sd15"],
        sample_cfg(prompts=[{**override, "network_multiplier": 1.0}]),
        tmp_path,
        monkeypatch,
    )
    assert differ(full.images[0], got.images[0])


def test_network_multiplier_zero_is_the_base_model(models, tmp_path, monkeypatch) -> None:
    base = previews(models["base"], sample_cfg(), tmp_path, monkeypatch).images[0]
    off = previews(models["sd15"], sample_cfg(network_multiplier=0.0), tmp_path, monkeypatch)
    np.testing.assert_array_equal(off.images[0], base)
    full = previews(models["sd15"], sample_cfg(), tmp_path, monkeypatch).images[0]
    half = previews(models["sd15"], sample_cfg(network_multiplier=0.5), tmp_path, monkeypatch)
    assert differ(full, base) and differ(half.images[0], full)
    assert 0 < np.abs(half.images[0] - base).mean() < np.abs(full - base).mean()


def test_schema_refuses_sampling_options_that_cannot_work() -> None:
    flux = {"arch": "flux", "name_or_path": "demo:flux"}
    cases = [
        ({"model": flux, "sample": {"neg": "blurry"}}, "sample.neg", "negative prompt"),
        (
            {"model": flux, "sample": {"prompts": [{"prompt": "x", "neg": "y"}]}},
            "sample.prompts.0.neg",
            "negative prompt",
        ),
        ({"model": flux, "sample": {"sampler": "euler"}}, "sample.sampler", "flowmatch"),
        ({"sample": {"sampler": "flowmatch"}}, "sample.sampler", "Flux"),
        ({"sample": {"width": 100}}, "sample.width", "multiple of 8"),
    ]
    for sections, path, reason in cases:
        with pytest.raises(ValidationError) as info:
            tiny_config(**sections)
        assert path in str(info.value) and reason in str(info.value)


# ---------------------------------------------------------------------------- when images are made
def preview_run(home: Path, job: Path, stop=None, resume=None, **sample: Any):
    sample = {**SAMPLE, "sample_every": 2, "sample_steps": 1, **sample}
    cfg = tiny_config(train={"steps": 4}, sample=sample, save={"save_every": 2})
    return run(cfg, home, job, stop=stop, resume=resume)[1]


def test_when_previews_are_made(demo_home: Path, tmp_path: Path) -> None:
    assert preview_run(demo_home, tmp_path / "a").sample_steps() == [0, 2, 4]
    assert preview_run(demo_home, tmp_path / "b", sample_every=3).sample_steps() == [0, 3, 4]
    # No previews before sample_start_step, the baseline at step 0 included.
    assert preview_run(demo_home, tmp_path / "c", sample_start_step=3).sample_steps() == [4]
    assert preview_run(demo_home, tmp_path / "d", skip_first_sample=True).sample_steps() == [2, 4]


def test_force_first_sample_on_resume(demo_home: Path, tmp_path: Path) -> None:
    first = preview_run(demo_home, tmp_path / "plain", stop=StopAfter(2))
    assert first.sample_steps() == [0, 2]
    shutil.copytree(tmp_path / "plain", tmp_path / "forced")
    plain = preview_run(demo_home, tmp_path / "plain", resume=tmp_path / "plain")
    assert plain.sample_steps() == [4]  # a resumed run has had its baseline already
    forced = preview_run(
        demo_home, tmp_path / "forced", resume=tmp_path / "forced", force_first_sample=True
    )
    assert forced.sample_steps() == [2, 4]  # ... unless force_first_sample asks for one
    # force also beats sample_start_step for the baseline of a fresh run.
    fresh = preview_run(demo_home, tmp_path / "fresh", sample_start_step=3, force_first_sample=True)
    assert fresh.sample_steps() == [0, 4]
