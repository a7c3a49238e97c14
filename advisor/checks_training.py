"""Rules about the optimizer, learning rate, schedule, steps, network and sampling."""

from __future__ import annotations

import math
from collections.abc import Iterator

from advisor import intents
from advisor.dataset import repeats_per_image, run_steps, steps_for_repeats
from advisor.decide_training import NO_8BIT
from advisor.defaults import resolve_autos
from advisor.findings import Context, Finding, finding, rule
from trainer.config.fields import ARCH_DEFAULTS
from trainer.config.introspection import unresolved_autos
from trainer.tracking.run_names import free_name

LR_HIGH = {"sd15": 1e-3, "sdxl": 5e-4, "flux": 5e-4}
LR_LOW = 1e-5


def _lr(ctx: Context) -> float | None:
    train = ctx.cfg.train
    if train.unet_lr is not None:
        return train.unet_lr
    return train.lr if isinstance(train.lr, float | int) else None


def _steps(ctx: Context) -> int | None:
    """The steps the run will train: train.epochs made steps on the counted images."""
    return run_steps(ctx.cfg, ctx.counted)


def _steps_fix(ctx: Context, steps: int) -> dict[str, int | None]:
    """A fix to ``steps``; with epochs set they would win, so the fix clears them."""
    return {"train.steps": steps} | ({"train.epochs": None} if ctx.cfg.train.epochs else {})


@rule(
    "auto_unresolved",
    ("train.steps", "train.lr", "train.batch_size", "network.linear"),
    "decisions still 'auto'",
)
def auto_unresolved(ctx: Context) -> Iterator[Finding]:
    left = unresolved_autos(ctx.cfg)
    if not left:
        return
    fix = None
    if ctx.profile is not None:
        resolved = resolve_autos(ctx.cfg, ctx.profile, ctx.counted)
        fix = {path: r.value for path, r in ((p, resolved.get(p)) for p in left) if r}
    yield finding(
        "auto_unresolved",
        "error",
        left,
        f"{', '.join(left)} still 'auto': the advisor must choose before a run starts",
        fix,
    )


@rule("prodigy_lr", ("train.optimizer", "train.lr"), "Prodigy wants LR 1.0")
def prodigy_lr(ctx: Context) -> Iterator[Finding]:
    train = ctx.cfg.train
    if train.optimizer != "prodigy":
        return
    rates = [train.lr, train.unet_lr, train.text_encoder_lr]
    if all(r in (1.0, None, "auto") for r in rates) and train.lr == 1.0:
        return
    yield finding(
        "prodigy_lr",
        "warning",
        ("train.lr", "train.unet_lr", "train.text_encoder_lr"),
        "Prodigy finds its own step size; its 'lr' is a multiplier that should be 1.0",
        {"train.lr": 1.0, "train.unet_lr": None, "train.text_encoder_lr": None},
    )


@rule("prodigy_alpha", ("train.optimizer", "network.linear_alpha"), "Prodigy wants alpha = rank")
def prodigy_alpha(ctx: Context) -> Iterator[Finding]:
    net = ctx.cfg.network
    if ctx.cfg.train.optimizer != "prodigy" or not isinstance(net.linear, int):
        return
    if net.linear_alpha != net.linear:
        yield finding(
            "prodigy_alpha",
            "warning",
            ("network.linear_alpha",),
            "with Prodigy, alpha = rank: a smaller alpha only slows its adaptation",
            {"network.linear_alpha": float(net.linear)},
        )


@rule("lion_lr", ("train.optimizer", "train.lr"), "Lion wants a 3-10x smaller LR")
def lion_lr(ctx: Context) -> Iterator[Finding]:
    lr = _lr(ctx)
    if ctx.cfg.train.optimizer != "lion" or lr is None or lr <= 1e-4:
        return
    yield finding(
        "lion_lr",
        "warning",
        ("train.lr",),
        f"Lion's updates are larger than AdamW's: {lr:g} is likely too high; use 3-10x less",
        {"train.lr": float(f"{lr / 5:.2g}"), "train.unet_lr": None},
    )


@rule("optimizer_8bit_off_gpu", ("train.optimizer",), "8-bit optimizer without a GPU for it")
def optimizer_8bit_off_gpu(ctx: Context) -> Iterator[Finding]:
    work = ctx.work  # its device kind says "cpu" when runtime.device forces the CPU
    if ctx.cfg.train.optimizer != "adamw8bit" or work is None or work.device_kind not in NO_8BIT:
        return
    yield finding(
        "optimizer_8bit_off_gpu",
        "warning",
        ("train.optimizer",),
        f"adamw8bit on this machine: {NO_8BIT[work.device_kind]}; adamw trains the same LoRA",
        {"train.optimizer": "adamw"},
    )


