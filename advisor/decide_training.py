"""The smart defaults' training choices: captions and augmentation, regularisation, the text
encoder, optimizer and learning rate, steps, schedule, training core, sampling and saving.

Each ``decide_*`` fills its part of a ``Draft`` (``advisor.defaults`` runs them in order); every
reason that names a number is computed from the values chosen (the previews a run really makes,
the repeats per image of the steps chosen).
"""

from __future__ import annotations

import math
from typing import Any

from advisor import intents
from advisor.dataset import DatasetInfo, repeats_per_image, run_steps, steps_for_repeats
from advisor.draft import DATASET_SOURCE, DEMO, SCHEMA, Draft
from advisor.intents import NOTES
from trainer.config.fields import ARCH_DEFAULTS
from trainer.config.schema import TrainingConfig


def decide_captions(d: Draft) -> None:
    prior = d.prior
    trigger = d.intent.trigger_word
    for i in d.datasets():
        if trigger or (not d.data["datasets"][i].get("trigger_word") and not d.only_auto):
            found = d.counted.folder(i) if d.counted else None  # never a missing folder
            if not trigger and found and found.caption_trigger:
                why = f"every caption already contains '{found.caption_trigger}'"
                d.set(f"datasets.{i}.trigger_word", found.caption_trigger, why, DATASET_SOURCE)
            else:
                d.set(f"datasets.{i}.trigger_word", trigger or "ohwx", "a rare token", NOTES)
        d.set_flag(
            f"datasets.{i}.flip_x",
            prior.flip_x,
            "mirroring doubles the variety of the images",
            "mirrored copies would teach faces, text and logos the wrong way round",
            NOTES,
        )
        d.set(
            f"datasets.{i}.caption_dropout_rate",
            0.05,
            "5% of steps without a caption: the LoRA also works without exact prompts",
            NOTES,
        )
        if prior.shuffle_tags:
            d.set_flag(
                f"datasets.{i}.shuffle_tokens",
                True,
                "tags in shuffled order: no tag order is learned",
                "tags keep the order they are written in",
                NOTES,
            )
            d.set(f"datasets.{i}.keep_tokens", 1, "the trigger stays first", NOTES)
    d.notes.append(f"Captions: {prior.caption_tip}.")


def decide_regularization(d: Draft) -> None:
    prior = d.prior
    cls = d.intent.class_word or prior.class_word
    dop = prior.preservation == "dop" and bool(cls)
    kind, priority = d.kind, d.intent.priority
    if dop:
        d.set("train.diff_output_preservation_class", cls, "the class your subject is", NOTES)
    d.set_flag(
        "train.diff_output_preservation",
        dop,
        f"keeps '{cls}' prompts unchanged, so only your subject is learned",
        "it needs a class word: tell the wizard what your subject is"
        if prior.preservation == "dop"
        else f"{kind} LoRAs have no single class of subject to keep unchanged",
        NOTES,
    )
    bpp = prior.preservation == "bpp" and priority != "speed"
    d.set_flag(
        "train.blank_prompt_preservation",
        bpp,
        "protects what the base model knows (an extra pass on an empty prompt)",
        "left out for speed: it adds a pass on an empty prompt to every step"
        if prior.preservation == "bpp"
        else f"{kind} LoRAs do without it; it adds a pass on an empty prompt to every step",
        NOTES,
    )
    ema = d.arch == "flux" and priority == "quality"
    d.set_flag(
        "train.use_ema",
        ema,
        "a smoother, less overfit result (EMA 0.99)",
        f"left out for {priority}: the averaged copy costs memory and time"
        if d.arch == "flux"
        else f"{d.arch} LoRAs do without it; the advisor turns EMA on for Flux at quality",
        NOTES,
    )
    if ema:
        d.set("train.ema_decay", 0.99, "the DiT prior", NOTES)


def decide_text_encoder(d: Draft) -> None:
    wanted = d.arch in d.prior.train_te
    train = wanted and d.intent.priority != "memory"
    datasets = d.data["datasets"]
    shuffles = d.prior.shuffle_tags or any(
        ds.get("shuffle_tokens") or ds.get("token_dropout_rate", 0) > 0 for ds in datasets
    )
    cache = not train and not shuffles
    unload = cache and (d.arch != "sd15" or d.intent.priority == "memory")
    caching = "docs/sources.md#caching-rules"
    cache_on = "captions do not change and the encoder is not trained: encoded once"
    cache_off = "the text encoder trains" if train else "captions change every step (tag shuffling)"
    unload_on = "frees the encoders' VRAM after caching"
    unload_off = (
        "SD1.5's text encoder is small: it stays loaded"
        if cache
        else "captions are encoded during training"
    )
    # In an order where every intermediate config is valid (the schema checks each pair).
    if not unload:
        d.set_flag("train.unload_text_encoder", False, unload_on, unload_off, NOTES)
    if not cache:
        d.set_flag("train.cache_text_embeddings", False, cache_on, cache_off, caching)
    d.set_flag(
        "train.train_text_encoder",
        train,
        f"helps {d.arch} learn the trigger",
        "U-Net only: saves the encoder's memory"
        if wanted
        else f"U-Net only for {d.kind} LoRAs on {d.arch}",
        NOTES,
    )
    if cache:
        d.set_flag("train.cache_text_embeddings", True, cache_on, cache_off, caching)
    if unload:
        d.set_flag("train.unload_text_encoder", True, unload_on, unload_off, NOTES)


