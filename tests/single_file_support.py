"""Single-file checkpoints made from the tiny demo pipelines, in the layouts users download.

Not a test module (pytest only collects ``test_*.py``); tests/test_single_file.py imports it.

SD1.5 and SDXL full checkpoints use the original Stable Diffusion ("LDM") key names
(``model.diffusion_model.input_blocks...``, ``first_stage_model...``, ``cond_stage_model...`` /
``conditioner.embedders...``); a Flux transformer-only file uses Black Forest Labs' names
(``double_blocks.0.img_attn.qkv``: Q/K/V fused into one matrix). The maps here go from diffusers
names to those layouts, written from the structure of the models (which LDM block index holds
which diffusers resnet / attention / sampler). They are checked against diffusers' own converters
the other way round (tests/test_single_file.py: every tensor comes back unchanged), so a mistake
here fails a test rather than hiding one in the loader.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from diffusers.loaders.single_file_utils import DIFFUSERS_TO_LDM_MAPPING
from safetensors.torch import load_file, save_file

Tensors = dict[str, torch.Tensor]

# ----------------------------------------------------------------------------------------- U-Net

RESNET_TO_LDM = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}


def _resnet_rest(rest: str) -> str:
    head, _, tail = rest.partition(".")
    return f"{RESNET_TO_LDM[head]}.{tail}"


def unet_to_ldm(state: Tensors, config: dict) -> Tensors:
    """A diffusers UNet2DConditionModel state dict under ``model.diffusion_model.`` names.

    LDM numbers its blocks flat: ``input_blocks.0`` is conv_in, then each down block takes
    ``layers_per_block`` slots (resnet ``.0`` + attention ``.1``) and one more for its
    downsampler; each up block takes ``layers_per_block + 1`` slots, the upsampler sitting in the
    last one after the resnet (and the attention, when the block has one).
    """
    per_down = config["layers_per_block"]
    per_up = per_down + 1
    up_has_attention = {
        int(key.split(".")[1])
        for key in state
        if key.startswith("up_blocks.") and ".attentions." in key
    }
    top = {
        **DIFFUSERS_TO_LDM_MAPPING["unet"]["layers"],
        **DIFFUSERS_TO_LDM_MAPPING["unet"]["addition_embed_type"],
    }
    out: Tensors = {}
    for key, value in state.items():
        if key in top:
            ldm = top[key]
        elif m := re.fullmatch(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
            block, kind, layer, rest = int(m[1]), m[2], int(m[3]), m[4]
            slot = 1 + block * (per_down + 1) + layer
            ldm = f"input_blocks.{slot}." + (
                f"0.{_resnet_rest(rest)}" if kind == "resnets" else f"1.{rest}"
            )
        elif m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
            ldm = f"input_blocks.{(int(m[1]) + 1) * (per_down + 1)}.0.op.{m[2]}"
        elif m := re.fullmatch(r"mid_block\.resnets\.(\d+)\.(.+)", key):
            ldm = f"middle_block.{2 * int(m[1])}.{_resnet_rest(m[2])}"
        elif m := re.fullmatch(r"mid_block\.attentions\.0\.(.+)", key):
            ldm = f"middle_block.1.{m[1]}"
        elif m := re.fullmatch(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
            block, kind, layer, rest = int(m[1]), m[2], int(m[3]), m[4]
            slot = block * per_up + layer
            ldm = f"output_blocks.{slot}." + (
                f"0.{_resnet_rest(rest)}" if kind == "resnets" else f"1.{rest}"
            )
        elif m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
            block = int(m[1])
            index = 2 if block in up_has_attention else 1
            ldm = f"output_blocks.{block * per_up + per_up - 1}.{index}.conv.{m[2]}"
        else:
            raise KeyError(f"no LDM name for U-Net key {key}")
        out["model.diffusion_model." + ldm] = value
    return out


# ------------------------------------------------------------------------------------------- VAE

VAE_ATTENTION_TO_LDM = {
    "group_norm": "norm",
    "to_q": "q",
    "to_k": "k",
    "to_v": "v",
    "to_out.0": "proj_out",
}


def vae_to_ldm(state: Tensors, config: dict) -> Tensors:
    """A diffusers AutoencoderKL state dict under ``first_stage_model.`` names (the decoder's
    up blocks are numbered from the bottom in LDM; mid-block attention is 1x1 convolutions)."""
    top = DIFFUSERS_TO_LDM_MAPPING["vae"]
    levels = len(config["up_block_types"])
    out: Tensors = {}
    for key, value in state.items():
        if key in top:
            ldm = top[key]
        elif m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            ldm = f"encoder.down.{m[1]}.block.{m[2]}.{m[3]}"
        elif m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.(.+)", key):
            ldm = f"encoder.down.{m[1]}.downsample.{m[2]}"
        elif m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            ldm = f"decoder.up.{levels - 1 - int(m[1])}.block.{m[2]}.{m[3]}"
        elif m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.(.+)", key):
            ldm = f"decoder.up.{levels - 1 - int(m[1])}.upsample.{m[2]}"
        elif m := re.fullmatch(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)", key):
            ldm = f"{m[1]}.mid.block_{int(m[2]) + 1}.{m[3]}"
        elif m := re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)\.(\w+)", key):
            ldm = f"{m[1]}.mid.attn_1.{VAE_ATTENTION_TO_LDM[m[2]]}.{m[3]}"
            if value.ndim == 2:  # LDM's attention projections are 1x1 convolutions
                value = value[:, :, None, None]
        else:
            raise KeyError(f"no LDM name for VAE key {key}")
        out["first_stage_model." + ldm.replace("conv_shortcut", "nin_shortcut")] = value
    return out


# -------------------------------------------------------------------------------- text encoders


def clip_to_ldm(state: Tensors, prefix: str) -> Tensors:
    """A transformers CLIP text model under an LDM prefix (transformers 5 saves CLIPTextModel
    without the ``text_model.`` level that checkpoints carry)."""
    return {
        prefix + (key if key.startswith("text_model.") else f"text_model.{key}"): value
        for key, value in state.items()
    }


OPEN_CLIP_LAYER = {
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
    "self_attn.out_proj": "attn.out_proj",
}


def open_clip_to_ldm(state: Tensors, prefix: str) -> Tensors:
    """CLIPTextModelWithProjection as OpenCLIP stores it (SDXL's second text encoder): fused
    Q/K/V ``in_proj``, ``resblocks``, a transposed ``text_projection`` matrix."""
    named = {
        "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
        "text_model.embeddings.position_embedding.weight": "positional_embedding",
        "text_model.final_layer_norm.weight": "ln_final.weight",
        "text_model.final_layer_norm.bias": "ln_final.bias",
    }
    out: Tensors = {}
    fused: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if key in named:
            out[prefix + named[key]] = value
        elif key == "text_projection.weight":
            out[prefix + "text_projection"] = value.T.contiguous()
        elif m := re.fullmatch(
            r"text_model\.encoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(\w+)", key
        ):
            fused.setdefault(f"transformer.resblocks.{m[1]}.attn.in_proj_{m[3]}", {})[m[2]] = value
        elif m := re.fullmatch(r"text_model\.encoder\.layers\.(\d+)\.(.+)\.(\w+)", key):
            out[f"{prefix}transformer.resblocks.{m[1]}.{OPEN_CLIP_LAYER[m[2]]}.{m[3]}"] = value
        else:
            raise KeyError(f"no OpenCLIP name for text encoder key {key}")
    for name, parts in fused.items():
        out[prefix + name] = torch.cat([parts["q"], parts["k"], parts["v"]])
    return out


# ------------------------------------------------------------------------------------------ Flux

FLUX_TOP = {
    "x_embedder": "img_in",
    "context_embedder": "txt_in",
    "proj_out": "final_layer.linear",
    "time_text_embed.timestep_embedder.linear_1": "time_in.in_layer",
    "time_text_embed.timestep_embedder.linear_2": "time_in.out_layer",
    "time_text_embed.text_embedder.linear_1": "vector_in.in_layer",
    "time_text_embed.text_embedder.linear_2": "vector_in.out_layer",
    "time_text_embed.guidance_embedder.linear_1": "guidance_in.in_layer",
    "time_text_embed.guidance_embedder.linear_2": "guidance_in.out_layer",
}
FLUX_DOUBLE = {
    "norm1.linear": "img_mod.lin",
    "norm1_context.linear": "txt_mod.lin",
    "attn.to_out.0": "img_attn.proj",
    "attn.to_add_out": "txt_attn.proj",
    "ff.net.0.proj": "img_mlp.0",
    "ff.net.2": "img_mlp.2",
    "ff_context.net.0.proj": "txt_mlp.0",
    "ff_context.net.2": "txt_mlp.2",
    "attn.norm_q": "img_attn.norm.query_norm",
    "attn.norm_k": "img_attn.norm.key_norm",
    "attn.norm_added_q": "txt_attn.norm.query_norm",
    "attn.norm_added_k": "txt_attn.norm.key_norm",
}
FLUX_DOUBLE_FUSED = {
    "img_attn.qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
    "txt_attn.qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"),
}
FLUX_SINGLE = {
    "norm.linear": "modulation.lin",
    "proj_out": "linear2",
    "attn.norm_q": "norm.query_norm",
    "attn.norm_k": "norm.key_norm",
}
FLUX_SINGLE_FUSED = {"linear1": ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp")}


def _bfl_param(param: str, module_bfl: str) -> str:
    """RMSNorm weights are called ``scale`` in BFL's code."""
    return "scale" if module_bfl.endswith("_norm") and param == "weight" else param


def flux_to_bfl(state: Tensors, prefix: str = "") -> Tensors:
    """A diffusers FluxTransformer2DModel state dict in Black Forest Labs' layout."""
    out: Tensors = {}
    fused: dict[str, list[tuple[int, torch.Tensor]]] = {}
    for key, value in state.items():
        module, _, param = key.rpartition(".")
        if module == "norm_out.linear":  # BFL's final modulation is (shift, scale)
            shift_scale = torch.cat(value.chunk(2, dim=0)[::-1])
            out[f"final_layer.adaLN_modulation.1.{param}"] = shift_scale
            continue
        if module in FLUX_TOP:
            out[f"{FLUX_TOP[module]}.{param}"] = value
            continue
        m = re.fullmatch(r"(transformer_blocks|single_transformer_blocks)\.(\d+)\.(.+)", module)
        if m is None:
            raise KeyError(f"no BFL name for Flux key {key}")
        double = m[1] == "transformer_blocks"
        block = f"{'double' if double else 'single'}_blocks.{m[2]}"
        names, groups = (
            (FLUX_DOUBLE, FLUX_DOUBLE_FUSED) if double else (FLUX_SINGLE, FLUX_SINGLE_FUSED)
        )
        if m[3] in names:
            bfl = names[m[3]]
            out[f"{block}.{bfl}.{_bfl_param(param, bfl)}"] = value
            continue
        for bfl, members in groups.items():
            if m[3] in members:
                fused.setdefault(f"{block}.{bfl}.{param}", []).append((members.index(m[3]), value))
                break
        else:
            raise KeyError(f"no BFL name for Flux key {key}")
    for name, parts in fused.items():
        out[name] = torch.cat([value for _, value in sorted(parts, key=lambda part: part[0])])
    return {prefix + key: value for key, value in out.items()}


# ----------------------------------------------------------------------------------------- files


def _component(folder: Path, name: str) -> tuple[Tensors, dict]:
    sub = folder / name
    weights = next(sub.glob("*.safetensors"))
    return load_file(weights), json.loads((sub / "config.json").read_text(encoding="utf-8"))


def write_sd15_checkpoint(pipeline: Path, out: Path) -> Path:
    """The tiny SD1.5 pipeline as one original-layout checkpoint (U-Net, VAE, CLIP)."""
    unet, unet_config = _component(pipeline, "unet")
    vae, vae_config = _component(pipeline, "vae")
    clip, _ = _component(pipeline, "text_encoder")
    tensors = {
        **unet_to_ldm(unet, unet_config),
        **vae_to_ldm(vae, vae_config),
        **clip_to_ldm(clip, "cond_stage_model.transformer."),
    }
    save_file(tensors, out)
    return out


def write_sdxl_checkpoint(pipeline: Path, out: Path) -> Path:
    """The tiny SDXL pipeline as one original-layout checkpoint (U-Net, VAE, CLIP-L, OpenCLIP)."""
    unet, unet_config = _component(pipeline, "unet")
    vae, vae_config = _component(pipeline, "vae")
    clip, _ = _component(pipeline, "text_encoder")
    open_clip, _ = _component(pipeline, "text_encoder_2")
    tensors = {
        **unet_to_ldm(unet, unet_config),
        **vae_to_ldm(vae, vae_config),
        **clip_to_ldm(clip, "conditioner.embedders.0.transformer."),
        **open_clip_to_ldm(open_clip, "conditioner.embedders.1.model."),
    }
    save_file(tensors, out)
    return out


def write_flux_transformer(
    pipeline: Path, out: Path, layout: str = "bfl", prefix: str = ""
) -> Path:
    """The tiny Flux transformer alone, like flux1-dev.safetensors (``layout="bfl"``) or as
    diffusers saves it (``layout="diffusers"``)."""
    state, _ = _component(pipeline, "transformer")
    tensors = flux_to_bfl(state, prefix) if layout == "bfl" else state
    save_file(tensors, out)
    return out
