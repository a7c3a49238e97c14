"""Flux LoRA in the sd-scripts / BFL layout that ComfyUI and diffusers read.

BFL's Flux fuses Q/K/V (and in single blocks the MLP input) into one Linear, so a LoRA on the
separate diffusers modules is saved fused block-diagonally
(``lora_unet_double_blocks_0_img_attn_qkv``, ``single_blocks_N_linear1`` = Q/K/V/MLP) and split
again on load; the other modules map one to one (``FLUX_DOUBLE``, ``FLUX_SINGLE``,
``FLUX_GLOBAL``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from trainer.arch.adapters import tuner_layers
from trainer.arch.base import Arch
from trainer.lora.keys import group_by_module, layer_scale, module_from_webui, module_to_webui

# Flux (diffusers module name inside a block) -> BFL / sd-scripts name. Fused groups list the
# diffusers modules whose weights BFL concatenates (in output-row order).
FLUX_DOUBLE = {
    "attn.to_out.0": "img_attn_proj",
    "attn.to_add_out": "txt_attn_proj",
    "ff.net.0.proj": "img_mlp_0",
    "ff.net.2": "img_mlp_2",
    "ff_context.net.0.proj": "txt_mlp_0",
    "ff_context.net.2": "txt_mlp_2",
    "norm1.linear": "img_mod_lin",
    "norm1_context.linear": "txt_mod_lin",
}
FLUX_DOUBLE_FUSED = {
    "img_attn_qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
    "txt_attn_qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"),
}
FLUX_SINGLE = {"proj_out": "linear2", "norm.linear": "modulation_lin"}
FLUX_SINGLE_FUSED = {"linear1": ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp")}
FLUX_GLOBAL = {
    "x_embedder": "img_in",
    "context_embedder": "txt_in",
    "proj_out": "final_layer_linear",
    "norm_out.linear": "final_layer_adaLN_modulation_1",
    "time_text_embed.timestep_embedder.linear_1": "time_in_in_layer",
    "time_text_embed.timestep_embedder.linear_2": "time_in_out_layer",
    "time_text_embed.text_embedder.linear_1": "vector_in_in_layer",
    "time_text_embed.text_embedder.linear_2": "vector_in_out_layer",
    "time_text_embed.guidance_embedder.linear_1": "guidance_in_in_layer",
    "time_text_embed.guidance_embedder.linear_2": "guidance_in_out_layer",
}


def flux_bfl_plan(arch: Arch) -> tuple[dict[str, str], dict[str, tuple[str, ...]]]:
    """(single module -> BFL name, fused BFL name -> member modules) for this transformer."""
    config = arch.denoiser.config
    single: dict[str, str] = {}
    fused: dict[str, tuple[str, ...]] = {}
    for i in range(config.num_layers):
        for module, bfl in FLUX_DOUBLE.items():
            single[f"transformer_blocks.{i}.{module}"] = f"lora_unet_double_blocks_{i}_{bfl}"
        for bfl, members in FLUX_DOUBLE_FUSED.items():
            fused[f"lora_unet_double_blocks_{i}_{bfl}"] = tuple(
                f"transformer_blocks.{i}.{m}" for m in members
            )
    for i in range(config.num_single_layers):
        for module, bfl in FLUX_SINGLE.items():
            single[f"single_transformer_blocks.{i}.{module}"] = f"lora_unet_single_blocks_{i}_{bfl}"
        for bfl, members in FLUX_SINGLE_FUSED.items():
            fused[f"lora_unet_single_blocks_{i}_{bfl}"] = tuple(
                f"single_transformer_blocks.{i}.{m}" for m in members
            )
    for module, bfl in FLUX_GLOBAL.items():
        single[module] = f"lora_unet_{bfl}"
    return single, fused


def flux_to_bfl(arch: Arch) -> dict[str, Tensor]:
    """Flux LoRA in the sd-scripts / BFL layout; Q/K/V(/MLP) are fused block-diagonally.

    A fused LoRA has rank = sum of member ranks, ``down`` = members' downs stacked, ``up`` =
    block-diagonal (zero blocks for members without a LoRA), so ``up @ down`` is exactly the
    members' deltas stacked; alpha keeps the members' common scale (or scale 1, baked in).
    """
    transformer = arch.denoiser
    layers = dict(tuner_layers(transformer))
    modules = group_by_module(arch.lora_state_dicts()["transformer"])
    single, fused = flux_bfl_plan(arch)
    out: dict[str, Tensor] = {}
    done: set[str] = set()
    for name, params in modules.items():
        if name in single:
            rank, scale = layer_scale(layers[name])
            for suffix, value in module_to_webui(params, rank, scale).items():
                out[f"{single[name]}.{suffix}"] = value.float()
            done.add(name)
    submodules = dict(transformer.named_modules())
    for bfl, members in fused.items():
        present = [m for m in members if m in modules]
        if not present:
            continue
        ranks = {m: layer_scale(layers[m])[0] for m in present}
        scales = {m: layer_scale(layers[m])[1] for m in present}
        pad_rank = max(ranks.values())
        common = len(set(scales.values())) == 1
        downs, ups, total_rank = [], [], 0
        out_rows = [submodules[m].out_features for m in members]
        for m in members:
            in_features = submodules[m].in_features
            if m in modules:
                down = modules[m]["lora_A.weight"].float()
                up = modules[m]["lora_B.weight"].float() * (1.0 if common else scales[m])
            else:
                down = torch.zeros(pad_rank, in_features)
                up = torch.zeros(submodules[m].out_features, pad_rank)
            downs.append(down)
            ups.append((up, down.shape[0]))
            total_rank += down.shape[0]
        up_full = torch.zeros(sum(out_rows), total_rank)
        row = col = 0
        for (up, rank), rows in zip(ups, out_rows, strict=True):
            up_full[row : row + rows, col : col + rank] = up
            row += rows
            col += rank
        scale = next(iter(scales.values())) if common else 1.0
        out[f"{bfl}.lora_down.weight"] = torch.cat(downs, dim=0)
        out[f"{bfl}.lora_up.weight"] = up_full
        out[f"{bfl}.alpha"] = torch.tensor(scale * total_rank)
        done.update(present)
    missing = sorted(set(modules) - done)
    if missing:
        raise ValueError(
            f"these Flux LoRA layers have no web-UI (BFL) name: {missing[:5]} — save with "
            f"save_format 'diffusers', or train the default target modules"
        )
    return out


def flux_from_bfl(arch: Arch, tensors: dict[str, Tensor]) -> dict[str, dict[str, Tensor]]:
    layers = dict(tuner_layers(arch.denoiser))
    single, fused = flux_bfl_plan(arch)
    inverse = {bfl: module for module, bfl in single.items()}
    submodules = dict(arch.denoiser.named_modules())
    grouped: dict[str, dict[str, Tensor]] = {}
    for key, value in tensors.items():
        name, suffix = key.split(".", 1)
        grouped.setdefault(name, {})[suffix] = value.float()
    out: dict[str, Tensor] = {}
    for name, params in grouped.items():
        if name in inverse:
            module = inverse[name]
            _, scale = layer_scale(layers[module])
            for suffix, value in module_from_webui(params, scale).items():
                out[f"{module}.{suffix}"] = value
            continue
        if name not in fused:
            raise ValueError(f"unknown Flux LoRA layer {name!r}")
        members = fused[name]
        present = [m for m in members if m in layers]
        down, up = params["lora_down.weight"], params["lora_up.weight"]
        file_scale = float(params["alpha"]) / down.shape[0] if "alpha" in params else 1.0
        ranks = [layer_scale(layers[m])[0] if m in layers else None for m in members]
        known = sum(r for r in ranks if r is not None)
        absent = [i for i, r in enumerate(ranks) if r is None]
        pad = (down.shape[0] - known) // len(absent) if absent else 0
        row = col = 0
        for member, rank in zip(members, ranks, strict=True):
            rows = submodules[member].out_features
            width = rank if rank is not None else pad
            if member in present:
                _, scale = layer_scale(layers[member])
                out[f"{member}.lora_A.weight"] = down[col : col + width]
                block = up[row : row + rows, col : col + width]
                out[f"{member}.lora_B.weight"] = block * (file_scale / scale)
            row += rows
            col += width
    return {"transformer": out}
