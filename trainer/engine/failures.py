"""Turn known failure causes into a sentence a person can act on (shown in the run's note)."""

from __future__ import annotations


class MemoryOptionError(ValueError):
    """A memory/speed option this machine or model cannot honour; the message says why and how."""


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite: training cannot recover from it."""

    def __init__(self, step: int, value: float) -> None:
        super().__init__(f"loss became {value} at step {step}")
        self.step = step


_SUGGESTIONS: list[tuple[tuple[str, ...], str]] = [
    (
        ("was not uploaded to the hugging face hub",),
        "Training finished and the LoRA is saved locally (see above); only the upload to the "
        "Hugging Face Hub failed. Upload the folder later from a connected machine, or turn "
        "save.push_to_hub off.",
    ),
    (
        ("out of memory", "cuda oom", "outofmemoryerror", "mps backend out of memory"),
        "The GPU ran out of memory. Lower the batch size or resolution, turn on gradient "
        "checkpointing and latent caching, use an 8-bit optimizer, quantize the base model or "
        "offload layers. The advisor's VRAM prediction shows which change helps most.",
    ),
    (
        ("loss became nan", "loss became inf"),
        "The loss became NaN/inf. Lower the learning rate (try half), keep max_grad_norm at 1, "
        "and avoid fp16 with SDXL's VAE or Flux: use bf16, or fp32 for the VAE.",
    ),
    (
        ("not fully cached locally", "offline mode", "hf_hub_offline", "couldn't connect"),
        "The model is a Hugging Face id that is not downloaded and this machine is offline. "
        "Download it first (e.g. `hf download <id>`), or point name_or_path at a local folder "
        "or .safetensors file, or use demo:sd15 to try the studio.",
    ),
    (
        ("no such file or directory", "does not exist", "not found", "modelloaderror"),
        "A file or folder the config names is missing. Check model.name_or_path, the dataset "
        "folder_path and any vae_path / lora_path.",
    ),
    (
        ("no space left on device", "disk quota exceeded"),
        "The disk is full. Free space, keep fewer checkpoints (save.max_step_saves_to_keep), or "
        "turn cache_latents_to_disk off. The last complete checkpoint is intact.",
    ),
]


def explain_failure(error: BaseException) -> str:
    """A note for the run: what happened, and for known causes what to do."""
    text = f"{type(error).__name__}: {error}"
    lowered = text.lower()
    for needles, suggestion in _SUGGESTIONS:
        if any(needle in lowered for needle in needles):
            return f"{text}\n\nSuggestion: {suggestion}"
    return text
