"""Save trained adapters in the layouts other tools load, with readable metadata, atomically.

Two layouts (``save.save_format``):

- **diffusers**: ``<out>/<name>/pytorch_lora_weights.safetensors`` written by the pipeline class's
  own ``save_lora_weights`` (keys ``unet.<module>.lora_A.weight`` ... in peft's format, plus the
  peft adapter config under ``lora_adapter_metadata`` so rank/alpha/DoRA/LoCon patterns survive).
  ``pipe.load_lora_weights(folder)`` reads it.
- **webui**: one ``<out>/<name>.safetensors`` for A1111 / Forge / ComfyUI / kohya tools:
  SD1.5 / SDXL LoRA, LoCon and DoRA as kohya keys (``lora_unet_<module>.lora_down.weight``,
  ``.lora_up.weight``, ``.alpha``, ``.dora_scale``; the same keys diffusers'
  ``convert_state_dict_to_kohya`` makes, ``lora_te_`` / ``lora_te1_`` / ``lora_te2_`` for text
  encoders); LoHa / LoKr in the LyCORIS layout (``.hada_w1_a`` ..., ``.lokr_w1`` ...). Flux LoRA
  in the sd-scripts/BFL layout ComfyUI and diffusers read (``lora_unet_double_blocks_0_img_attn_qkv``
  with Q/K/V fused block-diagonally, ``single_blocks_N_linear1`` = Q/K/V/MLP); other Flux adapter
  types as ComfyUI's ``lycoris_<module>`` keys.

Both carry the same string metadata: base model, arch, trigger word, network type, rank, alpha,
steps, resolution, and the ``ss_*`` / ``modelspec.*`` keys kohya tools and web UIs read.

``load_lora_file(arch, path)`` reads either layout back into an Arch that has the same adapters
(resume, or start from ``model.lora_path``).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from trainer.arch.base import ADAPTER_NAME, DTYPES, tuner_layers

if TYPE_CHECKING:
    from trainer.arch.base import Arch

WEIGHTS_NAME = "pytorch_lora_weights.safetensors"
ADAPTER_METADATA_KEY = "lora_adapter_metadata"  # what diffusers reads the peft config from
SAVE_FORMATS = ("both", "webui", "diffusers")

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

KOHYA_PREFIXES = {
    "sd15": {"unet": "lora_unet", "text_encoder": "lora_te"},
    "sdxl": {"unet": "lora_unet", "text_encoder": "lora_te1", "text_encoder_2": "lora_te2"},
    "flux": {"transformer": "lycoris", "text_encoder": "lora_te1"},
}
BASE_MODEL_VERSION = {"sd15": "sd_v1", "sdxl": "sdxl_base_v1-0", "flux": "flux1"}
MODELSPEC_ARCH = {
    "sd15": "stable-diffusion-v1/lora",
    "sdxl": "stable-diffusion-xl-v1-base/lora",
    "flux": "flux-1-dev/lora",
}

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


# ---------------------------------------------------------------------------------- files


def atomic_save_file(tensors: dict[str, Tensor], path: Path, metadata: dict[str, str]) -> Path:
    """Write a .safetensors file via a temp file in the same folder and os.replace."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
        save_file(tensors, tmp, metadata={k: str(v) for k, v in metadata.items()})
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def lora_file(path: str | Path) -> Path:
    """The weights file of a LoRA given as a file or as a diffusers folder."""
    path = Path(path)
    if path.is_dir():
        candidate = path / WEIGHTS_NAME
        if candidate.is_file():
            return candidate
        files = sorted(path.glob("*.safetensors"))
        if len(files) == 1:
            return files[0]
        raise FileNotFoundError(f"no {WEIGHTS_NAME} (or single .safetensors file) in {path}")
    if not path.is_file():
        raise FileNotFoundError(f"LoRA file not found: {path}")
    return path


def read_lora_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata in a LoRA's safetensors header (file or diffusers folder)."""
    from safetensors import safe_open

    with safe_open(str(lora_file(path)), framework="pt") as handle:
        return dict(handle.metadata() or {})


def read_lora_tensors(path: str | Path) -> dict[str, Tensor]:
    from safetensors.torch import load_file

    return load_file(str(lora_file(path)))


# ---------------------------------------------------------------------------------- metadata


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, bool | int | float):
        return str(value)  # kohya writes True / 16 / 8.0
    return json.dumps(value, default=str)


