"""Preview images during training: when they are due, which prompts, and logging them.

The previews use the run's sample settings (``cfg.sample``); ``[trigger]`` in a prompt becomes
the first dataset's trigger word. Only the main process samples. With
``model.refiner_name_or_path`` each preview is finished by the SDXL refiner
(``trainer.engine.refiner``), loaded on first use and kept in the run context.
"""

from __future__ import annotations

from typing import Any

from trainer.arch.base import Arch
from trainer.config.introspection import resolved
from trainer.config.schema import TrainingConfig
from trainer.engine.context import RunContext
from trainer.engine.refiner import Refiner


def wants_first_sample(cfg: TrainingConfig, resumed: bool) -> bool:
    if not cfg.sample.prompts or cfg.sample.sample_every == 0:
        return False
    if cfg.sample.skip_first_sample:
        return False
    # Step 0 is "before sample_start_step" unless that is 0; force_first_sample overrides both.
    return cfg.sample.force_first_sample or (not resumed and cfg.sample.sample_start_step == 0)


def sample_due(cfg: TrainingConfig, step: int, total: int) -> bool:
    every = cfg.sample.sample_every
    if not cfg.sample.prompts or every == 0 or step < cfg.sample.sample_start_step:
        return False
    return step % every == 0 or step == total


def sample_prompts(cfg: TrainingConfig) -> list[dict[str, Any]]:
    trigger = next((ds.trigger_word for ds in cfg.datasets if ds.trigger_word), "") or ""
    prompts = []
    for item in cfg.sample.prompts:
        spec = item.model_dump(exclude_none=True)
        spec["prompt"] = spec["prompt"].replace("[trigger]", trigger)
        prompts.append(spec)
    return prompts


def sample_and_log(arch: Arch, cfg: TrainingConfig, ctx: RunContext, step: int) -> None:
    if not ctx.dist.is_main:  # previews come from the main process only
        return
    ctx.phase("sampling", step=step)
    s = cfg.sample
    prompts = sample_prompts(cfg)
    if s.walk_seed:
        prompts = [{"seed": s.seed + i, **p} for i, p in enumerate(prompts)]
    sampler = resolved(cfg, "sampler")
    images = arch.sample(
        prompts,
        sampler=sampler,
        steps=s.sample_steps,
        guidance_scale=resolved(cfg, "guidance_scale"),
        width=s.width,
        height=s.height,
        seed=s.seed,
        neg=s.neg,
        lora_scale=s.network_multiplier,
    )
    if cfg.model.refiner_name_or_path:
        images = refine_previews(arch, cfg, ctx, images, prompts)
    for index, (image, spec) in enumerate(zip(images, prompts, strict=True)):
        ctx.tracker.log_image(
            image,
            key=f"sample_{index}",
            step=step,
            extra={
                "prompt": spec["prompt"],
                "seed": spec.get("seed", s.seed),
                "sampler": sampler,
                "sample_steps": spec.get("sample_steps", s.sample_steps),
            },
        )
    ctx.progress.update(samples=(ctx.progress.last.get("samples") or 0) + len(images))


def refine_previews(arch: Arch, cfg: TrainingConfig, ctx: RunContext, images, prompts) -> list:
    if ctx.refiner is None:
        ctx.refiner = Refiner(cfg.model.refiner_name_or_path, ctx.home, arch.device, arch.dtype)
    s = cfg.sample
    return [
        ctx.refiner.refine(
            image,
            spec["prompt"],
            spec.get("seed", s.seed),
            spec.get("sample_steps", s.sample_steps),
            float(resolved(cfg, "guidance_scale")),
        )
        for image, spec in zip(images, prompts, strict=True)
    ]
