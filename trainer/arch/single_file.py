"""Single-file checkpoints: which architecture a file holds, read from its tensor names alone.

``detect_checkpoint(path)`` reads only the file's header (a .safetensors file's JSON header;
other formats are opened memory-mapped with ``torch.load(weights_only=True)``) and returns a
``CheckpointInfo``: the architecture (sd15, sdxl, flux or None), the key layout (the original
"ldm" layout of SD checkpoints, Black Forest Labs' "bfl" layout of Flux files, or "diffusers")
and the pipeline components the file holds. ``arch_mismatch`` words the warning when that
disagrees with ``model.arch``.

The layouts told apart:

- SD1.5 (and SD 2.x): ``model.diffusion_model.input_blocks...`` + ``cond_stage_model...``
- SDXL: the same U-Net names plus ``label_emb`` (its size conditioning), text encoders under
  ``conditioner.embedders.0`` (CLIP-L) and ``.1`` (OpenCLIP bigG)
- Flux, BFL layout (flux1-dev.safetensors): ``double_blocks.N``, ``single_blocks.N``, ``img_in``,
  sometimes under ``model.diffusion_model.``; all-in-one files add ``vae.`` and
  ``text_encoders.clip_l`` / ``text_encoders.t5xxl``
- Flux, diffusers layout: ``transformer_blocks.N``, ``single_transformer_blocks.N``,
  ``x_embedder``

``flux_bfl_to_diffusers`` converts a BFL Flux transformer to diffusers names with the sizes
taken from the model config (diffusers' own converter assumes the full-size 3072-wide model).
It works on tensors through their methods only, so this module never imports torch.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ARCH_NAMES = {"sd15": "SD1.5", "sdxl": "SDXL", "flux": "Flux"}
ARTICLES = {"sd15": "an", "sdxl": "an", "flux": "a"}  # "an S-D...", "a Flux"
LDM_UNET = "model.diffusion_model."
MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own limit on a header


class CheckpointError(ValueError):
    """The file is not a readable checkpoint (bad header, not a state dict)."""


@dataclass(frozen=True)
class CheckpointInfo:
    """What a single checkpoint file holds (from its tensor names)."""

    arch: str | None  # sd15 / sdxl / flux; None when the names fit none of them
    layout: str  # "ldm", "bfl", "diffusers", "lora" or "unknown"
    contains: tuple[str, ...]  # pipeline components: unet / transformer, vae, text_encoder(_2)
    prefix: str = ""  # the denoiser's key prefix ("model.diffusion_model." or "")
    note: str = ""  # a detail worth telling: SD 2.x, SDXL refiner, a LoRA

    def describe(self) -> str:
        """'an SDXL checkpoint (original layout) with unet, vae, text_encoder, text_encoder_2'."""
        if self.layout == "lora":
            return "a LoRA (adapter weights), not a base model"
        if self.arch is None:
            return "a checkpoint whose tensor names match no SD1.5, SDXL or Flux layout"
        layout = {"ldm": "original", "bfl": "Black Forest Labs", "diffusers": "diffusers"}
        name = ARCH_NAMES[self.arch] + (f" ({self.note})" if self.note else "")
        parts = ", ".join(self.contains) or "no known components"
        return (
            f"{ARTICLES[self.arch]} {name} checkpoint ({layout[self.layout]} layout) with {parts}"
        )


def read_tensor_names(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape, without reading any tensor data from a .safetensors file."""
    path = Path(path).expanduser()
    if path.suffix.lower() == ".safetensors":
        return _safetensors_header(path)
    return _pickled_state_dict_shapes(path)


def _safetensors_header(path: Path) -> dict[str, tuple[int, ...]]:
    # The format: 8 bytes little-endian header length, then that many bytes of JSON that map
    # each tensor name to its dtype, shape and byte range (plus an optional __metadata__).
    try:
        with path.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            if not 0 < length <= MAX_HEADER_BYTES:
                raise CheckpointError(f"'{path}' has no valid safetensors header")
            header = json.loads(handle.read(length))
    except (OSError, struct.error, ValueError) as exc:
        raise CheckpointError(f"'{path}' is not a readable .safetensors file ({exc})") from exc
    if not isinstance(header, dict):
        raise CheckpointError(f"'{path}' has no valid safetensors header")
    return {
        name: tuple(entry.get("shape", ()))
        for name, entry in header.items()
        if name != "__metadata__" and isinstance(entry, dict)
    }


def _pickled_state_dict_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    import torch  # torch: only for .ckpt / .bin / .pt files, which are pickles

    try:  # weights_only: a pickle may run code; this refuses anything but tensors and dicts
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:
        raise CheckpointError(
            f"'{path}' could not be read as a PyTorch checkpoint with weights only ({exc}). "
            f"Fix: use a .safetensors version of the model."
        ) from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # Lightning checkpoints of the original SD code
    if not isinstance(state, dict):
        raise CheckpointError(f"'{path}' does not hold a state dict")
    return {name: tuple(value.shape) for name, value in state.items() if hasattr(value, "shape")}


