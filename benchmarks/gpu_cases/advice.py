"""The advisor's predictions for each case: the same run described as a TrainingConfig.

Tiny cases are the trainer's own config (the demo preset with the case's overrides). The
real-size case is the config of a real SD1.5 run that trains what ``gpu_cases.real`` trains
(rank 4, batch and size as there, latents and text embeddings cached, the text encoder unloaded,
the VAE on the CPU: only the U-Net and its LoRA on the device). ``benchmarks/real_size.py`` uses
the same description for its CPU run. The profile is this machine's (``detect_profile``); where
it sees no GPU but torch does (no NVML library), the GPU is described from torch's properties.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from typing import Any

from advisor.predict import predict
from advisor.profile import GPU, SystemProfile, detect_profile
from gpu_cases.cases import Case
from gpu_cases.tiny import overrides, preset
from trainer.config.io import load_config
from trainer.config.schema import TrainingConfig


def real_sd15_config(
    *,
    resolution: int,
    batch: int,
    steps: int,
    device: str,
    dtype: str,
    rank: int = 4,
    lr: float = 1e-4,
    optimizer: str = "adamw",
    qtype: str | None = None,
    attention: str = "auto",
    compile_model: bool = False,
) -> TrainingConfig:
    """A real SD1.5 LoRA run on pre-encoded data: only the U-Net and its LoRA train."""
    return TrainingConfig.model_validate(
        {
            "name": "real_size_sd15",
            "model": {
                "arch": "sd15",
                "name_or_path": "runwayml/stable-diffusion-v1-5",
                "vae_device": "cpu",
                "quantize": qtype is not None,
                "qtype": qtype or "float8",
                "attention_backend": attention,
                "compile": compile_model,
            },
            "network": {"type": "lora", "linear": rank, "linear_alpha": rank},
            "datasets": [
                {
                    "folder_path": tempfile.gettempdir(),
                    "resolution": [resolution],
                    "cache_latents": True,
                }
            ],
            "train": {
                "steps": steps,
                "batch_size": batch,
                "optimizer": optimizer,
                "lr": lr,
                "dtype": dtype,
                "gradient_checkpointing": False,
                "cache_text_embeddings": True,
                "unload_text_encoder": True,
            },
            "sample": {"sample_every": 0},
            "runtime": {"device": device},
        }
    )


def machine_profile(device: str) -> SystemProfile:
    profile = detect_profile(home=tempfile.gettempdir())
    if device != "cuda" or profile.gpu is not None:
        return profile
    import torch  # heavy: only when CUDA is there and NVML is not

    props = torch.cuda.get_device_properties(0)
    total = props.total_memory / 2**30
    gpu = GPU(
        vendor="nvidia",
        name=props.name,
        vram_total_gb=total,
        vram_free_gb=total,
        compute_capability=f"{props.major}.{props.minor}",
        bf16=torch.cuda.is_bf16_supported(),
    )
    return replace(profile, gpus=(gpu,))


def case_config(case: Case, steps: int, device: str) -> TrainingConfig:
    if not case.real_size:
        return load_config(preset(case), overrides(case, steps, device))
    from gpu_cases.real import BATCH, LR, RANK, RESOLUTION  # heavy (torch): real cases only

    return real_sd15_config(
        resolution=RESOLUTION,
        batch=BATCH,
        steps=steps,
        device=device,
        dtype=case.dtype,
        rank=RANK,
        lr=LR,
        optimizer=case.optimizer,
        qtype=case.qtype,
        attention=case.attention,
        compile_model=case.compile,
    )


def predicted(case: Case, steps: int, device: str, profile: SystemProfile) -> dict[str, Any]:
    """The advisor's s/step and peak memory (VRAM on CUDA, RAM on the CPU) for ``case``."""
    found = predict(case_config(case, steps, device), profile)
    memory = found.vram if device == "cuda" else found.ram
    return {"pred_s_per_step": found.step_time.value, "pred_mem_gib": memory.value}
