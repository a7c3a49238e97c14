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
from trainer.arch.single_file import FLUX_DOUBLE as BFL_DOUBLE
from trainer.arch.single_file import FLUX_DOUBLE_FUSED as BFL_DOUBLE_FUSED
from trainer.arch.single_file import FLUX_GLOBAL as BFL_GLOBAL
from trainer.arch.single_file import FLUX_SINGLE as BFL_SINGLE
from trainer.arch.single_file import FLUX_SINGLE_FUSED as BFL_SINGLE_FUSED
from trainer.lora.keys import group_by_module, layer_scale, module_from_webui, module_to_webui


# Flux (diffusers module name inside a block) -> sd-scripts LoRA name: the checkpoint's BFL
# names (one home: trainer.arch.single_file) with dots as underscores. Fused groups list the
# diffusers modules whose weights BFL concatenates (in output-row order).
def _lora_names(bfl_to_diffusers: dict[str, str]) -> dict[str, str]:
    return {module: bfl.replace(".", "_") for bfl, module in bfl_to_diffusers.items()}


def _lora_fused(fused: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    return {bfl.replace(".", "_"): members for bfl, members in fused.items()}


FLUX_DOUBLE = _lora_names(BFL_DOUBLE)
FLUX_DOUBLE_FUSED = _lora_fused(BFL_DOUBLE_FUSED)
FLUX_SINGLE = _lora_names(BFL_SINGLE)
FLUX_SINGLE_FUSED = _lora_fused(BFL_SINGLE_FUSED)
FLUX_GLOBAL = _lora_names(BFL_GLOBAL)


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