def lora_metadata(arch: Arch, extra: dict[str, Any] | None = None) -> dict[str, str]:
    """Header metadata (strings only): ours, kohya's ``ss_*`` keys and ``modelspec.*``."""
    cfg, net = arch.cfg, arch.network
    if net is None:
        raise ValueError("no adapters: call add_lora before saving")
    dataset = cfg.datasets[0] if cfg.datasets else None
    rank = "full" if net.type == "lokr" and net.lokr_full_rank else net.linear
    alpha = net.linear_alpha
    resolution = list(dataset.resolution) if dataset else []
    network_args: dict[str, str] = {}
    module = "networks.lora_flux" if arch.name == "flux" else "networks.lora"
    if net.type in ("loha", "lokr"):
        module = "lycoris.kohya"
        network_args["algo"] = net.type
        if net.type == "lokr":
            network_args["factor"] = str(net.lokr_factor)
            network_args["full_matrix"] = str(net.lokr_full_rank)
    elif net.type == "dora":
        module = "lycoris.kohya"
        network_args.update(algo="lora", dora_wd="True")
    if net.conv or net.type == "locon":
        network_args["conv_dim"] = str(net.conv or net.linear)
        network_args["conv_alpha"] = str(net.conv_alpha or net.conv or net.linear_alpha)
    meta: dict[str, Any] = {
        "base_model": cfg.model.name_or_path,
        "arch": arch.name,
        "trigger_word": (dataset.trigger_word if dataset else None) or "",
        "network_type": net.type,
        "rank": rank,
        "alpha": alpha,
        "conv_rank": net.conv or "",
        "steps": cfg.train.steps,
        "resolution": resolution,
        "name": cfg.name,
        "ss_network_module": module,
        "ss_network_dim": rank,
        "ss_network_alpha": alpha,
        "ss_network_args": network_args,
        "ss_base_model_version": BASE_MODEL_VERSION[arch.name],
        "ss_sd_model_name": cfg.model.name_or_path,
        "ss_output_name": cfg.name,
        "ss_v2": False,
        "ss_resolution": resolution,
        "ss_max_train_steps": cfg.train.steps,
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": MODELSPEC_ARCH[arch.name],
        "modelspec.implementation": "diffusers",
        "modelspec.title": cfg.name,
        "modelspec.trigger_phrase": (dataset.trigger_word if dataset else None) or "",
    }
    for key, value in (extra or {}).items():
        meta[key] = value
        if key == "steps":
            meta["ss_steps"] = value
            meta["ss_max_train_steps"] = value
        elif key == "trigger_word":
            meta["modelspec.trigger_phrase"] = value
    return {key: _text(value) for key, value in meta.items()}


# ---------------------------------------------------------------------------------- saving


def save_lora(
    arch: Arch,
    out_dir: str | Path,
    name: str,
    formats: str = "both",
    dtype: str = "fp16",
    metadata: dict[str, Any] | None = None,
) -> list[Path]:
    """Save the arch's adapters; returns the written weight files (webui first, then diffusers).

    ``formats``: "both" | "webui" | "diffusers"; ``dtype``: "fp16" | "bf16" | "fp32".
    """
    if formats not in SAVE_FORMATS:
        raise ValueError(f"formats must be one of {SAVE_FORMATS}, got {formats!r}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {tuple(DTYPES)}, got {dtype!r}")
    out_dir = Path(out_dir)
    header = lora_metadata(arch, metadata)
    written: list[Path] = []
    if formats in ("both", "webui"):
        tensors = _cast(webui_state_dict(arch), DTYPES[dtype])
        written.append(atomic_save_file(tensors, out_dir / f"{name}.safetensors", header))
    if formats in ("both", "diffusers"):
        written.append(save_diffusers_layout(arch, out_dir / name, DTYPES[dtype], header))
    return written


def _cast(tensors: dict[str, Tensor], dtype: torch.dtype) -> dict[str, Tensor]:
    return {
        k: (v.to(dtype) if v.is_floating_point() and v.dim() > 0 else v.float())
        for k, v in tensors.items()
    }


