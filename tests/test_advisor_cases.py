"""Shared builders for the advisor tests (no tests here): configs, machines, datasets."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from advisor.dataset import DatasetInfo, FolderInfo
from advisor.profile import SystemProfile, synthetic_profile
from trainer.config.io import apply_overrides
from trainer.config.schema import TrainingConfig

PROFILES: dict[str, SystemProfile] = {
    "rtx4090": synthetic_profile("NVIDIA GeForce RTX 4090", 24.0, ram_gb=64.0),
    "rtx3060": synthetic_profile("NVIDIA GeForce RTX 3060", 12.0, ram_gb=32.0, disk="ssd"),
    "rtx2080": synthetic_profile("NVIDIA GeForce RTX 2080", 8.0, ram_gb=16.0, disk="hdd"),
    "rx7900": synthetic_profile("AMD Radeon RX 7900 XTX", 24.0, vendor="amd", ram_gb=64.0),
    "m2max": synthetic_profile("Apple M2 Max", 0.0, vendor="apple", ram_gb=32.0, cores=12),
    "cpu": synthetic_profile(None, ram_gb=16.0, cores=2, disk="ssd"),
    "tiny_disk": synthetic_profile("NVIDIA GeForce RTX 4090", 24.0, disk_free_gb=1.2),
}


def make(*overrides: str, arch: str | None = None) -> TrainingConfig:
    """A config from 'dotted.key=value' overrides on the defaults (a real model, not the demo)."""
    base: dict[str, Any] = {"model": {"name_or_path": "some/model"}}
    if arch:
        base["model"]["arch"] = arch
        size = 512 if arch == "sd15" else 1024
        base["datasets"] = [{"folder_path": "data", "resolution": [size]}]
        base["sample"] = {"width": size, "height": size}
    return TrainingConfig.model_validate(apply_overrides(base, overrides))


def sized(images: int, width: int = 512, height: int = 512) -> DatasetInfo:
    return DatasetInfo((FolderInfo(images, sizes=((width, height),) * images, captioned=images),))


# ------------------------------------------------------------------------- hypothesis configs
CHOICES: dict[str, list[Any]] = {
    "model.quantize": [True, False],
    "model.qtype": ["float8", "int8", "nf4", "fp4"],
    "model.quantize_te": [True, False],
    "model.low_vram": [True, False],
    "model.layer_offloading": [True, False],
    "model.layer_offloading_transformer_percent": [0.25, 0.5, 1.0],
    "model.compile": [True, False],
    "model.attention_backend": ["auto", "native", "flash", "math"],
    "model.vae_dtype": ["auto", "fp16", "fp32", "bf16"],
    "network.type": ["lora", "locon", "lokr", "loha", "dora"],
    "network.linear": [4, 16, 64, 128, "auto"],
    "network.linear_alpha": [1.0, 8.0, 16.0, 256.0, "auto"],
    "network.lokr_factor": [-1, 4],
    "datasets.0.flip_x": [True, False],
    "datasets.0.flip_y": [True, False],
    "datasets.0.random_crop": [True, False],
    "datasets.0.cache_latents": [True, False],
    "datasets.0.cache_latents_to_disk": [True, False],
    "datasets.0.caption_dropout_rate": [0.0, 0.05, 0.5],
    "datasets.0.shuffle_tokens": [True, False],
    "datasets.0.trigger_word": ["ohwx", "woman", None],
    "train.steps": [50, 1000, 3000, 20000, "auto"],
    "train.batch_size": [1, 2, 8, 32, "auto"],
    "train.gradient_accumulation_steps": [1, 4],
    "train.auto_scale_batch_size": [True, False],
    "train.gradient_checkpointing": [True, False],
    "train.cache_text_embeddings": [True, False],
    "train.unload_text_encoder": [True, False],
    "train.train_text_encoder": [True, False],
    "train.optimizer": ["adamw", "adamw8bit", "adafactor", "prodigy", "lion"],
    "train.lr": [1e-6, 1e-4, 3e-3, 1.0, "auto"],
    "train.text_encoder_lr": [None, 1e-3],
    "train.dtype": ["auto", "fp32", "bf16", "fp16"],
    "train.lr_scheduler": ["constant", "cosine", "cosine_with_restarts", "polynomial"],
    "train.lr_scheduler_params.warmup_ratio": [0.0, 0.05, 0.5],
    "train.lr_scheduler_params.num_cycles": [1, 3, 40],
    "train.min_snr_gamma": [None, 5.0],
    "train.noise_offset": [0.0, 0.1],
    "train.use_ema": [True, False],
    "train.ema_decay": [0.99, 0.9999],
    "train.huber_delta": [0.1, 0.5],
    "runtime.device": ["auto", "cuda", "mps", "cpu"],
    "runtime.num_workers": [0, 4, 16],
    "runtime.gpu_prefetch_batches": [0, 2],
    "runtime.num_processes": [1, 2],
    "sample.sample_every": [0, 250, 100000],
    "save.max_step_saves_to_keep": [1, 4, 50],
    "intent": ["person", "character", "style", "object", "concept", "other"],
}


@st.composite
def configs(draw: st.DrawFn) -> TrainingConfig | None:
    arch = draw(st.sampled_from(["sd15", "sdxl", "flux"]))
    keys = draw(st.lists(st.sampled_from(sorted(CHOICES)), max_size=12, unique=True))
    overrides = [f"{k}={_yaml(draw(st.sampled_from(CHOICES[k])))}" for k in keys]
    try:
        return make(*overrides, arch=arch)
    except Exception:
        return None


def _yaml(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


profiles = st.sampled_from(sorted(PROFILES)).map(PROFILES.__getitem__)
infos = st.one_of(
    st.none(),
    st.integers(1, 200).map(DatasetInfo.counts),
    st.integers(1, 40).map(lambda n: sized(n, 640, 512)),
)
