"""Seconds per step and for a whole run.

A step's compute is counted in denoiser forward passes: forward + backward through frozen
weights (≈ one more forward) + recomputation with gradient checkpointing (one more), plus one
per preservation / CFG pass. FLOPs per pass come from ``advisor.models.forward_tflops``; the
device's dense tensor throughput × the architecture's efficiency turns them into seconds.

Calibration (docs/sources.md#published-speed-figures): Flux at 512 px on an RTX 4090 runs
about 1.4 it/s, which sets the transformer efficiency at 0.6 of peak; NF4's 1.4 s/step at
512 px → 3.5 s/step at 1024 px sets its dequantization cost (a fixed part per pass plus a
compute slow-down). Block swapping adds 0.65 × the swapped share of the compute (published:
quarter +15%, half +30%, three quarters +50%). SD1.5 / SDXL have no published speed figure in
the doc: their efficiency (0.35) is a prior for U-Nets, to be replaced by measured runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from advisor.memory import latent_bytes, text_bytes
from advisor.models import QUANT_COMPUTE_FACTOR, QUANT_DEQUANT_BYTES, forward_tflops
from advisor.workload import Workload

OFFLOAD_TIME_PER_SHARE = 0.65
STEP_OVERHEAD_S = 0.03  # optimizer step, scheduler, logging, batch hand-off
FP32_SLOWDOWN = 2.5  # TF32 / fp32 against bf16 tensor throughput on GPUs
DISK_READ_GBS = {"hdd": 0.15, "ssd": 0.5, "nvme": 2.0, "unknown": 0.5}
# Importing torch, diffusers, peft and MLflow and attaching to the run: 5-8 s measured here
# (the demo's whole 8-step run took ~10 s from launch to exit).
STARTUP_S = 6.0
QUANTIZE_S_PER_PARAM = 1e-8  # quantizing on load (~2 min for Flux)
VAE_ENCODE_TFLOP_PER_MPX = 1.1
VAE_DECODE_TFLOP_PER_MPX = 2.5


@dataclass(frozen=True)
class Timing:
    seconds_per_step: float
    parts: dict[str, float] = field(default_factory=dict)


def throughput(w: Workload) -> float:
    """Effective FLOP/s of the device for this model."""
    spec = w.device
    return spec.tflops * 1e12 * w.model.compute_efficiency * spec.efficiency_scale


def pass_seconds(w: Workload, resolution: float, batch: int) -> float:
    seconds = batch * forward_tflops(w.model, int(resolution)) * 1e12 / throughput(w)
    if w.dtype == "fp32" and w.device_kind != "cpu":
        seconds *= FP32_SLOWDOWN
    return seconds * QUANT_COMPUTE_FACTOR.get(w.weights, 1.0)


def passes_per_step(w: Workload) -> int:
    return (3 if w.grad_ckpt else 2) + w.extra_forwards


def step_parts(w: Workload) -> dict[str, float]:
    micro = w.accum
    compute = micro * passes_per_step(w) * pass_seconds(w, w.resolution_mean, w.batch)
    parts = {"denoiser compute": compute}
    if w.weights in QUANT_DEQUANT_BYTES:
        moved = w.model.denoiser_params * (1 - w.offload) * QUANT_DEQUANT_BYTES[w.weights]
        parts["dequantization"] = (
            micro * passes_per_step(w) * moved / (w.device.bandwidth_gbs * 1e9)
        )
    if w.offload:
        parts["block swapping"] = OFFLOAD_TIME_PER_SHARE * w.offload * compute
    if not w.text_cached:
        parts["text encoding"] = micro * _text_encode_seconds(w, w.batch)
    if w.latent_mode in ("off", "not_requested", "mixed"):
        parts["VAE encoding"] = micro * _vae_seconds(w, w.resolution_mean, w.batch, encode=True)
    parts["overhead"] = STEP_OVERHEAD_S * (
        w.model.cpu_overhead_scale if w.device_kind == "cpu" else 1
    )
    return parts


def _text_encode_seconds(w: Workload, count: int) -> float:
    flops = 2 * w.model.text_encoder_total * w.model.text_tokens * count
    return flops / throughput(w)


def _vae_seconds(w: Workload, resolution: float, count: int, *, encode: bool) -> float:
    mpx = resolution * resolution / 1e6
    per = VAE_ENCODE_TFLOP_PER_MPX if encode else VAE_DECODE_TFLOP_PER_MPX
    # The VAE is convolution-heavy at full resolution: U-Net-like efficiency.
    spec = w.device
    rate = spec.tflops * 1e12 * 0.35 * spec.efficiency_scale
    return count * mpx * per * w.model.vae_cost_scale * 1e12 / rate


def step_time(w: Workload) -> Timing:
    parts = step_parts(w)
    return Timing(sum(parts.values()), parts)


def run_parts(w: Workload, seconds_per_step: float, disk_type: str) -> dict[str, float]:
    """Seconds for each phase of the whole run."""
    model = w.model
    files = (model.denoiser_params + model.text_encoder_total) * 2 + model.vae_params * 2
    parts = {"starting the trainer": STARTUP_S}
    parts["loading models"] = files / (DISK_READ_GBS.get(disk_type, 0.5) * 1e9)
    if w.quantize_load:
        parts["loading models"] += model.denoiser_params * QUANTIZE_S_PER_PARAM
    parts["caching"] = _caching_seconds(w)
    parts["training"] = w.steps * seconds_per_step
    parts["sampling"] = _sampling_seconds(w)
    saved = (w.lora_params + w.te_lora_params) * (w.save_bytes * w.save_files + 16)
    parts["saving"] = (w.saves + 1) * saved / (DISK_READ_GBS.get(disk_type, 0.5) * 1e9)
    return parts


def _caching_seconds(w: Workload) -> float:
    seconds = 0.0
    if w.latent_items:
        seconds += _vae_seconds(w, w.resolution_mean, w.latent_items, encode=True)
        seconds += w.latent_items * latent_bytes(w) / 1e9 if w.latents_to_disk else 0.0
    if w.text_cached:
        seconds += _text_encode_seconds(w, w.captions)
        seconds += w.captions * text_bytes(w) / 1e9 if w.latents_to_disk else 0.0
    return seconds


def _sampling_seconds(w: Workload) -> float:
    if not w.sample_images:
        return 0.0
    passes = w.sample_steps * (2 if w.sample_cfg else 1)
    per_image = passes * pass_seconds(w, w.sample_resolution, 1)
    per_image += _vae_seconds(w, w.sample_resolution, 1, encode=False)
    return w.sample_images * per_image
