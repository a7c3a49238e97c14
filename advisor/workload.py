"""A config reduced to what costs memory and time: the input of every prediction.

``workload(cfg, profile, info)`` answers the config's "auto" values the way the trainer will
(dtype by device, caching modes per dataset) and flattens everything the predictors need into
one frozen record. Predictions for published figures build the same record from a config and,
where a figure uses something the config cannot express (quanto int4), replace one field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from advisor.dataset import DatasetInfo, run_steps, steps_per_epoch
from advisor.devices import DeviceSpec, device_spec
from advisor.models import ModelFacts, facts, is_demo, lokr_units_factor
from advisor.profile import SystemProfile
from trainer.config.schema import TrainingConfig
from trainer.config.sections.datasets import DatasetConfig

DEFAULT_STEPS = 1000  # used for predictions while the steps are unknown ("auto")
FLIPS = ("flip_x", "flip_y")


@dataclass(frozen=True)
class Workload:
    arch: str
    model: ModelFacts
    device: DeviceSpec
    device_kind: str  # nvidia | amd | apple | cpu
    resolution: int  # largest training size (peak memory)
    resolution_mean: float  # size of an average step (time)
    batch: int  # largest batch of the run
    accum: int
    steps: int
    steps_assumed: bool
    dtype: str  # bf16 | fp16 | fp32
    weights: str  # storage of the denoiser: dtype or qtype
    te_weights: str
    vae_dtype: str
    te_on_gpu: bool
    te_offload: float
    vae_on_gpu: bool
    offload: float  # share of denoiser weights kept in RAM
    grad_ckpt: bool
    lora_params: int
    te_lora_params: int
    optimizer: str
    ema: bool
    extra_forwards: int  # preservation / CFG passes without gradients per step
    attention: str
    images: int
    latent_items: int  # cached latents (variants included)
    latent_mode: str  # cached | per_variant | off | not_requested | mixed
    latents_to_disk: bool
    text_cached: bool
    captions: int  # distinct captions to encode when caching text
    sample_images: int
    sample_resolution: int
    sample_steps: int
    sample_cfg: bool
    saves: int
    keep: int
    save_bytes: int  # bytes per weight in the saved LoRA
    save_files: int
    num_workers: int
    prefetch: int
    processes: int
    low_vram: bool
    quantize_load: bool  # the denoiser is quantized while loading


def resolved_dtype(cfg: TrainingConfig, profile: SystemProfile) -> str:
    """What ``train.dtype: auto`` becomes: bf16 where supported, fp16 on other GPUs, fp32 on CPU."""
    if cfg.train.dtype != "auto":
        return cfg.train.dtype
    device = cfg.runtime.device if cfg.runtime.device != "auto" else profile.device
    if device == "cpu":
        return "fp32"
    return "bf16" if profile.bf16 else "fp16"


def latent_mode(cfg: TrainingConfig) -> str:
    """The trainer's latent caching for all datasets (see ``trainer.data.batches.latent_cache_mode``)."""
    modes = {_dataset_latent_mode(ds) for ds in cfg.datasets if not ds.is_reg} or {"cached"}
    return modes.pop() if len(modes) == 1 else "mixed"


def _dataset_latent_mode(ds: DatasetConfig) -> str:
    if not (ds.cache_latents or ds.cache_latents_to_disk):
        return "not_requested"
    if any(a.type not in FLIPS for a in ds.augmentations) or ds.random_crop or ds.random_scale:
        return "off"
    return "per_variant" if variants(ds) > 1 else "cached"


def variants(ds: DatasetConfig) -> int:
    """Distinct geometric copies of each image that latent caching stores (flips)."""
    flips = {f for f in FLIPS if getattr(ds, f)}
    flips |= {a.type for a in ds.augmentations if a.type in FLIPS}
    return 2 ** len(flips)


def lora_sizes(cfg: TrainingConfig) -> tuple[int, int]:
    """Trainable parameters: (denoiser LoRA, text-encoder LoRA)."""
    model = facts(cfg.model.arch, is_demo(cfg.model.name_or_path))
    net = cfg.network
    rank = net.linear if isinstance(net.linear, int) else 16
    conv = net.conv if net.conv is not None else (rank if net.type == "locon" else None)
    params = model.lora_params(rank, conv if model.conv_units else None)
    if net.type == "lokr":
        params = int(params * lokr_units_factor(net.lokr_factor))
    elif net.type == "loha":
        params *= 2
    elif net.type == "dora":
        params = int(params * 1.05)
    te = model.te_lora_params(rank) if cfg.train.train_text_encoder else 0
    return params, te


