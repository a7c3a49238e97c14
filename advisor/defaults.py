"""Intent-driven smart defaults: what you train + your priorities + this machine → a config.

``recommend(intent, arch, profile, info)`` returns a complete ``TrainingConfig`` and one
``Recommendation(path, value, reason, source)`` for every value it sets. ``resolve_autos(cfg,
...)`` answers only the fields a config leaves "auto" and keeps every other choice.

The deciders run in dependency order: model and size → precision and devices → adapter → captions
and augmentation → regularisation → text encoder → caching → batch (seed formula, then the VRAM
model) → memory fit → data loading → optimizer and LR (scaled by the batch) → steps (target
repeats per image, bucket-aware) → schedule → training core → sampling and saving. The machine's
deciders live here, the training ones in ``advisor.decide_training``; the draft they fill, with
its rule that every reason matches its value, in ``advisor.draft``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from advisor import intents, seed_formulas
from advisor.dataset import DatasetInfo
from advisor.decide_training import (
    decide_captions,
    decide_core,
    decide_optimizer,
    decide_regularization,
    decide_sampling,
    decide_schedule,
    decide_steps,
    decide_text_encoder,
    previews_in_run,
)
from advisor.draft import (
    DEMO,
    SCHEMA,
    VRAM_SOURCE,
    Draft,
    Recommendation,
    Recommended,
    UserIntent,
)
from advisor.fit import budget_gb, fit_to_memory, predicted_gb
from advisor.intents import NOTES
from advisor.memory import latent_bytes, text_bytes
from advisor.models import FLUX_TARGETS, GIB, SD_TARGETS
from advisor.patch import default_of
from advisor.profile import SystemProfile
from advisor.workload import resolved_dtype, variants, workload
from trainer.config.fields import ARCH_DEFAULTS
from trainer.config.schema import TrainingConfig

__all__ = [
    "Draft",
    "Recommendation",
    "Recommended",
    "UserIntent",
    "previews_in_run",
    "recommend",
    "resolve_autos",
    "resolved_precision",
]


# ------------------------------------------------------------------------------- deciders
def _model(d: Draft) -> None:
    d.set("intent", d.kind, "what you said you are training", "wizard preflight")
    path = str(d.data["model"]["name_or_path"])
    if path.startswith("demo:") and path != f"demo:{d.arch}":
        d.set("model.name_or_path", f"demo:{d.arch}", "the demo model of this arch", "studio")


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
    d.set("network.type", kind, f"{kind} suits {d.kind} LoRAs on {arch}", NOTES)
    rank = prior.rank[arch]
    why = f"rank {rank} for {d.kind} on {arch}"
    images = d.counted.total_images if d.counted else None
    if images is not None and images < 10 and rank > 16:
        rank, why = 16, f"rank 16: {images} images would be memorised by rank {rank}"
    d.set("network.linear", rank, why, NOTES)
    current = d.get("network.linear")
    rank = current if isinstance(current, int) else rank
    share = prior.alpha_share[arch]
    alpha = float(rank * share)
    how = "alpha = rank (neutral scale)" if share == 1 else f"alpha = {share:g} × rank (gentler)"
    d.set("network.linear_alpha", alpha, how, NOTES)


def _caching(d: Draft) -> None:
    cfg = d.cfg()
    w = workload(cfg, d.profile, d.counted)
    per_image = latent_bytes(w) + (text_bytes(w) if cfg.train.cache_text_embeddings else 0)
    images = d.counted.total_images if d.counted else 40
    flips = max((variants(ds) for ds in cfg.datasets), default=1)
    cache = seed_formulas.caching_defaults(d.profile, images * flips * per_image / GIB)
    for i in d.datasets():
        ds = cfg.datasets[i]
        if ds.augmentations or ds.random_crop or ds.random_scale:
            continue
        d.set_flag(
            f"datasets.{i}.cache_latents",
            cache.cache_latents,
            "images are encoded once by the VAE, not at every step",
            "images are encoded at every step",
            seed_formulas.SOURCE,
        )
        d.set_flag(  # the formula's reason is written for the side it chose
            f"datasets.{i}.cache_latents_to_disk",
            cache.to_disk,
            cache.reason if cache.to_disk else "the latent cache is too big for RAM: on disk",
            "the latent cache fits in RAM" if cache.to_disk else cache.reason,
            seed_formulas.SOURCE,
        )


def _batch(d: Draft) -> None:
    if d.demo:
        d.set("train.batch_size", 2, "tiny demo model", DEMO)
        return
    if d.arch == "flux":
        d.set("train.batch_size", 1, "DiT prior: batch 1, more steps", NOTES)
        d.set_flag(
            "train.auto_scale_batch_size",
            False,
            "the batch grows over the first steps",
            "a fixed batch 1 for Flux",
            NOTES,
        )
        return
    size = max(d.cfg().datasets[0].resolution)
    seed = seed_formulas.batch_defaults(d.profile.usable_vram_gb, size, d.intent.priority)
    batch, most = seed.batch_size, seed.max_batch_size
    batch, most = _cap_batch(d, batch, most)
    src = f"{seed_formulas.SOURCE} + {VRAM_SOURCE}"
    memory = "RAM" if d.profile.kind == "cpu" else "VRAM"  # a CPU run's memory is the RAM
    why = f"the rule of thumb for this memory gave {seed.batch_size}; {batch} fits the predicted {memory}"
    d.set("train.batch_size", batch, why, src)
    auto = seed.auto_scale and most > batch
    d.set_flag(
        "train.auto_scale_batch_size",
        auto,
        f"the batch grows over the first steps, up to the largest that fits "
        f"(priority {d.intent.priority})",
        "a fixed batch keeps the effective learning rate steady"
        if not seed.auto_scale
        else f"batch {batch} is already the largest this run can use",
        seed_formulas.SOURCE,
    )
    d.set(
        "train.min_batch_size", 1, "an auto-scaled batch starts its ramp at 1", seed_formulas.SOURCE
    )
    d.set(
        "train.max_batch_size", max(most, batch), f"the largest batch that fits the {memory}", src
    )
    d.set(
        "train.batch_size_warmup_steps",
        seed.warmup_steps,
        f"an auto-scaled batch ramps up over the first {seed.warmup_steps} steps",
        seed_formulas.SOURCE,
    )


def _cap_batch(d: Draft, batch: int, most: int) -> tuple[int, int]:
    images = d.counted.total_images if d.counted else None
    if images:
        batch, most = min(batch, images), min(most, images)
    cfg = d.cfg()
    while most > 1 and predicted_gb(_with_batch(cfg, most), d.profile, d.counted) > budget_gb(
        d.profile
    ):
        most //= 2
    while batch > 1 and predicted_gb(_with_batch(cfg, batch), d.profile, d.counted) > budget_gb(
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
        d.set_flag(
            "train.gradient_checkpointing",
            False,
            "recomputes activations: far less VRAM",
            "the run fits without it, and steps are ~25% faster",
            VRAM_SOURCE,
        )
        return
    fitted, rungs = fit_to_memory(cfg, d.profile, d.counted)
    for rung in rungs:
        for path, value in rung.patch.items():
            value = default_of(path) if value is None else value
            if isinstance(value, bool):  # a rung's reason says what it turns on
                off = f"turned off along with: {rung.reason}"
                d.set_flag(path, value, rung.reason, off, VRAM_SOURCE)
            else:
                d.set(path, value, rung.reason, VRAM_SOURCE)
    if predicted_gb(fitted, d.profile, d.counted) > budget_gb(d.profile):
        d.notes.append(
            f"Even with every memory saving this run is predicted above the "
            f"{d.profile.usable_vram_gb:.0f} GB available: expect out-of-memory errors."
        )


def _fits_without_checkpointing(cfg: TrainingConfig, d: Draft) -> bool:
    trial = cfg.model_copy(
        update={"train": cfg.train.model_copy(update={"gradient_checkpointing": False})}
    )
    return predicted_gb(trial, d.profile, d.counted) <= budget_gb(d.profile) * 0.9


def _loading(d: Draft) -> None:
    profile = d.profile
    workers, persistent = seed_formulas.worker_defaults(profile)
    src = seed_formulas.SOURCE
    d.set(
        "runtime.num_workers",
        workers,
        f"one loader per 8 GB of RAM ({profile.ram_total_gb:.0f} GB), at most the "
        f"{profile.cpu_cores} cores and 8",
        src,
    )
    d.set_flag(
        "runtime.persistent_workers",
        persistent,
        "keeps the loader processes between epochs",
        "no loader processes to keep: images load in the training process",
        src,
    )
    prefetch = seed_formulas.prefetch_defaults(profile, d.intent.priority)
    d.set("runtime.gpu_prefetch_batches", prefetch, _prefetch_reason(profile), src)
    d.notes.extend(seed_formulas.unified_memory_notes(d.profile))


def _prefetch_reason(profile: SystemProfile) -> str:
    if profile.kind == "cpu":
        return "no GPU to prefetch batches to"
    if profile.unified:
        return "unified memory: there is no copy to a separate card to hide"
    return f"{profile.disk_type} storage: slower disks prefetch more batches"


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
    decide_captions,
    decide_regularization,
    decide_text_encoder,
    _caching,
    _batch,
    _fit,
    _loading,
    decide_optimizer,
    decide_steps,
    decide_schedule,
    decide_core,
    decide_sampling,
)


# ------------------------------------------------------------------------------------ API
def recommend(
    intent: UserIntent,
    arch: str,
    profile: SystemProfile,
    info: DatasetInfo | None = None,
    base: TrainingConfig | None = None,
) -> Recommended:
    """A complete recommended config (names, folders, prompts, the validation hold-out and the
    epochs kept from ``base``: with epochs set, no steps are recommended, which they override)."""
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
    data["train"]["epochs"] = old["train"]["epochs"]  # the run's length in epochs: they win
    data["validation"] = old["validation"]  # held-out images: fewer steps per epoch
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
