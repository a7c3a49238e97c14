"""Real-size denoisers with random weights: the real shapes, parameter counts and memory, no download.

The configs of the released models ship beside this module (``real_size/*.json``, a few KB each):
SD1.5's U-Net (runwayml/stable-diffusion-v1-5 ``unet/config.json``), SDXL 1.0 base's U-Net
(stabilityai/stable-diffusion-xl-base-1.0 ``unet/config.json``) and FLUX.1-dev's transformer
(black-forest-labs/FLUX.1-dev ``transformer/config.json``). ``build_denoiser`` makes the diffusers
model from one of them with ``from_config`` (random weights), on a device or, for counting only,
on the meta device (``empty=True``: no memory). Benchmarks (``benchmarks/real_size.py``,
``benchmarks/gpu_check.py``) train them on random pre-encoded inputs (``denoiser_inputs``): the
realistic cost of a step without any weights to fetch.

    parameter_count("sd15")  ->    859_520_964
    parameter_count("sdxl")  ->  2_567_463_684
    parameter_count("flux")  -> 11_901_408_320

torch and diffusers are imported inside the functions ("heavy: building only"), like
``trainer.demo.tiny``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CONFIG_DIR = Path(__file__).resolve().parent / "real_size"
CONFIG_FILES = {
    "sd15": "sd15_unet.json",
    "sdxl": "sdxl_unet.json",
    "flux": "flux_transformer.json",
}
# What each denoiser attends to: prompt tokens and their width (CLIP ViT-L; CLIP L + bigG
# concatenated; T5-XXL), and the pooled vector (SDXL: bigG's projection; Flux: CLIP L's).
TEXT_TOKENS = {"sd15": 77, "sdxl": 77, "flux": 512}
SDXL_TIME_IDS = 6  # original size, crop top-left, target size: (h, w) each


def denoiser_config(arch: str) -> dict[str, Any]:
    """The released model's config for ``arch`` (sd15, sdxl or flux), as diffusers saves it."""
    if arch not in CONFIG_FILES:
        raise ValueError(
            f"no real-size config for {arch!r}; expected one of {sorted(CONFIG_FILES)}"
        )
    return json.loads((CONFIG_DIR / CONFIG_FILES[arch]).read_text())


def build_denoiser(
    arch: str,
    *,
    device: Any = "cpu",
    dtype: Any = None,
    empty: bool = False,
    seed: int = 0,
) -> Any:
    """The real-size U-Net / transformer of ``arch`` with random weights, frozen and in eval mode.

    ``empty=True`` builds it on the meta device (shapes only, nothing allocated: for counting);
    otherwise the weights are made directly on ``device`` (seeded) and cast to ``dtype``.
    """
    import diffusers  # heavy: building only
    import torch  # heavy: building only

    config = denoiser_config(arch)
    model_class = getattr(diffusers, config["_class_name"])
    if empty:
        from accelerate import init_empty_weights  # heavy: counting only

        with init_empty_weights():
            model = model_class.from_config(config)
    else:
        torch.manual_seed(seed)
        with torch.device(device):  # initialised where it trains: no CPU copy of 3-48 GB
            model = model_class.from_config(config)
        if dtype is not None and dtype != model.dtype:
            model = model.to(dtype=dtype)
    model.requires_grad_(False)
    return model.eval()


def parameter_count(arch: str) -> int:
    """Parameters of the real-size denoiser, counted on the meta device (no memory used)."""
    return sum(p.numel() for p in build_denoiser(arch, empty=True).parameters())


def denoiser_inputs(
    arch: str,
    config: dict[str, Any],
    *,
    batch: int,
    latent_side: int,
    device: Any = "cpu",
    dtype: Any = None,
    seed: int = 0,
) -> tuple[dict[str, Any], Any]:
    """(keyword arguments of one forward pass, its training target) for the denoiser of ``arch``
    built from ``config``: random pre-encoded latents, prompt embeddings and conditioning, as the
    trainer feeds it with cached latents and text embeddings. ``latent_side`` is the latent grid
    (pixels / 8)."""
    import torch  # heavy: building only

    gen = torch.Generator().manual_seed(seed)
    dtype = dtype or torch.float32

    def randn(*shape: int) -> Any:
        return torch.randn(*shape, generator=gen).to(device, dtype)

    tokens = TEXT_TOKENS[arch]
    if arch == "flux":
        side = latent_side // 2  # 2x2 latent cells packed into one token
        ids = torch.zeros(side, side, 3)
        ids[..., 1] = torch.arange(side)[:, None]
        ids[..., 2] = torch.arange(side)[None, :]
        kwargs = {
            "hidden_states": randn(batch, side * side, config["in_channels"]),
            "encoder_hidden_states": randn(batch, tokens, config["joint_attention_dim"]),
            "pooled_projections": randn(batch, config["pooled_projection_dim"]),
            "timestep": torch.rand(batch, generator=gen).to(device, dtype),
            "img_ids": ids.reshape(side * side, 3).to(device, dtype),
            "txt_ids": torch.zeros(tokens, 3).to(device, dtype),
            "guidance": torch.full((batch,), 3.5, device=device)
            if config["guidance_embeds"]
            else None,
            "return_dict": False,
        }
        return kwargs, randn(batch, side * side, config["in_channels"])
    channels = config["in_channels"]
    kwargs = {
        "sample": randn(batch, channels, latent_side, latent_side),
        "timestep": torch.randint(0, 1000, (batch,), generator=gen).to(device),
        "encoder_hidden_states": randn(batch, tokens, config["cross_attention_dim"]),
        "return_dict": False,
    }
    if config.get("addition_embed_type") == "text_time":
        pooled = config["projection_class_embeddings_input_dim"] - (
            SDXL_TIME_IDS * config["addition_time_embed_dim"]
        )
        pixels = float(latent_side * 8)
        time_ids = torch.tensor([pixels, pixels, 0.0, 0.0, pixels, pixels]).repeat(batch, 1)
        kwargs["added_cond_kwargs"] = {
            "text_embeds": randn(batch, pooled),
            "time_ids": time_ids.to(device, dtype),
        }
    return kwargs, randn(batch, config["out_channels"], latent_side, latent_side)