@rule("lr_high", ("train.lr",), "learning rate far above the usual band")
def lr_high(ctx: Context) -> Iterator[Finding]:
    cfg, lr = ctx.cfg, _lr(ctx)
    if lr is None or cfg.train.optimizer in ("prodigy", "lion") or ctx.demo:
        return
    if lr > LR_HIGH[cfg.model.arch]:
        good = intents.prior(cfg.intent).lr[cfg.model.arch]
        yield finding(
            "lr_high",
            "warning",
            ("train.lr",),
            f"learning rate {lr:g} is high for {cfg.model.arch} LoRAs (usual up to "
            f"{LR_HIGH[cfg.model.arch]:g}): burnt, oversaturated samples are likely",
            {"train.lr": good, "train.unet_lr": None},
        )


@rule("lr_low", ("train.lr",), "learning rate so low the LoRA learns nothing")
def lr_low(ctx: Context) -> Iterator[Finding]:
    cfg, lr = ctx.cfg, _lr(ctx)
    if lr is None or cfg.train.optimizer == "prodigy" or lr >= LR_LOW:
        return
    good = intents.prior(cfg.intent).lr[cfg.model.arch]
    yield finding(
        "lr_low",
        "warning",
        ("train.lr",),
        f"learning rate {lr:g} is very low: the LoRA will barely change the model",
        {"train.lr": good, "train.unet_lr": None},
    )


@rule("te_lr_above_unet", ("train.text_encoder_lr", "train.lr"), "text encoder LR too high")
def te_lr_above_unet(ctx: Context) -> Iterator[Finding]:
    train, lr = ctx.cfg.train, _lr(ctx)
    te = train.text_encoder_lr
    if not train.train_text_encoder or te is None or lr is None or te <= lr:
        return
    yield finding(
        "te_lr_above_unet",
        "warning",
        ("train.text_encoder_lr",),
        f"the text encoder learns faster ({te:g}) than the U-Net ({lr:g}); it overfits "
        "quickly: half the U-Net's rate or less",
        {"train.text_encoder_lr": float(f"{lr / 2:.2g}")},
    )


@rule("sdxl_text_encoder", ("train.train_text_encoder",), "SDXL: train the U-Net only")
def sdxl_text_encoder(ctx: Context) -> Iterator[Finding]:
    cfg = ctx.cfg
    if cfg.model.arch == "sdxl" and cfg.train.train_text_encoder:
        yield finding(
            "sdxl_text_encoder",
            "suggestion",
            ("train.train_text_encoder",),
            "SDXL LoRAs train best U-Net only: its two text encoders overfit fast and cost memory",
            {"train.train_text_encoder": False, "train.text_encoder_lr": None},
        )


@rule("alpha_above_rank", ("network.linear_alpha", "network.linear"), "alpha above the rank")
def alpha_above_rank(ctx: Context) -> Iterator[Finding]:
    net = ctx.cfg.network
    if not isinstance(net.linear, int) or not isinstance(net.linear_alpha, float | int):
        return
    if net.linear_alpha > net.linear and ctx.cfg.train.optimizer != "prodigy":
        yield finding(
            "alpha_above_rank",
            "warning",
            ("network.linear_alpha",),
            f"alpha {net.linear_alpha:g} > rank {net.linear} multiplies every update by "
            f"{net.linear_alpha / net.linear:g}: like a higher learning rate",
            {"network.linear_alpha": float(net.linear)},
        )


@rule("rank_high_small_data", ("network.linear",), "a large rank on few images overfits")
def rank_high_small_data(ctx: Context) -> Iterator[Finding]:
    net = ctx.cfg.network
    if not ctx.has_data or not isinstance(net.linear, int) or net.linear < 64:
        return
    images = ctx.dataset.total_images
    if images < 20:
        share = (net.linear_alpha / net.linear) if isinstance(net.linear_alpha, float) else 0.5
        yield finding(
            "rank_high_small_data",
            "warning",
            ("network.linear",),
            f"rank {net.linear} on {images} images memorises them; 16-32 is plenty",
            {"network.linear": 16, "network.linear_alpha": float(16 * min(1.0, share))},
        )


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


@rule("min_snr_missing", ("train.min_snr_gamma",), "min-SNR helps SD models")
def min_snr_missing(ctx: Context) -> Iterator[Finding]:
    cfg = ctx.cfg
    gamma = intents.MIN_SNR.get(cfg.model.arch)
    if ctx.demo or cfg.train.learnable_snr_gos:
        return
    if gamma and cfg.train.min_snr_gamma is None:
        yield finding(
            "min_snr_missing",
            "suggestion",
            ("train.min_snr_gamma",),
            f"min-SNR gamma {gamma:g} learns faster and steadier on {cfg.model.arch}",
            {"train.min_snr_gamma": gamma},
        )


