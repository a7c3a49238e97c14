"""Peak VRAM and system RAM of a training run, by component (GiB, printed as "GB").

VRAM = denoiser weights (precision / quantization, minus the offloaded share, plus the block in
flight) + resident text encoders and VAE + LoRA (fp32 weights, gradients, optimizer state, EMA)
+ activations (per latent cell for U-Nets, per token for Flux; gradient checkpointing keeps a
fraction) + framework overhead (CUDA context and cuBLAS workspace, allocator slack of 5%).

Activation constants are calibrated on the published figures in
docs/sources.md#published-memory-figures (SD1.5 at batch 2 and 512 px ≈ 6 GB; SDXL in 8 GB; Flux
512 px vs 1024 px with NF4); the per-token Flux
constant also matches a count of what checkpointing saves per block (hidden states of 57
blocks in bf16) plus one block's recomputed working set.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from advisor.models import (
    DTYPE_BYTES,
    GIB,
    OPTIMIZER_STATE_BYTES,
    QUANT_BYTES,
    largest_block_bytes,
)
from advisor.workload import Workload

# Activation bytes per unit and image at 16-bit: (with gradient checkpointing, without).
ACTIVATION_BYTES = {
    "sd15": (0.10e6, 0.40e6),  # per latent cell (64×64 cells at 512 px)
    "sdxl": (0.075e6, 0.55e6),  # per latent cell (128×128 cells at 1024 px)
    "flux": (0.90e6, 10.5e6),  # per token (image tokens + 512 text tokens)
}
CONTEXT_GIB = {"nvidia": 0.6, "amd": 0.7, "apple": 0.3, "cpu": 0.0}
ALLOCATOR_SLACK = 0.05
RUNTIME_RAM_GIB = 2.8  # python, torch with its GPU runtime, diffusers, transformers, mlflow client
# The same libraries in a CPU-only run: 0.57 GiB resident after importing them (torch 2.13 CPU
# build), and a whole demo-model run measured a 0.7 GB peak RSS. With 2.8 the first finished run
# "corrected" the prediction ×0.19, which read as a jump with no cause.
CPU_RUNTIME_RAM_GIB = 0.7
WORKER_RAM_GIB = 0.35
QUANTIZE_LOAD_BYTES = 4.0  # quantizing on load materialises fp32 weights (Flux: ~50 GB RAM)


@dataclass(frozen=True)
class Breakdown:
    total_gib: float
    parts: dict[str, float] = field(default_factory=dict)


def weight_bytes(fmt: str) -> float:
    return QUANT_BYTES[fmt]


def vram_parts(w: Workload) -> dict[str, float]:
    model = w.model
    den = model.denoiser_params * weight_bytes(w.weights)
    parts = {"denoiser weights": den * (1 - w.offload) / GIB}
    if w.offload > 0:
        parts["blocks in flight"] = 2 * _block_bytes(w) / GIB
    if w.te_on_gpu:
        te = model.text_encoder_total * weight_bytes(w.te_weights) * (1 - w.te_offload)
        parts["text encoders"] = te / GIB
    if w.vae_on_gpu:
        parts["VAE"] = model.vae_params * DTYPE_BYTES[w.vae_dtype] / GIB
    parts["LoRA + optimizer"] = _lora_bytes(w) / GIB
    parts["activations"] = activation_bytes(w, w.resolution, w.batch) / GIB
    if w.prefetch and w.device_kind != "cpu":
        parts["prefetched batches"] = w.prefetch * _batch_pixels_bytes(w) / GIB
    subtotal = sum(parts.values())
    parts["framework overhead"] = CONTEXT_GIB.get(w.device_kind, 0.6) + subtotal * ALLOCATOR_SLACK
    return parts


def _block_bytes(w: Workload) -> float:
    if w.model.blocks:
        return largest_block_bytes(w.model, weight_bytes(w.weights))
    return w.model.denoiser_params * weight_bytes(w.weights) / 25  # ~25 U-Net blocks


def _lora_bytes(w: Workload) -> float:
    per_param = 4 + 4 + OPTIMIZER_STATE_BYTES[w.optimizer] + (4 if w.ema else 0)
    return (w.lora_params + w.te_lora_params) * per_param


def activation_bytes(w: Workload, resolution: float, batch: int) -> float:
    with_ckpt, without = ACTIVATION_BYTES[w.arch]
    per_unit = with_ckpt if w.grad_ckpt else without
    scale = 2.0 if w.dtype == "fp32" else 1.0
    units = w.model.work_units(int(resolution))
    total = batch * units * per_unit * scale
    if w.attention == "math":
        total += _math_attention_bytes(w, resolution, batch)
    if w.te_lora_params:
        total += batch * 0.15 * GIB  # text-encoder activations for its LoRA's gradients
    return total


def _math_attention_bytes(w: Workload, resolution: float, batch: int) -> float:
    # The reference attention stores the full score matrix (heads × T × T, 16-bit).
    if w.model.blocks:
        tokens, heads, layers = w.model.work_units(int(resolution)), 24, w.model.blocks
    else:
        tokens, heads, layers = w.model.latent_cells(int(resolution)), 8, 2
    kept = 1 if w.grad_ckpt else layers
    return batch * heads * tokens * tokens * 2 * kept


def _batch_pixels_bytes(w: Workload) -> float:
    return w.batch * w.resolution * w.resolution * 3 * 4


def peak_vram(w: Workload) -> Breakdown:
    parts = vram_parts(w)
    return Breakdown(sum(parts.values()), parts)


# ------------------------------------------------------------------------------------------ RAM
def ram_parts(w: Workload) -> dict[str, float]:
    model = w.model
    runtime = CPU_RUNTIME_RAM_GIB if w.device_kind == "cpu" else RUNTIME_RAM_GIB
    parts = {"Python + libraries": runtime}
    parts["loading peak"] = _load_peak_bytes(w) / GIB
    cpu_weights = model.denoiser_params * weight_bytes(w.weights) * w.offload
    if not w.te_on_gpu and not w.text_cached:
        cpu_weights += model.text_encoder_total * weight_bytes(w.te_weights)
    elif w.te_offload and w.te_on_gpu:
        cpu_weights += model.text_encoder_total * weight_bytes(w.te_weights) * w.te_offload
    if not w.vae_on_gpu:
        cpu_weights += model.vae_params * DTYPE_BYTES[w.vae_dtype]
    parts["weights kept in RAM"] = cpu_weights / GIB
    if not w.latents_to_disk:
        parts["latent cache"] = w.latent_items * latent_bytes(w) / GIB
        if w.text_cached:
            parts["text cache"] = w.captions * text_bytes(w) / GIB
    parts["data loading"] = (
        w.num_workers * WORKER_RAM_GIB + (w.prefetch + 2) * _batch_pixels_bytes(w) / GIB
    )
    if w.device_kind == "cpu":
        parts["training on CPU"] = peak_vram(w).total_gib
    return parts


def _load_peak_bytes(w: Workload) -> float:
    """Extra RAM while the largest component is read (and quantized) before moving to the GPU."""
    model = w.model
    largest = max(model.denoiser_params, *model.text_encoder_params)
    if w.quantize_load:
        return model.denoiser_params * QUANTIZE_LOAD_BYTES
    return largest * 2.0


def peak_ram(w: Workload) -> Breakdown:
    parts = ram_parts(w)
    steady = sum(v for k, v in parts.items() if k != "loading peak")
    loading = parts["Python + libraries"] + parts["loading peak"]
    total = max(steady, loading)
    return Breakdown(total, parts)


def latent_bytes(w: Workload) -> float:
    """One cached latent (16-bit) at the training size."""
    return w.model.latent_channels * w.model.latent_cells(w.resolution) * 2


def text_bytes(w: Workload) -> float:
    """One caption's cached text-encoder outputs (16-bit)."""
    model = w.model
    return (sum(model.text_embed_dims) * model.text_tokens + model.pooled_dims) * 2
