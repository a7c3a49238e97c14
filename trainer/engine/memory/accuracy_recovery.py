"""The accuracy recovery adapter (``model.accuracy_recovery_adapter``).

A LoRA file loaded by diffusers (any layout it reads) as a second peft adapter named ``ara`` on
the denoiser: active with the trained one (``prepare_training``), frozen, never saved, and left at
full strength when previews scale the trained LoRA (``trainer.arch.adapters``). It corrects the
error a quantized denoiser makes.
"""

from __future__ import annotations

from pathlib import Path

from trainer.arch.adapters import ARA_NAME, adapter_names, freeze_adapter, tuner_layers
from trainer.arch.base import Arch
from trainer.engine.failures import MemoryOptionError


def load_accuracy_recovery_adapter(arch: Arch, ref: str) -> int:
    """Load the LoRA at ``ref`` as the frozen adapter ``ara`` on the denoiser; returns #layers."""
    path = Path(ref).expanduser()
    if not path.exists():
        raise MemoryOptionError(
            f"model.accuracy_recovery_adapter '{ref}' was not found — point it to a LoRA "
            ".safetensors file or a folder holding pytorch_lora_weights.safetensors"
        )
    try:
        arch.pipe.load_lora_weights(str(path), adapter_name=ARA_NAME)
    except (OSError, ValueError, KeyError, RuntimeError, AssertionError) as exc:
        # diffusers' layout converters assert on shapes they do not recognise.
        raise MemoryOptionError(
            f"model.accuracy_recovery_adapter '{ref}' could not be loaded as a LoRA for "
            f"{arch.name}: {type(exc).__name__}: {str(exc)[:300]}"
        ) from exc
    adapted = [name for name, te in arch.text_encoders.items() if getattr(te, "peft_config", None)]
    if adapted:
        raise MemoryOptionError(
            f"model.accuracy_recovery_adapter '{ref}' also adapts {', '.join(adapted)}; an "
            "accuracy recovery adapter corrects the quantized denoiser only — use one without "
            "text-encoder weights"
        )
    layers = [layer for _, layer in tuner_layers(arch.denoiser) if ARA_NAME in adapter_names(layer)]
    if not layers:
        raise MemoryOptionError(
            f"model.accuracy_recovery_adapter '{ref}' matched no layer of the {arch.name} "
            f"{arch.denoiser_name}"
        )
    freeze_adapter(arch.denoiser, ARA_NAME)
    arch.frozen_adapter = ARA_NAME
    return len(layers)
