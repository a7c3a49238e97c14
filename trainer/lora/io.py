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
  encoders); LoHa / LoKr in the LyCORIS layout (``.hada_w1_a`` ..., ``.lokr_w1`` ...): the
  per-module keys are ``trainer.lora.keys``. Flux LoRA in the sd-scripts/BFL layout ComfyUI and
  diffusers read, with Q/K/V fused block-diagonally (``trainer.lora.flux_bfl``); other Flux
  adapter types as ComfyUI's ``lycoris_<module>`` keys.

Both carry the same string metadata: base model, arch, trigger word, network type, rank, alpha,
steps, resolution, and the ``ss_*`` / ``modelspec.*`` keys kohya tools and web UIs read.

``load_lora_file(arch, path)`` reads either layout back into an Arch that has the same adapters
(resume, or start from ``model.lora_path``).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch
from torch import Tensor

from trainer.arch.adapters import ADAPTER_NAME, tuner_layers
from trainer.arch.base import Arch
from trainer.arch.tensors import DTYPES
from trainer.files import atomic_path
from trainer.lora.flux_bfl import flux_from_bfl, flux_to_bfl
from trainer.lora.keys import (
    KOHYA_PREFIXES,
    classic_prefix,
    group_by_module,
    kohya_name,
    layer_scale,
    module_from_webui,
    module_to_webui,
)

WEIGHTS_NAME = "pytorch_lora_weights.safetensors"
ADAPTER_METADATA_KEY = "lora_adapter_metadata"  # what diffusers reads the peft config from
SAVE_FORMATS = ("both", "webui", "diffusers")


BASE_MODEL_VERSION = {"sd15": "sd_v1", "sdxl": "sdxl_base_v1-0", "flux": "flux1"}
MODELSPEC_ARCH = {
    "sd15": "stable-diffusion-v1/lora",
    "sdxl": "stable-diffusion-xl-v1-base/lora",
    "flux": "flux-1-dev/lora",
}


# ---------------------------------------------------------------------------------- files


def atomic_save_file(tensors: dict[str, Tensor], path: Path, metadata: dict[str, str]) -> Path:
    """Write a .safetensors file whole or not at all (``trainer.files.atomic_path``)."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        # Looked up on the module at call time: the fault tests swap in a failing writer.
        safetensors.torch.save_file(
            tensors, str(tmp), metadata={k: str(v) for k, v in metadata.items()}
        )
    return Path(path)


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


class UnreadableLora(ValueError):
    """A file that is not a readable safetensors file (text renamed, truncated, another format);
    the message says so in plain words: "not a LoRA file: notes.txt is not a .safetensors LoRA
    (it holds text)"."""


# A file's first bytes that name its kind (what people pick by mistake instead of a LoRA).
KNOWN_STARTS = {
    b"PK\x03\x04": "it is a zip archive, or a PyTorch .ckpt/.pt/.bin file",
    b"\x80": "it is a pickled PyTorch .ckpt/.pt/.bin file",
    b"GGUF": "it is a GGUF model file",
    b"\x89PNG": "it is a PNG image",
    b"\xff\xd8\xff": "it is a JPEG image",
}


def why_not_safetensors(file: Path, err: Exception) -> str:
    """What the file is instead of a safetensors file, in words a user knows (the library says
    "header too large" for a text file)."""
    if "not fully covered" in str(err) or "incomplete" in str(err):
        return "it is cut short: an interrupted download or copy?"
    try:
        with open(file, "rb") as handle:
            start = handle.read(512)
    except OSError as read_err:
        return f"it cannot be read: {read_err.strerror or read_err}"
    if not start:
        return "it is empty"
    for magic, kind in KNOWN_STARTS.items():
        if start.startswith(magic):
            return kind
    try:
        text = start.decode("utf-8")
    except UnicodeDecodeError:
        text = ""  # a multi-byte character cut at 512 bytes still counts as text below
        with contextlib.suppress(UnicodeDecodeError):
            text = start[:-3].decode("utf-8")
    if text and all(ch.isprintable() or ch in "\t\r\n" for ch in text):
        return "it holds text"
    return "it does not start with a safetensors header"


def _unreadable(file: Path, err: Exception) -> UnreadableLora:
    reason = why_not_safetensors(file, err)
    return UnreadableLora(f"not a LoRA file: {file.name} is not a .safetensors LoRA ({reason})")


def read_lora_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata in a LoRA's safetensors header (file or diffusers folder)."""
    file = lora_file(path)
    try:
        with safetensors.safe_open(str(file), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except safetensors.SafetensorError as err:
        raise _unreadable(file, err) from err


def read_lora_keys(path: str | Path) -> list[str]:
    """The tensor names in a safetensors header, in file order, without reading any weights (a
    whole model picked by mistake is recognised before gigabytes are loaded)."""
    file = lora_file(path)
    try:
        with safetensors.safe_open(str(file), framework="pt") as handle:
            return list(handle.keys())
    except safetensors.SafetensorError as err:
        raise _unreadable(file, err) from err


def read_lora_tensors(path: str | Path) -> dict[str, Tensor]:
    file = lora_file(path)
    try:
        return safetensors.torch.load_file(str(file))
    except safetensors.SafetensorError as err:
        raise _unreadable(file, err) from err


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


def _webui_prefixes(arch: Arch) -> dict[str, str]:
    prefixes = KOHYA_PREFIXES[arch.name]
    return {name: prefixes[name] for name in arch.adapted_components()}


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
        for module, params in group_by_module(state_dicts[comp]).items():
            rank, scale = layer_scale(layers[module])
            name = kohya_name(prefix, classic + module)
            for suffix, value in module_to_webui(params, rank, scale).items():
                out[f"{name}.{suffix}"] = value.float()
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
        return flux_from_bfl(arch, tensors)
    parts = arch.adapted_components()
    by_name: dict[str, tuple[str, str, Any]] = {}
    for comp, prefix in _webui_prefixes(arch).items():
        classic = classic_prefix(parts[comp])
        for module, layer in tuner_layers(parts[comp]):
            by_name[kohya_name(prefix, classic + module)] = (comp, module, layer)
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
        _, scale = layer_scale(layer)
        target = out.setdefault(comp, {})
        for suffix, value in module_from_webui(params, scale).items():
            target[f"{module}.{suffix}"] = value
    return out
