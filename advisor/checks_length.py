"""Rules about how long a run trains and what follows from its length: the step count and the
repeats per image, the learning-rate warmup and restart cycles, the EMA horizon, the effective
batch and the preview interval. The steps are the advisor's count of what the trainer will train
(``advisor.dataset.run_steps``: ``train.epochs`` made steps on the counted images, the held-out
validation images left out)."""

from __future__ import annotations

import math
from collections.abc import Iterator

from advisor import intents
from advisor.dataset import repeats_per_image, run_steps, steps_for_repeats
from advisor.findings import Context, Finding, finding, rule


def _steps(ctx: Context) -> int | None:
    """The steps the run will train: train.epochs made steps on the counted images."""
    return run_steps(ctx.cfg, ctx.counted)


def _steps_fix(ctx: Context, steps: int) -> dict[str, int | None]:
    """A fix to ``steps``; with epochs set they would win, so the fix clears them."""
    return {"train.steps": steps} | ({"train.epochs": None} if ctx.cfg.train.epochs else {})


@rule("steps_too_many", ("train.steps",), "more than 10,000 steps")
def steps_too_many(ctx: Context) -> Iterator[Finding]:
    steps = _steps(ctx)
    if steps is None or steps <= intents.MAX_STEPS:
        return
    fix = None
    if ctx.has_data:
        target = intents.target_repeats(ctx.cfg.intent, "balanced")
        better = min(intents.MAX_STEPS, steps_for_repeats(ctx.cfg, ctx.dataset, target))
        fix = _steps_fix(ctx, better)
    yield finding(
        "steps_too_many",
        "warning",
        ("train.steps",),
        f"{steps} steps: more than 10,000 is almost always a mistake (overfitting, days of "
        "compute)",
        fix,
    )


@rule("repeats_out_of_band", ("train.steps", "train.batch_size"), "repeats per image off-band")
def repeats_out_of_band(ctx: Context) -> Iterator[Finding]:
    cfg = ctx.cfg
    if not ctx.has_data or _steps(ctx) is None or cfg.intent == "other":
        return
    if ctx.demo:
        return
    repeats = repeats_per_image(cfg, ctx.dataset)
    low, high = intents.prior(cfg.intent).repeats
    if low * 0.5 <= repeats <= high * 2:
        return
    target = intents.target_repeats(cfg.intent, "balanced")
    steps = min(intents.MAX_STEPS, steps_for_repeats(cfg, ctx.dataset, target))
    what = "too few to learn" if repeats < low else "so many that it overfits"
    yield finding(
        "repeats_out_of_band",
        "warning",
        ("train.steps",),
        f"each image is seen about {repeats:.0f} times: {what} ({cfg.intent}: {low}-{high})",
        _steps_fix(ctx, steps),
    )


def _warmup(ctx: Context) -> int:
    train, steps = ctx.cfg.train, _steps(ctx)
    params = train.lr_scheduler_params
    if params.warmup_steps:
        return params.warmup_steps
    return round(params.warmup_ratio * steps) if steps is not None else 0


@rule(
    "warmup_with_constant",
    ("train.lr_scheduler", "train.lr_scheduler_params.warmup_ratio"),
    "the constant schedule ignores warmup",
)
def warmup_with_constant(ctx: Context) -> Iterator[Finding]:
    params = ctx.cfg.train.lr_scheduler_params
    if ctx.cfg.train.lr_scheduler == "constant" and (params.warmup_steps or params.warmup_ratio):
        yield finding(
            "warmup_with_constant",
            "warning",
            ("train.lr_scheduler", "train.lr_scheduler_params.warmup_steps"),
            "'constant' is flat from step 0 and ignores the warmup; use constant_with_warmup",
            {"train.lr_scheduler": "constant_with_warmup"},
        )


@rule(
    "warmup_vs_cycle",
    ("train.lr_scheduler_params.warmup_steps", "train.lr_scheduler_params.num_cycles"),
    "warmup longer than the first restart cycle",
)
def warmup_vs_cycle(ctx: Context) -> Iterator[Finding]:
    train, steps = ctx.cfg.train, _steps(ctx)
    cycles = train.lr_scheduler_params.num_cycles
    if train.lr_scheduler != "cosine_with_restarts" or steps is None:
        return
    warmup = _warmup(ctx)
    cycle = (steps - warmup) / cycles
    if warmup and warmup >= cycle:
        ratio = 0.05 if cycles < 19 else 0.0
        yield finding(
            "warmup_vs_cycle",
            "error",
            ("train.lr_scheduler_params.warmup_steps", "train.lr_scheduler_params.num_cycles"),
            f"the {warmup}-step warmup is as long as a restart cycle ({cycle:.0f} steps): the "
            "first cycles never reach the full rate",
            {
                "train.lr_scheduler_params.warmup_steps": 0,
                "train.lr_scheduler_params.warmup_ratio": ratio,
            },
        )


