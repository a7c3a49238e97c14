"""The diffusers pipeline components each architecture's trainer loads (no torch here).

Anything else a repository ships (safety checker, feature extractor, image encoder, Flax or ONNX
weights) is never loaded, so it is never downloaded either.
"""

from __future__ import annotations

ARCH_COMPONENTS: dict[str, tuple[str, ...]] = {
    "sd15": ("unet", "vae", "text_encoder", "tokenizer", "scheduler"),
    "sdxl": (
        "unet",
        "vae",
        "text_encoder",
        "text_encoder_2",
        "tokenizer",
        "tokenizer_2",
        "scheduler",
    ),
    "flux": (
        "transformer",
        "vae",
        "text_encoder",
        "text_encoder_2",
        "tokenizer",
        "tokenizer_2",
        "scheduler",
    ),
}


def arch_from_components(folders: set[str]) -> str | None:
    """The architecture a repository's top-level folders point to, or None when unclear."""
    if "transformer" in folders and "text_encoder_2" in folders:
        return "flux"
    if "unet" in folders:
        return "sdxl" if "text_encoder_2" in folders else "sd15"
    return None