def _has(names: Mapping[str, Any], *prefixes: str) -> bool:
    return any(name.startswith(prefixes) for name in names)


def _flux_prefix(names: Mapping[str, Any]) -> str | None:
    for prefix in ("", LDM_UNET):
        if _has(names, prefix + "double_blocks.") and _has(names, prefix + "single_blocks."):
            return prefix
    return None


def _diffusers_flux_prefix(names: Mapping[str, Any]) -> str | None:
    for prefix in ("", "transformer."):
        if _has(names, prefix + "single_transformer_blocks.") and _has(
            names, prefix + "x_embedder."
        ):
            return prefix
    return None


def _ldm_text_encoders(names: Mapping[str, Any]) -> tuple[str, ...]:
    found = []
    if _has(names, "cond_stage_model.", "conditioner.embedders.0.transformer."):
        found.append("text_encoder")
    if _has(names, "conditioner.embedders.1."):
        found.append("text_encoder_2")
    return tuple(found)


def detect_layout(names: Mapping[str, Any]) -> CheckpointInfo:
    """Which architecture and layout a state dict's tensor names belong to."""
    vae = ("vae",) if _has(names, "first_stage_model.", "vae.") else ()
    if _has(names, "lora_unet_", "lora_te", "diffusion_model.lora") or any(
        ".lora_down." in name or ".lora_A." in name for name in names
    ):
        return CheckpointInfo(None, "lora", (), note="LoRA")
    if (prefix := _flux_prefix(names)) is not None:
        encoders = tuple(
            name
            for name, key in (("text_encoder", "clip_l"), ("text_encoder_2", "t5xxl"))
            if _has(names, f"text_encoders.{key}.")
        )
        return CheckpointInfo("flux", "bfl", ("transformer", *vae, *encoders), prefix)
    if (prefix := _diffusers_flux_prefix(names)) is not None:
        return CheckpointInfo("flux", "diffusers", ("transformer",), prefix)
    if _has(names, LDM_UNET + "input_blocks.") or _has(names, "conditioner.embedders."):
        unet = ("unet",) if _has(names, LDM_UNET + "input_blocks.") else ()
        contains = (*unet, *vae, *_ldm_text_encoders(names))
        if _has(names, "conditioner.embedders.", LDM_UNET + "label_emb."):
            refiner = _has(names, "conditioner.embedders.0.model.")
            note = "refiner" if refiner else ""
            return CheckpointInfo("sdxl", "ldm", contains, LDM_UNET, note)
        note = "SD 2.x" if _has(names, "cond_stage_model.model.") else ""
        return CheckpointInfo("sd15", "ldm", contains, LDM_UNET, note)
    # A diffusers U-Net saved alone (a VAE has down/up blocks too, but no time embedding).
    if _has(names, "down_blocks.") and _has(names, "up_blocks.") and _has(names, "time_embedding."):
        arch = "sdxl" if _has(names, "add_embedding.") else "sd15"
        return CheckpointInfo(arch, "diffusers", ("unet",))
    return CheckpointInfo(None, "unknown", ())


def detect_checkpoint(path: str | Path) -> CheckpointInfo:
    """The architecture, layout and components of the checkpoint file at ``path``.

    Raises CheckpointError when the file is not a readable checkpoint.
    """
    return detect_layout(read_tensor_names(path))


def arch_mismatch(info: CheckpointInfo, chosen: str) -> str | None:
    """The warning when the file's architecture differs from ``model.arch`` (None if it agrees
    or the file's architecture is unknown)."""
    if info.arch is None or info.arch == chosen:
        return None
    wanted = ARCH_NAMES.get(chosen, chosen)
    return (
        f"The checkpoint looks like {info.describe()}, but model.arch is {chosen} ({wanted}). "
        f"Fix: set model.arch to {info.arch}, or pick {ARTICLES.get(chosen, 'a')} {wanted} "
        f"checkpoint."
    )


# ------------------------------------------------------------------------ Flux BFL -> diffusers

