"""How one adapted module's tensors are named: peft's keys and the web UIs' (kohya / LyCORIS).

peft names a parameter ``<module>.lora_A.weight``; kohya tools, A1111 / Forge / ComfyUI read
``lora_unet_<module with _>.lora_down.weight`` with an ``alpha`` per module (LoRA, LoCon, DoRA's
``dora_scale``) or LyCORIS' ``hada_*`` / ``lokr_*`` tensors. The functions here convert one
module's tensors between the two, re-expressing the scale (``alpha / rank`` in files, peft's
``scaling`` in memory); ``trainer.lora.io`` applies them to whole networks.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from trainer.arch.adapters import ADAPTER_NAME

# peft parameter suffix -> webui suffix
LORA_SUFFIXES = {
    "lora_A.weight": "lora_down.weight",
    "lora_B.weight": "lora_up.weight",
    "lora_magnitude_vector": "dora_scale",
}
LYCORIS_SUFFIXES = (
    "hada_w1_a",
    "hada_w1_b",
    "hada_w2_a",
    "hada_w2_b",
    "hada_t1",
    "hada_t2",
    "lokr_w1",
    "lokr_w1_a",
    "lokr_w1_b",
    "lokr_w2",
    "lokr_w2_a",
    "lokr_w2_b",
    "lokr_t2",
)
PEFT_SUFFIXES = (*LORA_SUFFIXES, *LYCORIS_SUFFIXES)

# Key prefix per adapted pipeline component in the web-UI layout.
KOHYA_PREFIXES = {
    "sd15": {"unet": "lora_unet", "text_encoder": "lora_te"},
    "sdxl": {"unet": "lora_unet", "text_encoder": "lora_te1", "text_encoder_2": "lora_te2"},
    "flux": {"transformer": "lycoris", "text_encoder": "lora_te1"},
}


def split_key(key: str) -> tuple[str, str]:
    """peft key -> (module name, parameter suffix)."""
    for suffix in PEFT_SUFFIXES:
        if key.endswith("." + suffix):
            return key[: -len(suffix) - 1], suffix
    raise ValueError(f"unrecognised adapter parameter {key!r}")


def group_by_module(state: dict[str, Tensor]) -> dict[str, dict[str, Tensor]]:
    """A peft state dict as {module name: {parameter suffix: tensor}}."""
    modules: dict[str, dict[str, Tensor]] = {}
    for key, value in state.items():
        module, suffix = split_key(key)
        modules.setdefault(module, {})[suffix] = value
    return modules


def layer_scale(layer: Any) -> tuple[int, float]:
    """(rank, scale) of a peft layer's default adapter."""
    return int(layer.r[ADAPTER_NAME]), float(layer.scaling[ADAPTER_NAME])


def module_to_webui(params: dict[str, Tensor], rank: int, scale: float) -> dict[str, Tensor]:
    """One adapted module's tensors in kohya / LyCORIS naming (without the module prefix)."""
    out: dict[str, Tensor] = {}
    if "lora_A.weight" in params:
        down, up = params["lora_A.weight"], params["lora_B.weight"]
        out["lora_down.weight"] = down
        out["lora_up.weight"] = up
        out["alpha"] = torch.tensor(scale * down.shape[0])
        if "lora_magnitude_vector" in params:
            # kohya / LyCORIS keep DoRA's magnitude per output row as (out, 1[, 1, 1]).
            magnitude = params["lora_magnitude_vector"]
            out["dora_scale"] = magnitude.reshape(-1, *([1] * (down.dim() - 1)))
        return out
    if "hada_w1_a" in params:
        out.update(params)
        out["alpha"] = torch.tensor(scale * rank)
        return out
    # LoKr: LyCORIS (and ComfyUI) use scale 1 when neither factor is decomposed; bake ours in.
    out.update(params)
    if "lokr_w1" in params and "lokr_w2" in params:
        out["lokr_w1"] = params["lokr_w1"] * scale
        out["alpha"] = torch.tensor(float(rank))
    else:
        out["alpha"] = torch.tensor(scale * rank)
    return out


def module_from_webui(params: dict[str, Tensor], scale: float) -> dict[str, Tensor]:
    alpha = params.get("alpha")
    if "lora_down.weight" in params:
        down, up = params["lora_down.weight"], params["lora_up.weight"]
        file_scale = float(alpha) / down.shape[0] if alpha is not None else 1.0
        out = {"lora_A.weight": down, "lora_B.weight": up * (file_scale / scale)}
        if "dora_scale" in params:
            out["lora_magnitude_vector"] = params["dora_scale"].reshape(-1)
        return out
    out = {k: v for k, v in params.items() if k != "alpha"}
    if "hada_w1_a" in params:
        rank = params["hada_w1_b"].shape[0]
        file_scale = float(alpha) / rank if alpha is not None else 1.0
        out["hada_w1_a"] = params["hada_w1_a"] * (file_scale / scale)
        return out
    if "lokr_w1" in params and "lokr_w2" in params:
        file_scale = 1.0
    else:
        dim = (params.get("lokr_w2_b") if "lokr_w2_b" in params else params["lokr_w1_b"]).shape[0]
        file_scale = float(alpha) / dim if alpha is not None else 1.0
    key = "lokr_w1" if "lokr_w1" in params else "lokr_w1_a"
    out[key] = params[key] * (file_scale / scale)
    return out


def classic_prefix(module: torch.nn.Module) -> str:
    """The prefix ``text_model.`` for a flattened (transformers 5) CLIPTextModel, else "".

    Files keep the classic module names (``text_model.encoder.layers.0...``) that kohya tools,
    web UIs and older diffusers/transformers expect; diffusers strips the prefix when loading.
    """
    flattened = type(module).__name__ == "CLIPTextModel" and not hasattr(module, "text_model")
    return "text_model." if flattened else ""


def kohya_name(prefix: str, module: str) -> str:
    return f"{prefix}_{module.replace('.', '_')}"
