"""Intent-driven smart defaults: what you train + your priorities + this machine → a config.

``recommend(intent, arch, profile, info)`` returns a complete ``TrainingConfig`` and one
``Recommendation(path, value, reason, source)`` for every value it sets. ``resolve_autos(cfg,
...)`` answers only the fields a config leaves "auto" and keeps every other choice.

The deciders run in dependency order: model and size → precision and devices → adapter → captions and
augmentation → regularisation → text encoder → caching → batch (seed formula, then the VRAM
model) → memory fit → data loading → optimizer and LR (scaled by the batch) → steps (target
repeats per image, bucket-aware) → schedule → training core → sampling and saving.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from advisor import intents, seed_formulas
from advisor.dataset import DatasetInfo, steps_for_repeats
from advisor.fit import budget_gb, fit_to_memory, predicted_gb
from advisor.intents import NOTES, IntentPrior
from advisor.memory import latent_bytes, text_bytes
from advisor.models import FLUX_TARGETS, GIB, SD_TARGETS
from advisor.patch import default_of
from advisor.profile import SystemProfile
from advisor.workload import resolved_dtype, variants, workload
from trainer.config.fields import ARCH_DEFAULTS
from trainer.config.paths import get_path, set_path
from trainer.config.schema import TrainingConfig

VRAM_SOURCE = "advisor VRAM model (calibrated on docs/sources.md#published-memory-figures)"
SCHEMA = "trainer/config/fields.py ARCH_DEFAULTS"


@dataclass(frozen=True)
class UserIntent:
    training_type: str = "other"  # person | character | style | object | concept | other
    priority: str = "quality"  # quality | speed | memory
    experience: str = "beginner"  # beginner | intermediate | advanced
    class_word: str | None = None  # e.g. "woman", "dog": enables differential preservation
    trigger_word: str | None = None


@dataclass(frozen=True)
class Recommendation:
    path: str
    value: Any
    reason: str
    source: str


@dataclass(frozen=True)
class Recommended:
    config: TrainingConfig
    recommendations: tuple[Recommendation, ...]
    notes: tuple[str, ...] = ()

    def get(self, path: str) -> Recommendation | None:
        return next((r for r in self.recommendations if r.path == path), None)

    def patch(self) -> dict[str, Any]:
        return {r.path: r.value for r in self.recommendations}


@dataclass
class Draft:
    """A config being filled in; in ``only_auto`` mode it changes only fields left "auto"."""

    data: dict[str, Any]
    intent: UserIntent
    profile: SystemProfile
    info: DatasetInfo | None
    only_auto: bool = False
    recs: dict[str, Recommendation] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def arch(self) -> str:
        return self.data["model"]["arch"]

    @property
    def prior(self) -> IntentPrior:
        return intents.prior(self.intent.training_type)

    @property
    def demo(self) -> bool:
        return str(self.data["model"]["name_or_path"]).startswith("demo:")

    def get(self, path: str) -> Any:
        return get_path(self.data, path)

    def set(self, path: str, value: Any, reason: str, source: str) -> None:
        if self.only_auto and self.get(path) != "auto":
            return
        before = copy.deepcopy(self.get(path))
        set_path(self.data, path, value)
        if self.only_auto and not self._valid():
            set_path(self.data, path, before)  # an answer that clashes with a choice the user made
            return
        self.recs[path] = Recommendation(path, value, reason, source)

    def _valid(self) -> bool:
        try:
            self.cfg()
        except ValueError:
            return False
        return True

    def cfg(self) -> TrainingConfig:
        return TrainingConfig.model_validate(self.data)

    def datasets(self) -> list[int]:
        return [i for i, ds in enumerate(self.data["datasets"]) if not ds.get("is_reg")]


# ------------------------------------------------------------------------------- deciders
def _model(d: Draft) -> None:
    d.set("intent", _intent_name(d), "what you said you are training", "wizard preflight")
    path = str(d.data["model"]["name_or_path"])
    if path.startswith("demo:") and path != f"demo:{d.arch}":
        d.set("model.name_or_path", f"demo:{d.arch}", "the demo model of this arch", "studio")


def _intent_name(d: Draft) -> str:
    kind = d.intent.training_type
    return kind if kind in intents.PRIORS else "other"


def _resolution(d: Draft) -> None:
    size = 64 if d.demo else ARCH_DEFAULTS[d.arch]["native_resolution"]
    why = "tiny demo model" if d.demo else f"{d.arch}'s native size: its best quality"
    for i in d.datasets():
        d.set(f"datasets.{i}.resolution", [size], why, SCHEMA)
    d.set("sample.width", size, "previews at the training size", SCHEMA)
    d.set("sample.height", size, "previews at the training size", SCHEMA)


def _precision(d: Draft) -> None:
    profile = d.profile
    d.set("runtime.device", profile.device, f"detected {profile.label}", "system profile")
    device = profile.device
    if device == "cpu":
        dtype, why = "fp32", "fp32 is the fastest dtype on CPU; fp16 crashes there"
    elif profile.bf16:
        dtype, why = "bf16", f"{profile.label} supports bf16: fp32's range at half the memory"
    elif d.arch == "flux":
        dtype, why = "fp32", "no bf16 on this GPU, and fp16 Flux gives NaN/black images"
    else:
        dtype, why = "fp16", "no bf16 on this GPU; fp16 halves memory"
    d.set("train.dtype", dtype, why, "docs/sources.md#nan-and-black-images")
    vae = "fp32" if d.arch == "sdxl" and dtype == "fp16" else dtype
    vae_why = "SDXL's VAE gives NaN in fp16" if vae != dtype else "same as training"
    d.set("model.vae_dtype", vae, vae_why, "docs/sources.md#nan-and-black-images")
    d.set("model.te_dtype", dtype, "same as training", SCHEMA)


def _network(d: Draft) -> None:
    prior, arch = d.prior, d.arch
    kind = prior.network.get(arch, "lora")
    d.set("network.type", kind, f"{kind} suits {_intent_name(d)} LoRAs on {arch}", NOTES)
    rank = prior.rank[arch]
    images = d.info.total_images if d.info and d.info.folders else None
    if images is not None and images < 10 and rank > 16:
        rank = 16
    d.set("network.linear", rank, f"rank {rank} for {_intent_name(d)} on {arch}", NOTES)
    current = d.get("network.linear")
    rank = current if isinstance(current, int) else rank
    alpha = float(rank * prior.alpha_share[arch])
    how = "alpha = rank (neutral scale)" if alpha == rank else "alpha = rank/2 (gentler)"
    d.set("network.linear_alpha", alpha, how, NOTES)


def _captions(d: Draft) -> None:
    prior = d.prior
    trigger = d.intent.trigger_word
    for i in d.datasets():
        if trigger or (not d.data["datasets"][i].get("trigger_word") and not d.only_auto):
            found = d.info.folder(i) if d.info else None
            if not trigger and found and found.caption_trigger:
                why = f"every caption already contains '{found.caption_trigger}'"
                d.set(f"datasets.{i}.trigger_word", found.caption_trigger, why, "your dataset")
            else:
                d.set(f"datasets.{i}.trigger_word", trigger or "ohwx", "a rare token", NOTES)
        flip = prior.flip_x
        why = "mirroring doubles variety" if flip else "faces, text and logos are asymmetric"
        d.set(f"datasets.{i}.flip_x", flip, why, NOTES)
        d.set(f"datasets.{i}.caption_dropout_rate", 0.05, "works without exact prompts", NOTES)
        if prior.shuffle_tags:
            d.set(f"datasets.{i}.shuffle_tokens", True, "no tag order is learned", NOTES)
            d.set(f"datasets.{i}.keep_tokens", 1, "the trigger stays first", NOTES)
    d.notes.append(f"Captions: {prior.caption_tip}.")


def _regularization(d: Draft) -> None:
    prior = d.prior
    cls = d.intent.class_word or prior.class_word
    dop = prior.preservation == "dop" and bool(cls)
    if dop:
        d.set("train.diff_output_preservation_class", cls, "the class your subject is", NOTES)
    d.set("train.diff_output_preservation", dop, _dop_reason(dop, cls), NOTES)
    bpp = prior.preservation == "bpp" and d.intent.priority != "speed"
    d.set("train.blank_prompt_preservation", bpp, "protects what the base model knows", NOTES)
    ema = d.arch == "flux" and d.intent.priority == "quality"
    d.set("train.use_ema", ema, "a smoother, less overfit result (EMA 0.99)", NOTES)
    if ema:
        d.set("train.ema_decay", 0.99, "the DiT prior", NOTES)


def _dop_reason(dop: bool, cls: str | None) -> str:
    if dop:
        return f"keeps '{cls}' prompts unchanged, so only your subject is learned"
    return "off: it needs a class word (tell the wizard what your subject is)"


def _text_encoder(d: Draft) -> None:
    train = d.arch in d.prior.train_te and d.intent.priority != "memory"
    why = "helps SD1.5 learn the trigger" if train else f"U-Net only for {d.arch}"
    datasets = d.data["datasets"]
    shuffles = d.prior.shuffle_tags or any(
        ds.get("shuffle_tokens") or ds.get("token_dropout_rate", 0) > 0 for ds in datasets
    )
    cache = not train and not shuffles
    reason = "captions fixed: encode once" if cache else "captions change or the encoder trains"
    unload = cache and (d.arch != "sd15" or d.intent.priority == "memory")
    # In an order where every intermediate config is valid (the schema checks each pair).
    if not unload:
        d.set("train.unload_text_encoder", False, "the encoders are needed", NOTES)
    if not cache:
        d.set("train.cache_text_embeddings", False, reason, "docs/sources.md#caching-rules")
    d.set("train.train_text_encoder", train, why, NOTES)
    if cache:
        d.set("train.cache_text_embeddings", True, reason, "docs/sources.md#caching-rules")
    if unload:
        d.set("train.unload_text_encoder", True, "frees the encoders' VRAM after caching", NOTES)


def _caching(d: Draft) -> None:
    cfg = d.cfg()
    w = workload(cfg, d.profile, d.info)
    per_image = latent_bytes(w) + (text_bytes(w) if cfg.train.cache_text_embeddings else 0)
    images = sum(ds.images for ds in d.info.folders) if d.info and d.info.folders else 40
    flips = max((variants(ds) for ds in cfg.datasets), default=1)
    cache = seed_formulas.caching_defaults(d.profile, images * flips * per_image / GIB)
    for i in d.datasets():
        ds = cfg.datasets[i]
        if ds.augmentations or ds.random_crop or ds.random_scale:
            continue
        d.set(
            f"datasets.{i}.cache_latents", cache.cache_latents, cache.reason, seed_formulas.SOURCE
        )
        d.set(
            f"datasets.{i}.cache_latents_to_disk", cache.to_disk, cache.reason, seed_formulas.SOURCE
        )


def _batch(d: Draft) -> None:
    if d.demo:
        d.set("train.batch_size", 2, "tiny demo model", "presets/demo_*.yaml")
        return
    if d.arch == "flux":
        d.set("train.batch_size", 1, "DiT prior: batch 1, more steps", NOTES)
        d.set("train.auto_scale_batch_size", False, "fixed batch for Flux", NOTES)
        return
    size = max(d.cfg().datasets[0].resolution)
    seed = seed_formulas.batch_defaults(d.profile.usable_vram_gb, size, d.intent.priority)
    batch, most = seed.batch_size, seed.max_batch_size
    batch, most = _cap_batch(d, batch, most)
    src = f"{seed_formulas.SOURCE} + {VRAM_SOURCE}"
    why = f"seed formula gave {seed.batch_size}; {batch} fits the predicted VRAM"
    d.set("train.batch_size", batch, why, src)
    auto = seed.auto_scale and most > batch
    d.set("train.auto_scale_batch_size", auto, _auto_reason(d, auto), seed_formulas.SOURCE)
    d.set(
        "train.min_batch_size", 1, "an auto-scaled batch starts its ramp at 1", seed_formulas.SOURCE
    )
    d.set("train.max_batch_size", max(most, batch), "the largest batch that fits", src)
    d.set(
        "train.batch_size_warmup_steps",
        seed.warmup_steps,
        "the batch ramps up over the first 100 steps",
        seed_formulas.SOURCE,
    )


def _auto_reason(d: Draft, auto: bool) -> str:
    if auto:
        return "grow the batch over the first steps (priority is not quality)"
    return "a fixed batch keeps the effective learning rate steady"


def _cap_batch(d: Draft, batch: int, most: int) -> tuple[int, int]:
    images = d.info.total_images if d.info and d.info.folders else None
    if images:
        batch, most = min(batch, images), min(most, images)
    cfg = d.cfg()
    while most > 1 and predicted_gb(_with_batch(cfg, most), d.profile, d.info) > budget_gb(
        d.profile
    ):
        most //= 2
    while batch > 1 and predicted_gb(_with_batch(cfg, batch), d.profile, d.info) > budget_gb(
        d.profile
    ):
        batch //= 2
    return batch, max(most, batch)


def _with_batch(cfg: TrainingConfig, batch: int) -> TrainingConfig:
    return cfg.model_copy(
        update={
            "train": cfg.train.model_copy(
                update={"batch_size": batch, "auto_scale_batch_size": False}
            )
        }
    )


def _fit(d: Draft) -> None:
    if d.demo:
        return
    cfg = d.cfg()
    if d.intent.priority == "speed" and _fits_without_checkpointing(cfg, d):
        d.set("train.gradient_checkpointing", False, "fits without it: ~25% faster", VRAM_SOURCE)
        return
    fitted, rungs = fit_to_memory(cfg, d.profile, d.info)
    for rung in rungs:
        for path, value in rung.patch.items():
            d.set(path, default_of(path) if value is None else value, rung.reason, VRAM_SOURCE)
    if predicted_gb(fitted, d.profile, d.info) > budget_gb(d.profile):
        d.notes.append(
            f"Even with every memory saving this run is predicted above the "
            f"{d.profile.usable_vram_gb:.0f} GB available: expect out-of-memory errors."
        )


def _fits_without_checkpointing(cfg: TrainingConfig, d: Draft) -> bool:
    trial = cfg.model_copy(
        update={"train": cfg.train.model_copy(update={"gradient_checkpointing": False})}
    )
    return predicted_gb(trial, d.profile, d.info) <= budget_gb(d.profile) * 0.9


def _loading(d: Draft) -> None:
    workers, persistent = seed_formulas.worker_defaults(d.profile)
    src = seed_formulas.SOURCE
    d.set("runtime.num_workers", workers, "one loader per 8 GB RAM, at most the cores", src)
    d.set("runtime.persistent_workers", persistent, "keep loaders between epochs", src)
    prefetch = seed_formulas.prefetch_defaults(d.profile, d.intent.priority)
    d.set("runtime.gpu_prefetch_batches", prefetch, f"{d.profile.disk_type} storage", src)
    d.notes.extend(seed_formulas.unified_memory_notes(d.profile))


def _optimizer(d: Draft) -> None:
    cfg = d.cfg()
    apple = d.profile.kind == "apple"
    name = "adamw" if apple else "adamw8bit"
    why = "bitsandbytes has no Apple backend" if apple else "the usual LoRA choice, 8-bit state"
    d.set("train.optimizer", name, why, NOTES)
    lr = 1e-3 if d.demo else d.prior.lr[d.arch]
    effective = _effective_batch(cfg)
    if effective > 2 and not d.demo:
        lr = min(lr * math.sqrt(effective / 2), intents.LR_MAX[d.arch])
    lr = float(f"{lr:.2g}")
    d.set("train.lr", lr, f"{_intent_name(d)} on {d.arch}, effective batch {effective}", NOTES)
    d.set("train.unet_lr", None, "same as lr", SCHEMA)
    te_lr = lr / 2 if cfg.train.train_text_encoder else None
    te_why = "half the U-Net's rate" if te_lr else "the text encoder is not trained"
    d.set("train.text_encoder_lr", te_lr, te_why, NOTES)
    nf4 = cfg.model.quantize and cfg.model.qtype in ("nf4", "fp4")
    clip_why = "low clipping on a 4-bit base" if nf4 else "the usual clipping"
    d.set("train.max_grad_norm", 0.5 if nf4 else 1.0, clip_why, NOTES)


def _effective_batch(cfg: TrainingConfig) -> int:
    batch = cfg.train.max_batch_size if cfg.train.auto_scale_batch_size else cfg.train.batch_size
    batch = batch if isinstance(batch, int) else 1
    return batch * cfg.train.gradient_accumulation_steps * cfg.runtime.num_processes


def _steps(d: Draft) -> None:
    if d.demo:
        d.set("train.steps", 30, "tiny demo model: a minute on CPU", "presets/demo_*.yaml")
        return
    cfg = d.cfg()
    target = intents.target_repeats(_intent_name(d), d.intent.priority)
    info = d.info if d.info and d.info.folders else DatasetInfo.counts(_typical_images(d))
    steps = steps_for_repeats(cfg, info, target)
    low, high = intents.FLUX_STEPS if d.arch == "flux" else (100, intents.MAX_STEPS)
    steps = min(max(steps, low), high)
    images = info.total_images
    scanned = "bucket-aware" if any(f.sizes for f in info.folders) else "no bucket sizes"
    why = f"≈{target} repeats per image over {images} images ({scanned})"
    d.set("train.steps", steps, why, "docs/sources.md#step-arithmetic")


def _typical_images(d: Draft) -> int:
    low, high = d.prior.images
    return (low + high) // 2


def _schedule(d: Draft) -> None:
    name = "constant_with_warmup" if d.arch == "flux" else "cosine"
    d.set("train.lr_scheduler", name, "what the presets use for this arch", "presets")
    d.set("train.lr_scheduler_params.warmup_ratio", 0.05, "warmup ≈ 5% of steps", NOTES)
    d.set("train.lr_scheduler_params.warmup_steps", 0, "the ratio decides", NOTES)
    d.set("train.lr_scheduler_params.num_cycles", 1, "one decay", SCHEMA)


def _core(d: Draft) -> None:
    gamma = intents.MIN_SNR.get(d.arch)
    why = f"min-SNR {gamma} for {d.arch}" if gamma else "flow matching does not use min-SNR"
    d.set("train.min_snr_gamma", gamma, why, NOTES)
    for key in ("noise_scheduler", "timestep_type"):
        d.set(f"train.{key}", ARCH_DEFAULTS[d.arch][key], f"{d.arch}'s own", SCHEMA)
    bias = "style" if _intent_name(d) == "style" else "balanced"
    d.set("train.content_or_style", bias, "timestep bias for what you train", NOTES)


def _sampling(d: Draft) -> None:
    steps = d.cfg().train.steps
    steps = steps if isinstance(steps, int) else 1000
    every = max(10 if d.demo else 50, round(steps / 8 / 50) * 50 or steps // 8)
    d.set("sample.sample_every", every, "about 8 previews over the run", "studio")
    d.set("sample.sampler", ARCH_DEFAULTS[d.arch]["sampler"], f"{d.arch}'s sampler", SCHEMA)
    d.set("sample.guidance_scale", ARCH_DEFAULTS[d.arch]["guidance_scale"], "typical", SCHEMA)
    if not d.data["sample"]["prompts"] and not d.only_auto:
        cls = d.intent.class_word or d.prior.class_word or "subject"
        prompts = [{"prompt": p.format(cls=cls)} for p in intents.PROMPTS[_intent_name(d)]]
        d.set("sample.prompts", prompts, "previews that show the trigger at work", "studio")
    d.set("save.save_every", every, "a checkpoint per preview", "studio")
    d.set("save.max_step_saves_to_keep", 4, "enough to go back, little disk", SCHEMA)


def _technical(d: Draft) -> None:
    device = d.profile.device
    d.set("model.attention_backend", "native", "PyTorch's scaled-dot-product attention", SCHEMA)
    d.set("model.vae_device", device, "with the model", SCHEMA)
    d.set("model.te_device", device, "with the model", SCHEMA)
    targets = list(FLUX_TARGETS if d.arch == "flux" else SD_TARGETS)
    d.set("network.target_modules", targets, "the attention projections", "trainer/arch/base.py")


DECIDERS: tuple[Callable[[Draft], None], ...] = (
    _model,
    _resolution,
    _precision,
    _technical,
    _network,
    _captions,
    _regularization,
    _text_encoder,
    _caching,
    _batch,
    _fit,
    _loading,
    _optimizer,
    _steps,
    _schedule,
    _core,
    _sampling,
)


# ------------------------------------------------------------------------------------ API
def recommend(
    intent: UserIntent,
    arch: str,
    profile: SystemProfile,
    info: DatasetInfo | None = None,
    base: TrainingConfig | None = None,
) -> Recommended:
    """A complete recommended config (names, folders and prompts kept from ``base``)."""
    return _run(Draft(_fresh(base, arch), intent, profile, info))


# What a person chose that is not a training choice: kept from the base config.
KEPT_MODEL = (
    "name_or_path",
    "vae_path",
    "te_name_or_path",
    "components_from",
    "lora_path",
    "accuracy_recovery_adapter",
)
KEPT_DATASET = (
    "folder_path",
    "trigger_word",
    "caption_ext",
    "default_caption",
    "num_repeats",
    "is_reg",
    "loss_multiplier",
    "augmentations",
    "random_crop",
    "random_scale",
    "mask_path",
    "alpha_mask",
    "invert_mask",
    "mask_min_value",
)


def _fresh(base: TrainingConfig | None, arch: str) -> dict[str, Any]:
    """Schema defaults for ``arch`` plus the base's names, paths, folders and prompts."""
    data = TrainingConfig().model_dump()
    data["model"]["arch"] = arch
    data["model"]["name_or_path"] = intents.MODEL_IDS[arch]
    if base is None:
        return data
    old = base.model_dump()
    for key in ("name", "preset", "logging"):
        data[key] = old[key]
    data["model"].update({k: old["model"][k] for k in KEPT_MODEL})
    if arch == "sdxl":
        data["model"]["refiner_name_or_path"] = old["model"]["refiner_name_or_path"]
    default_ds = data["datasets"][0]
    data["datasets"] = [
        {**default_ds, **{k: ds[k] for k in KEPT_DATASET}} for ds in old["datasets"]
    ]
    data["sample"]["prompts"] = old["sample"]["prompts"]
    if arch != "flux":
        data["sample"]["neg"] = old["sample"]["neg"]
    for key in ("push_to_hub", "hf_repo_id", "hf_private"):
        data["save"][key] = old["save"][key]
    return data


def resolve_autos(
    cfg: TrainingConfig,
    profile: SystemProfile,
    info: DatasetInfo | None = None,
    intent: UserIntent | None = None,
) -> Recommended:
    """Answer every field still "auto"; all other values stay as they are."""
    intent = intent or UserIntent(training_type=cfg.intent)
    return _run(Draft(cfg.model_dump(), intent, profile, info, only_auto=True))


def _run(draft: Draft) -> Recommended:
    for decide in DECIDERS:
        decide(draft)
    return Recommended(draft.cfg(), tuple(draft.recs.values()), tuple(dict.fromkeys(draft.notes)))


def resolved_precision(cfg: TrainingConfig, profile: SystemProfile) -> str:
    return resolved_dtype(cfg, profile)