# BFL module -> diffusers module, per double block, per single block and outside the blocks.
# RMSNorm weights are ``scale`` in BFL's code; the fused groups are split in this row order.
FLUX_DOUBLE = {
    "img_mod.lin": "norm1.linear",
    "txt_mod.lin": "norm1_context.linear",
    "img_attn.proj": "attn.to_out.0",
    "txt_attn.proj": "attn.to_add_out",
    "img_mlp.0": "ff.net.0.proj",
    "img_mlp.2": "ff.net.2",
    "txt_mlp.0": "ff_context.net.0.proj",
    "txt_mlp.2": "ff_context.net.2",
    "img_attn.norm.query_norm": "attn.norm_q",
    "img_attn.norm.key_norm": "attn.norm_k",
    "txt_attn.norm.query_norm": "attn.norm_added_q",
    "txt_attn.norm.key_norm": "attn.norm_added_k",
}
FLUX_DOUBLE_FUSED = {
    "img_attn.qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
    "txt_attn.qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"),
}
FLUX_SINGLE = {
    "modulation.lin": "norm.linear",
    "linear2": "proj_out",
    "norm.query_norm": "attn.norm_q",
    "norm.key_norm": "attn.norm_k",
}
FLUX_SINGLE_FUSED = {"linear1": ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp")}
FLUX_GLOBAL = {
    "img_in": "x_embedder",
    "txt_in": "context_embedder",
    "final_layer.linear": "proj_out",
    "final_layer.adaLN_modulation.1": "norm_out.linear",
    "time_in.in_layer": "time_text_embed.timestep_embedder.linear_1",
    "time_in.out_layer": "time_text_embed.timestep_embedder.linear_2",
    "vector_in.in_layer": "time_text_embed.text_embedder.linear_1",
    "vector_in.out_layer": "time_text_embed.text_embedder.linear_2",
    "guidance_in.in_layer": "time_text_embed.guidance_embedder.linear_1",
    "guidance_in.out_layer": "time_text_embed.guidance_embedder.linear_2",
}
_BLOCK = re.compile(r"(double|single)_blocks\.(\d+)\.(.+)")


def _split_fused(value: Any, members: tuple[str, ...], width: int) -> list[Any]:
    """Rows of a fused weight per member: Q, K, V are ``width`` rows each; an MLP takes the rest."""
    sizes = [width] * 3 + ([value.shape[0] - 3 * width] if len(members) == 4 else [])
    if sizes[-1] <= 0 or sum(sizes) != value.shape[0]:
        raise CheckpointError(
            f"a fused Flux weight has {value.shape[0]} rows, which does not fit the model "
            f"config's width {width}: the file and the components' transformer config differ"
        )
    return list(value.split(sizes, dim=0))


def flux_bfl_to_diffusers(tensors: Mapping[str, Any], config: Mapping[str, Any]) -> dict:
    """A BFL-layout Flux transformer state dict (prefix already removed) under diffusers names.

    ``config``: the FluxTransformer2DModel config (its width is heads x head dim). Raises
    CheckpointError for a tensor name that is not part of a Flux transformer.
    """
    width = int(config["num_attention_heads"]) * int(config["attention_head_dim"])
    out: dict[str, Any] = {}
    for key, value in tensors.items():
        module, _, param = key.rpartition(".")
        param = "weight" if param == "scale" else param
        if module in FLUX_GLOBAL:
            if module == "final_layer.adaLN_modulation.1":  # BFL: (shift, scale); diffusers swaps
                value = value.roll(value.shape[0] // 2, dims=0)
            out[f"{FLUX_GLOBAL[module]}.{param}"] = value
            continue
        match = _BLOCK.fullmatch(module)
        if match is None:
            raise CheckpointError(f"'{key}' is not a tensor of a Flux transformer")
        kind, index, inner = match.groups()
        block = f"{'transformer_blocks' if kind == 'double' else 'single_transformer_blocks'}"
        names, fused = (
            (FLUX_DOUBLE, FLUX_DOUBLE_FUSED)
            if kind == "double"
            else (FLUX_SINGLE, FLUX_SINGLE_FUSED)
        )
        if inner in names:
            out[f"{block}.{index}.{names[inner]}.{param}"] = value
        elif inner in fused:
            parts = _split_fused(value, fused[inner], width)
            for member, part in zip(fused[inner], parts, strict=True):
                out[f"{block}.{index}.{member}.{param}"] = part.contiguous()
        else:
            raise CheckpointError(f"'{key}' is not a tensor of a Flux transformer")
    return out


def read_flux_transformer(path: str | Path, info: CheckpointInfo, config: Mapping) -> dict:
    """The Flux transformer's tensors from ``path`` under diffusers names (other components of
    an all-in-one file are not read)."""
    from safetensors import safe_open  # safetensors' torch side: only when a model loads

    if Path(path).suffix.lower() != ".safetensors":
        raise CheckpointError(
            f"'{path}': Flux checkpoints are read from .safetensors files only. Fix: use the "
            f".safetensors release of the model."
        )
    own = re.compile(
        r"(double_blocks|single_blocks|transformer_blocks|single_transformer_blocks)\."
    )
    with safe_open(str(path), framework="pt") as handle:
        tensors = {}
        for key in handle.keys():  # noqa: SIM118 - safe_open is not a Mapping
            if not key.startswith(info.prefix):
                continue
            name = key[len(info.prefix) :]
            top = name.rsplit(".", 1)[0]
            if own.match(name) or top in FLUX_GLOBAL or top in FLUX_GLOBAL.values():
                tensors[name] = handle.get_tensor(key)
    return flux_bfl_to_diffusers(tensors, config) if info.layout == "bfl" else tensors