def workload(
    cfg: TrainingConfig, profile: SystemProfile, info: DatasetInfo | None = None
) -> Workload:
    model = facts(cfg.model.arch, is_demo(cfg.model.name_or_path))
    dtype = resolved_dtype(cfg, profile)
    gpu = profile.gpu
    kind = profile.kind if cfg.runtime.device != "cpu" else "cpu"
    device = device_spec(kind, gpu.name if gpu else "", profile.cpu_cores)
    lora, te_lora = lora_sizes(cfg)
    steps, assumed = _steps(cfg, info)
    sizes = [r for ds in cfg.datasets for r in ds.resolution]
    return Workload(
        arch=cfg.model.arch,
        model=model,
        device=device,
        device_kind=kind,
        resolution=max(sizes),
        resolution_mean=math.sqrt(sum(r * r for r in sizes) / len(sizes)),
        batch=_peak_batch(cfg),
        accum=cfg.train.gradient_accumulation_steps,
        steps=steps,
        steps_assumed=assumed,
        dtype=dtype,
        weights=cfg.model.qtype if cfg.model.quantize else dtype,
        te_weights=cfg.model.qtype_te if cfg.model.quantize_te else _te_dtype(cfg, dtype),
        vae_dtype=cfg.model.vae_dtype if cfg.model.vae_dtype != "auto" else dtype,
        te_on_gpu=_te_on_gpu(cfg),
        te_offload=_share(cfg, cfg.model.layer_offloading_text_encoder_percent),
        vae_on_gpu=not (cfg.model.low_vram or cfg.model.vae_device == "cpu"),
        offload=_share(cfg, cfg.model.layer_offloading_transformer_percent),
        grad_ckpt=cfg.train.gradient_checkpointing,
        lora_params=lora,
        te_lora_params=te_lora,
        optimizer=cfg.train.optimizer,
        ema=cfg.train.use_ema,
        extra_forwards=sum(
            (
                cfg.train.diff_output_preservation,
                cfg.train.blank_prompt_preservation,
                cfg.train.do_cfg,
            )
        ),
        attention=cfg.model.attention_backend,
        images=_images(cfg, info),
        latent_items=_latent_items(cfg, info),
        latent_mode=latent_mode(cfg),
        latents_to_disk=any(ds.cache_latents_to_disk for ds in cfg.datasets),
        text_cached=cfg.train.cache_text_embeddings,
        captions=_captions(cfg, info),
        sample_images=_sample_images(cfg, steps),
        sample_resolution=max(cfg.sample.width, cfg.sample.height),
        sample_steps=cfg.sample.sample_steps,
        sample_cfg=not model.distilled_guidance,
        saves=steps // cfg.save.save_every,
        keep=cfg.save.max_step_saves_to_keep,
        save_bytes={"fp16": 2, "bf16": 2, "fp32": 4}[cfg.save.dtype],
        save_files=2 if cfg.save.save_format == "both" else 1,
        num_workers=cfg.runtime.num_workers,
        prefetch=cfg.runtime.gpu_prefetch_batches,
        processes=cfg.runtime.num_processes,
        low_vram=cfg.model.low_vram,
        quantize_load=cfg.model.quantize,
    )


def _te_dtype(cfg: TrainingConfig, dtype: str) -> str:
    return cfg.model.te_dtype if cfg.model.te_dtype != "auto" else dtype


def _te_on_gpu(cfg: TrainingConfig) -> bool:
    if cfg.model.te_device == "cpu" or cfg.model.low_vram:
        return False
    return not (cfg.train.cache_text_embeddings and cfg.train.unload_text_encoder)


def _share(cfg: TrainingConfig, percent: float) -> float:
    return percent if cfg.model.layer_offloading else 0.0


def _peak_batch(cfg: TrainingConfig) -> int:
    if cfg.train.auto_scale_batch_size:
        return cfg.train.max_batch_size
    batch = cfg.train.batch_size
    return batch if isinstance(batch, int) else 1


def _steps(cfg: TrainingConfig, info: DatasetInfo | None) -> tuple[int, bool]:
    """The steps the run will train (epochs resolved on the images), and whether assumed."""
    steps = run_steps(cfg, info)
    if steps is not None:
        return steps, False
    if isinstance(cfg.train.steps, int):  # epochs, images not counted: the draft's steps
        return cfg.train.steps, True
    return DEFAULT_STEPS, True


def _images(cfg: TrainingConfig, info: DatasetInfo | None) -> int:
    if info is None or not info.folders:
        return 20
    return max(1, info.total_images)


def _latent_items(cfg: TrainingConfig, info: DatasetInfo | None) -> int:
    total = 0
    for i, ds in enumerate(cfg.datasets):
        folder = info.folder(i) if info else None
        images = folder.images if folder else 20
        if _dataset_latent_mode(ds) in ("cached", "per_variant"):
            total += images * len(ds.resolution) * variants(ds)
    return total


def _captions(cfg: TrainingConfig, info: DatasetInfo | None) -> int:
    total = 0
    for i in range(len(cfg.datasets)):
        folder = info.folder(i) if info else None
        unique = folder.unique_captions if folder and folder.unique_captions else None
        total += unique if unique is not None else (folder.images if folder else 20)
    dropout = any(ds.caption_dropout_rate > 0 for ds in cfg.datasets)
    return total + (1 if dropout else 0)


def _sample_images(cfg: TrainingConfig, steps: int) -> int:
    sample = cfg.sample
    if sample.sample_every == 0 or not sample.prompts:
        return 0
    events = max(0, steps - sample.sample_start_step) // sample.sample_every
    events += 0 if sample.skip_first_sample else 1
    return events * len(sample.prompts)


def epoch_steps(cfg: TrainingConfig, info: DatasetInfo | None) -> int | None:
    return steps_per_epoch(cfg, info) if info and info.folders else None
