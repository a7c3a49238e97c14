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
from trainer.lora.usage import keep_preview


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


def preview_steps(cfg: TrainingConfig, start: int, total: int) -> list[int]:
    """The steps after ``start`` whose previews are due (the run's clock counts them)."""
    return [step for step in range(start + 1, total + 1) if sample_due(cfg, step, total)]


def sample_and_log(arch: Arch, cfg: TrainingConfig, ctx: RunContext, step: int) -> None:
    """One round of previews, image by image: each is logged as soon as it is made, and the
    progress says which image of the round is being made (and, through ``ctx.clock``, how long
    the rest of the run takes)."""
    if not ctx.dist.is_main:  # previews come from the main process only
        return
    s = cfg.sample
    prompts = sample_prompts(cfg)
    if s.walk_seed:
        prompts = [{"seed": s.seed + i, **p} for i, p in enumerate(prompts)]
    sampler = resolved(cfg, "sampler")
    with ctx.clock.preview_round(step, len(prompts)):
        ctx.phase("sampling", step=step, phase_done=0, phase_total=len(prompts))
        for index, spec in enumerate(prompts):
            with ctx.clock.preview_image():
                image = make_preview(arch, cfg, ctx, spec, sampler)
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
            keep_preview(ctx.job_dir, step, index, image)  # for the LoRA's model card
            ctx.phase_progress(done=index + 1, total=len(prompts))
    ctx.progress.update(samples=(ctx.progress.last.get("samples") or 0) + len(prompts))


def make_preview(arch: Arch, cfg: TrainingConfig, ctx: RunContext, spec: dict, sampler: str) -> Any:
    """One preview image (each has its own seeded generator: the same image as in a batch)."""
    s = cfg.sample
    image = arch.sample(
        [spec],
        sampler=sampler,
        steps=s.sample_steps,
        guidance_scale=resolved(cfg, "guidance_scale"),
        width=s.width,
        height=s.height,
        seed=s.seed,
        neg=s.neg,
        lora_scale=s.network_multiplier,
    )[0]
    if cfg.model.refiner_name_or_path:
        image = refine_previews(arch, cfg, ctx, [image], [spec])[0]
    return image


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