# Why an 8-bit optimizer (bitsandbytes) is not recommended off an NVIDIA / AMD GPU. On a CPU,
# bitsandbytes 0.50's 8-bit AdamW step measured ~7x slower than torch's AdamW (1M LoRA
# parameters, one thread); it has no MPS kernel for the 8-bit update at all.
NO_8BIT = {
    "cpu": "8-bit optimizers pay off on a GPU: on a CPU their steps are several times slower "
    "than AdamW's, and memory is not what limits a CPU run",
    "apple": "bitsandbytes has no Apple (MPS) kernels for 8-bit optimizers",
}


def optimizer_for(device_kind: str) -> tuple[str, str]:
    """The optimizer for a device kind (nvidia | amd | apple | cpu) and why."""
    if device_kind in NO_8BIT:
        return "adamw", NO_8BIT[device_kind]
    return "adamw8bit", "the usual LoRA choice: AdamW with 8-bit state, a quarter of its memory"


def decide_optimizer(d: Draft) -> None:
    cfg = d.cfg()
    device_kind = d.profile.kind if cfg.runtime.device != "cpu" else "cpu"
    name, why = optimizer_for(device_kind)
    d.set("train.optimizer", name, why, NOTES)
    effective = _effective_batch(cfg)
    lr = learning_rate_for(d.kind, d.arch, effective, d.demo)
    why = f"{d.kind} on {d.arch} at effective batch {effective}"
    if effective > 2 and not d.demo:
        why += " (raised with the square root of the batch, within the usual band)"
    d.set(
        "train.lr",
        lr,
        "tiny demo model: a large step, so the loss moves within its few steps" if d.demo else why,
        NOTES,
    )
    d.set("train.unet_lr", None, "same as lr", SCHEMA)
    te_lr = lr / 2 if cfg.train.train_text_encoder else None
    te_why = "half the U-Net's rate" if te_lr else "the text encoder is not trained"
    d.set("train.text_encoder_lr", te_lr, te_why, NOTES)
    nf4 = cfg.model.quantize and cfg.model.qtype in ("nf4", "fp4")
    clip_why = "low clipping on a 4-bit base" if nf4 else "the usual clipping"
    d.set("train.max_grad_norm", 0.5 if nf4 else 1.0, clip_why, NOTES)


DEMO_LR = 1e-3  # the tiny demo model changes visibly in a few steps


def learning_rate_for(training_type: str, arch: str, effective_batch: int, demo: bool) -> float:
    """The learning rate the advisor recommends (AdamW family): the intent's prior for the arch,
    raised with the square root of an effective batch above 2 (within ``intents.LR_MAX``); on
    the demo model ``DEMO_LR``."""
    if demo:
        return DEMO_LR
    lr = intents.prior(training_type).lr[arch]
    if effective_batch > 2:
        lr = min(lr * math.sqrt(effective_batch / 2), intents.LR_MAX[arch])
    return float(f"{lr:.2g}")


def recommended_lr(cfg: TrainingConfig) -> float:
    """``learning_rate_for`` ``cfg``'s intent, arch, effective batch and base model: the value
    the wizard shows as recommended for ``train.lr``."""
    demo = str(cfg.model.name_or_path).startswith("demo:")
    return learning_rate_for(cfg.intent, cfg.model.arch, _effective_batch(cfg), demo)


def _effective_batch(cfg: TrainingConfig) -> int:
    batch = cfg.train.max_batch_size if cfg.train.auto_scale_batch_size else cfg.train.batch_size
    batch = batch if isinstance(batch, int) else 1
    return batch * cfg.train.gradient_accumulation_steps * cfg.runtime.num_processes