def save_diffusers_layout(arch: Arch, folder: Path, dtype: torch.dtype, header: dict) -> Path:
    """``save_lora_weights`` of the pipeline class, with our metadata and an atomic write."""
    state_dicts = arch.lora_state_dicts()
    if not state_dicts:
        raise ValueError("no adapters: call add_lora before saving")
    parts = arch.adapted_components()
    layers = {
        f"{name}_lora_layers": {
            classic_prefix(parts[name]) + key: value for key, value in _cast(sd, dtype).items()
        }
        for name, sd in state_dicts.items()
    }
    adapter_meta: dict[str, Any] = {}
    for name in state_dicts:
        for key, value in parts[name].peft_config[ADAPTER_NAME].to_dict().items():
            adapter_meta[f"{name}.{key}"] = value
    full_header = dict(header)
    full_header[ADAPTER_METADATA_KEY] = json.dumps(
        adapter_meta, indent=2, sort_keys=True, default=_json_default
    )
    path = folder / WEIGHTS_NAME

    def save_function(weights: dict[str, Tensor], filename: str) -> None:
        atomic_save_file(weights, Path(filename), full_header)

    arch.pipeline_class().save_lora_weights(
        str(folder), **layers, save_function=save_function, safe_serialization=True
    )
    return path


def _json_default(value: Any) -> Any:
    if isinstance(value, set | frozenset | tuple):
        return sorted(value) if isinstance(value, set | frozenset) else list(value)
    return str(value)


# ---------------------------------------------------------------------------------- webui keys


def _split_key(key: str) -> tuple[str, str]:
    """peft key -> (module name, parameter suffix)."""
    for suffix in PEFT_SUFFIXES:
        if key.endswith("." + suffix):
            return key[: -len(suffix) - 1], suffix
    raise ValueError(f"unrecognised adapter parameter {key!r}")


def _group_by_module(state: dict[str, Tensor]) -> dict[str, dict[str, Tensor]]:
    modules: dict[str, dict[str, Tensor]] = {}
    for key, value in state.items():
        module, suffix = _split_key(key)
        modules.setdefault(module, {})[suffix] = value
    return modules


def _layer_scale(layer: Any) -> tuple[int, float]:
    """(rank, scale) of a peft layer's default adapter."""
    return int(layer.r[ADAPTER_NAME]), float(layer.scaling[ADAPTER_NAME])


def _module_to_webui(params: dict[str, Tensor], rank: int, scale: float) -> dict[str, Tensor]:
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


def _webui_prefixes(arch: Arch) -> dict[str, str]:
    prefixes = KOHYA_PREFIXES[arch.name]
    return {name: prefixes[name] for name in arch.adapted_components()}


def classic_prefix(module: torch.nn.Module) -> str:
    """The prefix ``text_model.`` for a flattened (transformers 5) CLIPTextModel, else "".

    Files keep the classic module names (``text_model.encoder.layers.0...``) that kohya tools,
    web UIs and older diffusers/transformers expect; diffusers strips the prefix when loading.
    """
    flattened = type(module).__name__ == "CLIPTextModel" and not hasattr(module, "text_model")
    return "text_model." if flattened else ""


def _kohya_name(prefix: str, module: str) -> str:
    return f"{prefix}_{module.replace('.', '_')}"


def webui_state_dict(arch: Arch) -> dict[str, Tensor]:
    """The adapters in the web-UI layout (see the module docstring), float32."""
    net = arch.network
    if net is None:
        raise ValueError("no adapters: call add_lora before saving")
    if arch.name == "flux" and net.type == "lora":
        return flux_to_bfl(arch)
    out: dict[str, Tensor] = {}
    parts = arch.adapted_components()
    state_dicts = arch.lora_state_dicts()
    for comp, prefix in _webui_prefixes(arch).items():
        layers = dict(tuner_layers(parts[comp]))
        classic = classic_prefix(parts[comp])
        for module, params in _group_by_module(state_dicts[comp]).items():
            rank, scale = _layer_scale(layers[module])
            name = _kohya_name(prefix, classic + module)
            for suffix, value in _module_to_webui(params, rank, scale).items():
                out[f"{name}.{suffix}"] = value.float()
    return out


def _flux_bfl_plan(arch: Arch) -> tuple[dict[str, str], dict[str, tuple[str, ...]]]:
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
    modules = _group_by_module(arch.lora_state_dicts()["transformer"])
    single, fused = _flux_bfl_plan(arch)
    out: dict[str, Tensor] = {}
    done: set[str] = set()
    for name, params in modules.items():
        if name in single:
            rank, scale = _layer_scale(layers[name])
            for suffix, value in _module_to_webui(params, rank, scale).items():
                out[f"{single[name]}.{suffix}"] = value.float()
            done.add(name)
    submodules = dict(transformer.named_modules())
    for bfl, members in fused.items():
        present = [m for m in members if m in modules]
        if not present:
            continue
        ranks = {m: _layer_scale(layers[m])[0] for m in present}
        scales = {m: _layer_scale(layers[m])[1] for m in present}
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