@rule("warmup_long", ("train.lr_scheduler_params.warmup_steps",), "warmup over 20% of the run")
def warmup_long(ctx: Context) -> Iterator[Finding]:
    steps, warmup = _steps(ctx), _warmup(ctx)
    if ctx.cfg.train.lr_scheduler == "constant" or steps is None:
        return
    if warmup > 0.2 * steps and ctx.cfg.train.lr_scheduler != "cosine_with_restarts":
        yield finding(
            "warmup_long",
            "warning",
            ("train.lr_scheduler_params.warmup_steps", "train.lr_scheduler_params.warmup_ratio"),
            f"warmup takes {warmup} of {steps} steps; about 5% is enough",
            {
                "train.lr_scheduler_params.warmup_steps": 0,
                "train.lr_scheduler_params.warmup_ratio": 0.05,
            },
        )


@rule(
    "restarts_one_cycle",
    ("train.lr_scheduler", "train.lr_scheduler_params.num_cycles"),
    "restarts with one cycle is plain cosine",
)
def restarts_one_cycle(ctx: Context) -> Iterator[Finding]:
    train = ctx.cfg.train
    if train.lr_scheduler == "cosine_with_restarts" and train.lr_scheduler_params.num_cycles == 1:
        yield finding(
            "restarts_one_cycle",
            "suggestion",
            ("train.lr_scheduler_params.num_cycles",),
            "cosine_with_restarts with one cycle never restarts; set num_cycles (e.g. 3) or "
            "use cosine",
            {"train.lr_scheduler": "cosine"},
        )


@rule("ema_too_slow", ("train.ema_decay", "train.steps"), "EMA slower than the run")
def ema_too_slow(ctx: Context) -> Iterator[Finding]:
    train, steps = ctx.cfg.train, _steps(ctx)
    if not train.use_ema or steps is None:
        return
    horizon = 1 / (1 - train.ema_decay)
    if horizon > steps / 2:
        decay = 0.99 if steps < 2000 else 0.999
        yield finding(
            "ema_too_slow",
            "warning",
            ("train.ema_decay",),
            f"EMA {train.ema_decay} averages over ~{horizon:.0f} steps, more than half of "
            f"the {steps}-step run: the saved LoRA would lag far behind",
            {"train.ema_decay": decay},
        )


@rule(
    "effective_batch",
    ("train.gradient_accumulation_steps", "runtime.num_processes", "train.lr"),
    "accumulation multiplies the effective batch",
)
def effective_batch(ctx: Context) -> Iterator[Finding]:
    cfg = ctx.cfg
    accum, processes = cfg.train.gradient_accumulation_steps, cfg.runtime.num_processes
    if accum * processes <= 1:
        return
    batch = cfg.train.batch_size if isinstance(cfg.train.batch_size, int) else 1
    total = batch * processes * accum
    yield finding(  # what the chosen accumulation means: nothing to change
        "effective_batch",
        "info",
        ("train.gradient_accumulation_steps", "train.batch_size", "train.lr"),
        f"effective batch = {batch} per step × {accum} accumulation"
        + (f" × {processes} processes" if processes > 1 else "")
        + f" = {total}: each optimizer step sees {total} images"
        + (" (each process trains its own share of the images)" if processes > 1 else "")
        + ", so fewer steps give the same "
        f"repeats per image; if you keep the steps, scale the LR by about √{total // batch} = "
        f"{math.sqrt(total / batch):.2g}×",
    )


@rule("sample_every_beyond_steps", ("sample.sample_every", "train.steps"), "no previews in-run")
def sample_every_beyond_steps(ctx: Context) -> Iterator[Finding]:
    steps, every = _steps(ctx), ctx.cfg.sample.sample_every
    if steps is None or every == 0 or every <= steps or not ctx.cfg.sample.prompts:
        return
    yield finding(
        "sample_every_beyond_steps",
        "suggestion",
        ("sample.sample_every",),
        f"previews every {every} steps in a {steps}-step run: you will not see progress",
        {"sample.sample_every": max(1, steps // 4)},
    )