def decide_steps(d: Draft) -> None:
    if d.get("train.epochs") is not None:  # kept from the base: epochs would override any steps
        return  # their length stays the person's; checks_length says when it is off-band
    if d.demo:
        d.set("train.steps", 30, "tiny demo model: a short run through the whole loop", DEMO)
        return
    cfg = d.cfg()
    target = intents.target_repeats(d.kind, d.intent.priority)
    info = d.counted or DatasetInfo.counts(_typical_images(d))
    wanted = steps_for_repeats(cfg, info, target)
    low, high = intents.FLUX_STEPS if d.arch == "flux" else (100, intents.MAX_STEPS)
    steps = min(max(wanted, low), high)
    images = info.total_images
    scanned = "bucket-aware" if any(f.sizes for f in info.folders) else "no bucket sizes"
    repeats = repeats_per_image(cfg, info, steps)  # of the steps chosen, after the bounds
    why = f"≈{repeats:.0f} repeats per image over {images} images ({scanned})"
    if not d.counted:
        why = f"≈{repeats:.0f} repeats per image over {images} images, typical for {d.kind} "
        why += "LoRAs (your images are not counted yet)"
    if steps != wanted:
        most = "fewest" if steps == low else "most"
        why += f"; {steps} is the {most} steps advised for {d.arch} (≈{target} would take {wanted})"
    d.set("train.steps", steps, why, "docs/sources.md#step-arithmetic")


def _typical_images(d: Draft) -> int:
    low, high = d.prior.images
    return (low + high) // 2


def decide_schedule(d: Draft) -> None:
    name = "constant_with_warmup" if d.arch == "flux" else "cosine"
    d.set("train.lr_scheduler", name, "what the presets use for this arch", "presets")
    d.set("train.lr_scheduler_params.warmup_ratio", 0.05, "warmup ≈ 5% of steps", NOTES)
    d.set("train.lr_scheduler_params.warmup_steps", 0, "the ratio decides", NOTES)
    d.set("train.lr_scheduler_params.num_cycles", 1, "one decay", SCHEMA)


def decide_core(d: Draft) -> None:
    gamma = intents.MIN_SNR.get(d.arch)
    why = f"min-SNR {gamma} for {d.arch}" if gamma else "flow matching does not use min-SNR"
    d.set("train.min_snr_gamma", gamma, why, NOTES)
    for key in ("noise_scheduler", "timestep_type"):
        d.set(f"train.{key}", ARCH_DEFAULTS[d.arch][key], f"{d.arch}'s own", SCHEMA)
    bias = "style" if d.kind == "style" else "balanced"
    d.set("train.content_or_style", bias, "timestep bias for what you train", NOTES)


def decide_sampling(d: Draft) -> None:
    if not d.data["sample"]["prompts"] and not d.only_auto:
        cls = d.intent.class_word or d.prior.class_word or "subject"
        prompts = [{"prompt": p.format(cls=cls)} for p in intents.PROMPTS[d.kind]]
        d.set("sample.prompts", prompts, "previews that show the trigger at work", "studio")
    steps = run_steps(d.cfg(), d.counted) or 1000  # train.epochs made steps on the images
    every = preview_every(steps, d.demo)
    d.set("sample.sample_every", every, previews_reason(d.data["sample"], steps, every), "studio")
    d.set("sample.sampler", ARCH_DEFAULTS[d.arch]["sampler"], f"{d.arch}'s sampler", SCHEMA)
    d.set("sample.guidance_scale", ARCH_DEFAULTS[d.arch]["guidance_scale"], "typical", SCHEMA)
    d.set("save.save_every", every, "a checkpoint per preview", "studio")
    d.set("save.max_step_saves_to_keep", 4, "enough to go back, little disk", SCHEMA)


def previews_in_run(steps: int, every: int, start_step: int = 0) -> int:
    """How many previews a run of ``steps`` makes while training: at every multiple of ``every``
    from ``start_step`` on, and at the last step (``trainer.engine.previews.sample_due``)."""
    if every <= 0 or steps <= 0 or start_step > steps:
        return 0
    first = max(start_step, 1)
    multiples = steps // every - (first - 1) // every
    return multiples + (steps % every != 0)


def preview_every(steps: int, demo: bool) -> int:
    """The preview (and checkpoint) cadence for a run of ``steps``: about 8 over the run in
    round numbers, at least every 10 steps on the demo and every 50 on a real model."""
    return max(10 if demo else 50, round(steps / 8 / 50) * 50 or steps // 8)


def previews_reason(sample: dict[str, Any], steps: int, every: int) -> str:
    """Why preview every ``every`` steps, in numbers (``sample``: the config's sample section)."""
    count = previews_in_run(steps, every, sample["sample_start_step"])
    text = f"{count} preview{'s' if count != 1 else ''} over the {steps} steps (one every {every})"
    baseline = not sample["skip_first_sample"] and (
        sample["force_first_sample"] or sample["sample_start_step"] == 0
    )
    if baseline:
        text += ", and one before training to compare with"
    return text if sample["prompts"] else text + " once there are preview prompts"
