"""Disk space a run writes: caches, checkpoints, the final LoRA, samples, MLflow copies."""

from __future__ import annotations

from advisor.memory import latent_bytes, text_bytes
from advisor.models import GIB, OPTIMIZER_STATE_BYTES
from advisor.workload import Workload

PNG_BYTES_PER_PIXEL = 1.5  # a photographic PNG; MLflow also writes a smaller webp copy
WEBP_SHARE = 0.15


def disk_parts(w: Workload) -> dict[str, float]:
    """GiB per kind of file."""
    params = w.lora_params + w.te_lora_params
    lora_file = params * w.save_bytes
    # A checkpoint for resuming: the LoRA in fp32 + optimizer state + EMA copy.
    checkpoint = params * (4 + OPTIMIZER_STATE_BYTES[w.optimizer] + (4 if w.ema else 0))
    kept = min(w.saves, w.keep)
    parts = {
        "checkpoints": kept * (checkpoint + lora_file) / GIB,
        "final LoRA": lora_file * w.save_files / GIB,
    }
    if w.latents_to_disk:
        parts["latent cache"] = w.latent_items * latent_bytes(w) / GIB
        if w.text_cached:
            parts["text cache"] = w.captions * text_bytes(w) / GIB
    pixels = w.sample_resolution * w.sample_resolution
    parts["samples"] = w.sample_images * pixels * PNG_BYTES_PER_PIXEL * (1 + WEBP_SHARE) / GIB
    # MLflow keeps a copy of every checkpoint's LoRA file (not rotated) and of the final LoRA.
    parts["MLflow artifact copies"] = (w.saves * lora_file + lora_file * w.save_files) / GIB
    return parts
