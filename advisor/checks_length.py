"""Rules about how long a run trains and what follows from its length: the step count and the
repeats per image, the learning-rate warmup and restart cycles, the EMA horizon, the effective
batch, and how often the run previews and saves for its length. The steps are the advisor's count
of what the trainer will train (``advisor.dataset.run_steps``: ``train.epochs`` made steps on the
counted images, the held-out validation images left out)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

from advisor import intents
from advisor.dataset import repeats_per_image, run_steps, steps_for_repeats
from advisor.decide_training import previews_in_run
from advisor.findings import Context, Finding, finding, rule
from advisor.models import GIB
from advisor.predict import duration


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


# How often a run previews and saves for its length. About ten of each show the progress and
# leave LoRAs to go back to (what the studio's defaults aim at: advisor.decide_training); past
# twice that, each extra round or save costs time (previews) or disk (MLflow keeps every
# checkpoint's LoRA) and shows little new. A cadence kept from a short run (the demo's 30 steps
# with a preview and a checkpoint every 10) makes hundreds of them once the steps are raised.
TARGET_EVENTS = 10  # previews / saves the one-click fix aims at (at most this many)
MAX_EVENTS = 20  # more than this many previews or saves over the run is a warning
MAX_PREVIEW_SHARE = 0.25  # previews taking more than this share of the training time (predicted)
# Cadences a person would type (1, 2, 2.5, 5 × 10^n), up to the schema's largest.
NICE_CADENCES = (
    1,
    2,
    5,
    *(m * 10**n for n in range(6) for m in (10, 20, 25, 50) if m * 10**n <= 1_000_000),
)


def _nice_cadence(count: Callable[[int], int]) -> int | None:
    """The smallest nice cadence for which ``count(every)`` events are at most TARGET_EVENTS
    (None when even the largest the schema takes gives more)."""
    return next((n for n in NICE_CADENCES if count(n) <= TARGET_EVENTS), None)


def _length_words(ctx: Context, steps: int) -> str:
    epochs = ctx.cfg.train.epochs
    return f"{epochs} epochs ({steps} steps)" if epochs else f"{steps} steps"


def _preview_seconds(ctx: Context, rounds: int) -> tuple[float, float] | None:
    """Predicted seconds of ``rounds`` preview rounds and of the training steps (no profile,
    no prediction: None). The prediction's "sampling" part covers every preview image the run
    makes (the baseline before step 1 too); a round is one image per prompt."""
    pred = ctx.prediction
    if pred is None or not pred.preview_images:
        return None
    parts = pred.total_time.parts
    per_image = parts.get("sampling", 0.0) / pred.preview_images
    return per_image * len(ctx.cfg.sample.prompts) * rounds, parts.get("training", 0.0)


@rule(
    "previews_too_often",
    ("sample.sample_every", "train.steps", "sample.prompts", "sample.sample_steps"),
    "so many preview rounds that they cost much of the run's time",
)
def previews_too_often(ctx: Context) -> Iterator[Finding]:
    sample, steps = ctx.cfg.sample, _steps(ctx)
    if steps is None or sample.sample_every == 0 or not sample.prompts:
        return  # previews off, nothing to preview, or the length unknown

    def rounds_at(every: int) -> int:
        return previews_in_run(steps, every, sample.sample_start_step)

    every, rounds = sample.sample_every, rounds_at(sample.sample_every)
    timing = _preview_seconds(ctx, rounds)
    share = timing[0] / timing[1] if timing and timing[1] > 0 else None
    slow = share is not None and share > MAX_PREVIEW_SHARE and rounds > TARGET_EVENTS
    if rounds <= MAX_EVENTS and not slow:
        return
    images = rounds * len(sample.prompts)
    cost = f"{images} images"
    if timing is not None and share is not None:
        cost = f"~{duration(timing[0])} for {images} images: {share:.0%} of the "
        cost += f"~{duration(timing[1])} of training"
    better = _nice_cadence(rounds_at)
    advice = f"; a preview every {better} steps gives {rounds_at(better)}" if better else ""
    yield finding(
        "previews_too_often",
        "warning",
        ("sample.sample_every",),
        f"{_length_words(ctx, steps)} with a preview every {every} steps makes {rounds} preview "
        f"rounds ({cost}). About {TARGET_EVENTS} show the progress; more than {MAX_EVENTS}, or "
        f"previews taking over {MAX_PREVIEW_SHARE:.0%} of the training time, slow the run for "
        f"little{advice}",
        {"sample.sample_every": better} if better else None,
    )


@rule(
    "saves_too_often",
    ("save.save_every", "train.steps"),
    "so many checkpoints that they cost much time and disk",
)
def saves_too_often(ctx: Context) -> Iterator[Finding]:
    steps = _steps(ctx)
    if steps is None:
        return

    def saves_at(every: int) -> int:
        # A checkpoint at every multiple of save_every before the last step, and one at the end
        # (trainer.engine.loop): ceil(steps / every) in all.
        return -(-steps // every)

    every = ctx.cfg.save.save_every
    saves = saves_at(every)
    if saves <= MAX_EVENTS:
        return
    cost = "each writes the LoRA and the optimizer state, and MLflow keeps every one's LoRA"
    work = ctx.work
    if work is not None:
        copies = saves * (work.lora_params + work.te_lora_params) * work.save_bytes
        cost += f" ({_size(copies)} in all)" if copies >= 2**20 else ""
    if ctx.cfg.validation.enabled:
        cost += "; the validation images are scored at each"
    better = _nice_cadence(saves_at)
    advice = f"; a checkpoint every {better} steps gives {saves_at(better)}" if better else ""
    yield finding(
        "saves_too_often",
        "warning",
        ("save.save_every",),
        f"{_length_words(ctx, steps)} with a checkpoint every {every} steps makes {saves} "
        f"checkpoint saves: {cost}. About {TARGET_EVENTS} leave LoRAs to go back to; more than "
        f"{MAX_EVENTS} cost time and disk for little{advice}",
        {"save.save_every": better} if better else None,
    )


def _size(size: float) -> str:
    return f"~{size / GIB:.1f} GB" if size >= GIB / 10 else f"~{size / 2**20:.0f} MB"