@rule("noise_offset_flux", ("train.noise_offset",), "noise offset is an SD trick")
def noise_offset_flux(ctx: Context) -> Iterator[Finding]:
    cfg = ctx.cfg
    if cfg.model.arch == "flux" and cfg.train.noise_offset > 0:
        yield finding(
            "noise_offset_flux",
            "suggestion",
            ("train.noise_offset",),
            "noise offset fixes SD's mid-grey bias; Flux's flow matching has no such bias and "
            "the offset only adds noise",
            {"train.noise_offset": 0.0},
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


@rule("samples_without_prompts", ("sample.prompts", "sample.sample_every"), "nothing to preview")
def samples_without_prompts(ctx: Context) -> Iterator[Finding]:
    sample = ctx.cfg.sample
    if sample.sample_every and not sample.prompts:
        yield finding(
            "samples_without_prompts",
            "suggestion",
            ("sample.prompts",),
            "no preview prompts: you will not see how the LoRA develops",
            {"sample.prompts": [{"prompt": "[trigger]"}, {"prompt": "[trigger], outdoors"}]},
        )


@rule(
    "prompts_without_trigger",
    ("sample.prompts", "datasets.0.trigger_word"),
    "previews that never use the trigger",
)
def prompts_without_trigger(ctx: Context) -> Iterator[Finding]:
    cfg = ctx.cfg
    triggers = [ds.trigger_word.lower() for ds in cfg.datasets if ds.trigger_word]
    if not triggers or not cfg.sample.prompts:
        return
    texts = [p.prompt.lower() for p in cfg.sample.prompts]
    if not any("[trigger]" in t or any(tr in t for tr in triggers) for t in texts):
        yield finding(
            "prompts_without_trigger",
            "suggestion",
            ("sample.prompts",),
            "no preview prompt contains '[trigger]' or the trigger word: previews will not show "
            "what the LoRA learned",
        )


@rule("sample_size_mismatch", ("sample.width", "sample.height"), "previews at another size")
def sample_size_mismatch(ctx: Context) -> Iterator[Finding]:
    cfg = ctx.cfg
    size = max(cfg.datasets[0].resolution)
    side = max(cfg.sample.width, cfg.sample.height)
    if side > 1.5 * size or side < size / 1.5:
        yield finding(
            "sample_size_mismatch",
            "suggestion",
            ("sample.width", "sample.height"),
            f"previews at {cfg.sample.width}×{cfg.sample.height} but training at {size} px: "
            "previews show more the size change than the LoRA",
            {"sample.width": size, "sample.height": size},
        )


@rule("resolution_off_native", ("datasets.0.resolution",), "far from the model's native size")
def resolution_off_native(ctx: Context) -> Iterator[Finding]:
    cfg = ctx.cfg
    if cfg.model.name_or_path.startswith("demo:"):
        return
    native = ARCH_DEFAULTS[cfg.model.arch]["native_resolution"]
    for i, ds in enumerate(cfg.datasets):
        size = max(ds.resolution)
        if size < native * 0.7 or size > native * 1.5:
            over = size > native
            yield finding(
                "resolution_off_native",
                "warning" if over else "suggestion",
                (f"datasets.{i}.resolution",),
                f"{size} px is far from {cfg.model.arch}'s native {native} px: "
                + ("repeated subjects and much more memory" if over else "softer detail"),
                {f"datasets.{i}.resolution": [native]} if over else None,
            )


@rule("output_name_exists", ("name",), "a run with this name exists")
def output_name_exists(ctx: Context) -> Iterator[Finding]:
    name = ctx.cfg.name
    if name not in ctx.existing_names:
        return
    free = free_name(name, ctx.existing_names)  # the name a launch gives it
    yield finding(  # a launch renames the run itself: nothing breaks
        "output_name_exists",
        "info",
        ("name",),
        f"'{name}' is already used by a run, so a launch names this one '{free}'; choose "
        "another name if you prefer",
        {"name": free},
    )


@rule(
    "preservation_for_subject",
    ("train.diff_output_preservation",),
    "people and objects keep their class with preservation",
)
def preservation_for_subject(ctx: Context) -> Iterator[Finding]:
    cfg = ctx.cfg
    if cfg.intent not in ("person", "object") or cfg.train.diff_output_preservation or ctx.demo:
        return
    if not any(ds.trigger_word for ds in cfg.datasets):
        return
    cls = intents.prior(cfg.intent).class_word
    yield finding(
        "preservation_for_subject",
        "suggestion",
        ("train.diff_output_preservation", "train.diff_output_preservation_class"),
        f"differential output preservation keeps '{cls or 'your class word'}' prompts "
        "unchanged, so the LoRA learns your subject and not the whole class",
        {"train.diff_output_preservation": True, "train.diff_output_preservation_class": cls}
        if cls
        else None,
    )
