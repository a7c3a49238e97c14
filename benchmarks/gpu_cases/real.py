"""The real-size SD1.5 U-Net (random weights, no download) trained on the GPU by the trainer's parts.

The model is built from its shipped config (``trainer.demo.real_size``) directly on the GPU in the
case's dtype, then prepared in the trainer's order (``trainer.engine.memory.prepare``): the base
quantized (``quantize_module``: bitsandbytes int8 / nf4), the attention backend set
(``set_attention_backend``: SDPA or flash-attn), the LoRA added (``trainer.arch.adapters``: rank 4
on the attention projections, fp32), then ``torch.compile``. Each step is forward under autocast +
backward + optimizer step (fp16: through a GradScaler, as accelerate does for the trainer) on
random pre-encoded latents and prompt embeddings. Every loss must be finite, and after training
the LoRA must move the prediction (scale 1 against scale 0).
"""

from __future__ import annotations

import contextlib
import math
import time

import torch
import torch.nn.functional as F

from gpu_cases.cases import Case
from gpu_cases.tiny import CaseFailed, relative_change
from trainer.arch.adapters import SD_TARGETS, adapter_config, add_adapter, scale_adapters
from trainer.config.sections.model import NetworkConfig
from trainer.demo.real_size import build_denoiser, denoiser_config, denoiser_inputs
from trainer.engine.memory.attention import set_attention_backend
from trainer.engine.memory.quantize import quantize_module
from trainer.engine.optim import optimizer_class

GIB = 2**30
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
RESOLUTION = 512  # SD1.5's native size: 64x64 latents
BATCH = 2
RANK = 4
LR = 5e-4
WARMUP_STEPS = 3  # not timed: allocator warm-up, cuDNN autotuning, torch.compile


def run_real(case: Case, steps: int, device: str) -> dict:
    """Train the real-size U-Net for ``case``; its s/step, peak VRAM, last loss and LoRA change."""
    dev, dtype = torch.device(device), DTYPES[case.dtype]
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    unet = build_denoiser("sd15", device=dev, dtype=dtype)
    if case.qtype:
        quantize_module(unet, case.qtype, device=dev, compute_dtype=dtype)
    set_attention_backend(unet, case.attention, dev)
    network = NetworkConfig.model_validate({"linear": RANK, "linear_alpha": RANK})
    trainable = add_adapter(unet, adapter_config(network, list(SD_TARGETS)))
    if case.compile:
        unet.compile(backend="inductor")
    optimizer = optimizer_class(case.optimizer)(trainable, lr=LR)
    scaler = torch.amp.GradScaler(dev.type) if dtype == torch.float16 else None
    kwargs, target = denoiser_inputs(
        "sd15",
        denoiser_config("sd15"),
        batch=BATCH,
        latent_side=RESOLUTION // 8,
        device=dev,
        dtype=dtype,
    )
    unet.train()
    times, loss = [], float("nan")
    for step in range(1, steps + 1):
        _sync(dev)
        started = time.perf_counter()
        with torch.autocast(dev.type, dtype=dtype):
            prediction = unet(**kwargs)[0]
        loss_t = F.mse_loss(prediction.float(), target.float())
        loss = loss_t.item()
        if not math.isfinite(loss):
            raise CaseFailed(f"loss {loss} at step {step}")
        if scaler is not None:
            scaler.scale(loss_t).backward()
            scaler.step(optimizer)  # skipped when the scaled gradients hold inf/nan
            scaler.update()
        else:
            loss_t.backward()
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _sync(dev)
        times.append(time.perf_counter() - started)
    peak = torch.cuda.max_memory_allocated(dev) / GIB if dev.type == "cuda" else None
    timed = times[WARMUP_STEPS:] or times
    return {
        "s_per_step": sum(timed) / len(timed),
        "peak_vram_gib": peak,
        "loss": loss,
        "lora_delta": _lora_delta(unet, kwargs, dev, dtype),
        "first_steps_s": round(sum(times[:WARMUP_STEPS]), 2),
    }


def _lora_delta(unet, kwargs, dev: torch.device, dtype: torch.dtype) -> float:
    unet.eval()
    # A compiled U-Net would recompile for no_grad and again for the disabled adapters: the
    # check runs the same module eagerly instead.
    eager = getattr(torch.compiler, "set_stance", None)
    stance = eager("force_eager") if eager else contextlib.nullcontext()
    with stance, torch.no_grad(), torch.autocast(dev.type, dtype=dtype):
        tuned = unet(**kwargs)[0].float()
        with scale_adapters([unet], 0.0):
            base = unet(**kwargs)[0].float()
    return relative_change(tuned, base)


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
