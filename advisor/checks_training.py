"""Rules about the optimizer, learning rate, network, loss, sampling, resolution and names (the
run's length, schedule warmup, EMA and effective batch: ``advisor.checks_length``)."""

from __future__ import annotations

from collections.abc import Iterator

from advisor import intents
from advisor.decide_training import NO_8BIT, recommended_lr
from advisor.defaults import resolve_autos
from advisor.findings import Context, Finding, finding, rule
from trainer.config.fields import ARCH_DEFAULTS
from trainer.config.introspection import unresolved_autos
from trainer.tracking.run_names import free_name

LR_HIGH = {"sd15": 1e-3, "sdxl": 5e-4, "flux": 5e-4}
LR_LOW = 1e-5
# How far a rate may stray from the recommended one (``decide_training.recommended_lr``):
# above FAR_ABOVE× a warning, from ABSURD× an error (AdamW at 300× its rate turns a LoRA to noise
# within a few steps), below 1/FAR_BELOW a suggestion (the LoRA barely moves).
FAR_ABOVE, ABSURD, FAR_BELOW = 10.0, 300.0, 30.0
ADAPTIVE_OPTIMIZERS = frozenset({"prodigy"})  # find their own step size: lr is a multiplier ~1
OPTIMIZER_LR_SCALE = {"lion": 0.2}  # Lion's sign updates want 3-10x less than AdamW
OPTIMIZER_WORDS = {"adamw": "AdamW", "adamw8bit": "AdamW8bit", "adafactor": "Adafactor"}
RATE_WORDS = {
    "train.lr": "learning rate",
    "train.unet_lr": "U-Net learning rate",
    "train.text_encoder_lr": "text encoder learning rate",
}


def _lr(ctx: Context) -> float | None:
    train = ctx.cfg.train
    if train.unet_lr is not None:
        return train.unet_lr
    return train.lr if isinstance(train.lr, float | int) else None


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
    if ctx.cfg.train.optimizer != "lion" or lr is None or lr <= 1e-4 or lr_far_above(ctx):
        return  # far above, lr_off_scale says so with the recommended rate
    yield finding(
        "lion_lr",
        "warning",
        ("train.lr",),
        f"Lion's updates are larger than AdamW's: {lr:g} is likely too high; use 3-10x less",
        {"train.lr": float(f"{lr / 5:.2g}"), "train.unet_lr": None},
    )


def _rates(ctx: Context) -> list[tuple[str, float, float]]:
    """(path, rate, recommended rate) of each learning rate the run really uses: the U-Net's
    (``unet_lr``, else ``lr``) and, when the text encoder trains, its own (``text_encoder_lr``,
    else half of ``lr``: judged on ``lr``). Empty for adaptive optimizers and 'auto' rates."""
    train = ctx.cfg.train
    if train.optimizer in ADAPTIVE_OPTIMIZERS or not isinstance(train.lr, float | int):
        return []
    good = recommended_lr(ctx.cfg) * OPTIMIZER_LR_SCALE.get(train.optimizer, 1.0)
    found = {"train.unet_lr" if train.unet_lr is not None else "train.lr": (_lr(ctx), good)}
    if train.train_text_encoder:
        if train.text_encoder_lr is not None:
            found["train.text_encoder_lr"] = (train.text_encoder_lr, good / 2)
        else:
            found.setdefault("train.lr", (train.lr, good))
    return [(path, float(rate), rec) for path, (rate, rec) in found.items() if rate is not None]


def lr_far_above(ctx: Context) -> bool:
    """A rate more than ``FAR_ABOVE``× the recommended one (``lr_off_scale`` reports it)."""
    return any(rate > FAR_ABOVE * good for _path, rate, good in _rates(ctx))


@rule(
    "lr_off_scale",
    ("train.lr", "train.unet_lr", "train.text_encoder_lr", "train.optimizer"),
    "a learning rate many times off the recommended one",
)
def lr_off_scale(ctx: Context) -> Iterator[Finding]:
    cfg = ctx.cfg
    who = f"{OPTIMIZER_WORDS.get(cfg.train.optimizer, cfg.train.optimizer.title())} on "
    who += "the demo model" if ctx.demo else cfg.model.arch
    for path, rate, good in _rates(ctx):
        ratio, name = rate / good, RATE_WORDS[path]
        if ratio > FAR_ABOVE:
            absurd = ratio >= ABSURD
            yield finding(
                "lr_off_scale",
                "error" if absurd else "warning",
                (path,),
                f"{name} {rate:g} is {ratio:,.0f}x the recommended {good:.1e} for {who}: "
                + (
                    "every step overshoots, the loss diverges and the images turn to noise"
                    if absurd
                    else "steps overshoot, so the loss may diverge and the images turn to noise"
                ),
                {path: good},
            )
        elif ratio < 1 / FAR_BELOW and not (rate == _lr(ctx) and rate < LR_LOW):
            yield finding(  # below LR_LOW, lr_low warns about the U-Net's rate already
                "lr_off_scale",
                "suggestion",
                (path,),
                f"{name} {rate:g} is 1/{1 / ratio:,.0f} of the recommended {good:.1e} for "
                f"{who}: training will barely move the model in the steps it has",
                {path: good},
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
    if lr > LR_HIGH[cfg.model.arch] and not lr_far_above(ctx):  # else lr_off_scale says it
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