# ---------------------------------------------------------------------------------- loading


def load_lora_file(arch: Arch, path: str | Path) -> None:
    """Load a LoRA file (either layout) into an Arch whose adapters match (same type and rank)."""
    tensors = read_lora_tensors(path)
    arch.load_lora_state(state_dicts_from_file(arch, tensors))


def state_dicts_from_file(arch: Arch, tensors: dict[str, Tensor]) -> dict[str, dict[str, Tensor]]:
    """peft state dicts per component from a diffusers-layout or web-UI-layout tensor dict."""
    components = set(arch.adapted_components())
    first = next(iter(tensors), "")
    component = first.split(".", 1)[0]
    if component in components or component in ("unet", "transformer", "text_encoder"):
        out: dict[str, dict[str, Tensor]] = {}
        parts = arch.adapted_components()
        for key, value in tensors.items():
            comp, rest = key.split(".", 1)
            if comp in parts and classic_prefix(parts[comp]):
                rest = rest.removeprefix(classic_prefix(parts[comp]))
            out.setdefault(comp, {})[rest] = value.float()
        return out
    return from_webui(arch, tensors)


def from_webui(arch: Arch, tensors: dict[str, Tensor]) -> dict[str, dict[str, Tensor]]:
    """Invert ``webui_state_dict`` for this arch's adapters (scales are re-expressed)."""
    if arch.name == "flux" and arch.network is not None and arch.network.type == "lora":
        return _from_bfl(arch, tensors)
    parts = arch.adapted_components()
    by_name: dict[str, tuple[str, str, Any]] = {}
    for comp, prefix in _webui_prefixes(arch).items():
        classic = classic_prefix(parts[comp])
        for module, layer in tuner_layers(parts[comp]):
            by_name[_kohya_name(prefix, classic + module)] = (comp, module, layer)
    grouped: dict[str, dict[str, Tensor]] = {}
    for key, value in tensors.items():
        name, suffix = key.split(".", 1)
        grouped.setdefault(name, {})[suffix] = value.float()
    unknown = sorted(set(grouped) - set(by_name))
    if unknown:
        raise ValueError(f"LoRA layers not present in this network: {unknown[:5]}")
    out: dict[str, dict[str, Tensor]] = {}
    for name, params in grouped.items():
        comp, module, layer = by_name[name]
        _, scale = _layer_scale(layer)
        target = out.setdefault(comp, {})
        for suffix, value in _module_from_webui(params, scale).items():
            target[f"{module}.{suffix}"] = value
    return out


def _module_from_webui(params: dict[str, Tensor], scale: float) -> dict[str, Tensor]:
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


def _from_bfl(arch: Arch, tensors: dict[str, Tensor]) -> dict[str, dict[str, Tensor]]:
    layers = dict(tuner_layers(arch.denoiser))
    single, fused = _flux_bfl_plan(arch)
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
            _, scale = _layer_scale(layers[module])
            for suffix, value in _module_from_webui(params, scale).items():
                out[f"{module}.{suffix}"] = value
            continue
        if name not in fused:
            raise ValueError(f"unknown Flux LoRA layer {name!r}")
        members = fused[name]
        present = [m for m in members if m in layers]
        down, up = params["lora_down.weight"], params["lora_up.weight"]
        file_scale = float(params["alpha"]) / down.shape[0] if "alpha" in params else 1.0
        ranks = [_layer_scale(layers[m])[0] if m in layers else None for m in members]
        known = sum(r for r in ranks if r is not None)
        absent = [i for i, r in enumerate(ranks) if r is None]
        pad = (down.shape[0] - known) // len(absent) if absent else 0
        row = col = 0
        for member, rank in zip(members, ranks, strict=True):
            rows = submodules[member].out_features
            width = rank if rank is not None else pad
            if member in present:
                _, scale = _layer_scale(layers[member])
                out[f"{member}.lora_A.weight"] = down[col : col + width]
                block = up[row : row + rows, col : col + width]
                out[f"{member}.lora_B.weight"] = block * (file_scale / scale)
            row += rows
            col += width
    return {"transformer": out}
