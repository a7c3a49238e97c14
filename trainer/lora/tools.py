"""LoRA utilities on saved files: inspect, resize (SVD), convert layouts, merge.

Works on the two layouts ``trainer.lora.io`` writes (and other tools use):

- **peft / diffusers**: ``<component>.<module>.lora_A.weight`` / ``.lora_B.weight``; rank and
  alpha per component (plus ``rank_pattern`` / ``alpha_pattern``) in the header's
  ``lora_adapter_metadata`` JSON; without it alpha = rank (what diffusers assumes).
- **kohya / webui**: ``<prefix>_<module_with_underscores>.lora_down.weight`` / ``.lora_up.weight``
  / ``.alpha``.

Every module is held as ``Module(down, up, alpha)``; its weight delta is
``up @ down * alpha / rank``. Resizing and merging need plain LoRA (LoCon convs included); DoRA,
LoHa and LoKr files can be inspected but not resized or merged. Converting from kohya names back
to module names needs the base model (the names are ambiguous once dots became underscores).
Flux files in the BFL layout (fused Q/K/V) are not converted here.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from trainer.lora import io as lora_io
from trainer.lora.base_model import load_base_pipeline, merge_into_base  # noqa: F401  (re-exported)
from trainer.lora.keys import KOHYA_PREFIXES, PEFT_SUFFIXES, classic_prefix
from trainer.lora.outputs import (  # noqa: F401  (re-exported: where the utilities save)
    CHECKPOINTS_DIR,
    FINAL_DIR,
    OUTPUTS_DIR,
    kept_out,
    output_path,
)

PEFT, KOHYA = "peft", "kohya"
RESIZE_METHODS = ("rank", "sv_ratio", "sv_fro", "sv_cumulative")
COMPONENTS = ("unet", "transformer", "text_encoder", "text_encoder_2")
CLASSIC = "text_model."


class LoraToolError(ValueError):
    """A file or request the tools cannot handle; the message says why and what to do."""


@dataclass
class Module:
    down: Tensor
    up: Tensor
    alpha: float
    extra: dict[str, Tensor] = field(default_factory=dict)

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def delta(self) -> Tensor:
        """The weight change as a matrix (out, in * kernel)."""
        down = self.down.float().reshape(self.rank, -1)
        up = self.up.float().reshape(self.up.shape[0], -1)
        return up @ down * self.scale


@dataclass
class LoraFile:
    layout: str
    modules: dict[str, Module]
    metadata: dict[str, str]
    other: dict[str, Tensor] = field(default_factory=dict)  # LoHa/LoKr/DoRA tensors kept as-is

    @property
    def plain(self) -> bool:
        return not self.other and not any(m.extra for m in self.modules.values())


# ---------------------------------------------------------------------------------- reading


def detect_layout(tensors: Iterable[str]) -> str:
    """The layout named by the first key (of a tensor dict, or a header's key list)."""
    first = next(iter(tensors), "")
    if first.split(".", 1)[0] in COMPONENTS:
        return PEFT
    if first.startswith(("lora_", "lycoris_")):
        return KOHYA
    raise LoraToolError(f"not a LoRA file this tool knows (first key {first!r})")


def _adapter_meta(metadata: dict[str, str]) -> dict[str, Any]:
    raw = metadata.get(lora_io.ADAPTER_METADATA_KEY)
    try:
        found = json.loads(raw) if raw else {}
    except ValueError:
        found = None
    if not isinstance(found, dict):
        raise LoraToolError(
            f"the file's {lora_io.ADAPTER_METADATA_KEY} metadata is not a JSON object"
        )
    return found


def _pair(
    name: str, params: dict[str, Tensor], down_key: str, up_key: str
) -> tuple[Tensor, Tensor]:
    if up_key not in params:
        raise LoraToolError(f"{name} has {down_key} but no {up_key}: the file is incomplete")
    return params.pop(down_key), params.pop(up_key)


def _pattern_value(patterns: dict[str, Any], module: str, default: Any) -> Any:
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def load(path: str | Path) -> LoraFile:
    """Read a LoRA file (or diffusers folder) into modules with their alphas.

    Anything else (a model's weights, a text file renamed) is a ``LoraToolError`` or
    ``lora_io.UnreadableLora`` (both ``ValueError``), recognised from the header alone."""
    layout = detect_layout(lora_io.read_lora_keys(path))
    tensors = lora_io.read_lora_tensors(path)
    metadata = lora_io.read_lora_metadata(path)
    modules: dict[str, Module] = {}
    other: dict[str, Tensor] = {}
    if layout == KOHYA:
        grouped: dict[str, dict[str, Tensor]] = {}
        for key, value in tensors.items():
            if "." not in key:
                raise LoraToolError(f"unrecognised LoRA key {key!r}")
            name, suffix = key.split(".", 1)
            grouped.setdefault(name, {})[suffix] = value
        for name, params in grouped.items():
            if "lora_down.weight" not in params:
                other.update({f"{name}.{k}": v for k, v in params.items()})
                continue
            down, up = _pair(name, params, "lora_down.weight", "lora_up.weight")
            alpha = params.pop("alpha", None)
            alpha_value = float(alpha) if alpha is not None else float(down.shape[0])
            modules[name] = Module(down, up, alpha_value, params)
        return LoraFile(layout, modules, metadata, other)
    adapter = _adapter_meta(metadata)
    grouped = {}
    for key, value in tensors.items():
        for suffix in PEFT_SUFFIXES:
            if key.endswith("." + suffix):
                grouped.setdefault(key[: -len(suffix) - 1], {})[suffix] = value
                break
        else:
            raise LoraToolError(f"unrecognised adapter parameter {key!r}")
    for name, params in grouped.items():
        if "lora_A.weight" not in params:
            other.update({f"{name}.{k}": v for k, v in params.items()})
            continue
        comp, module = name.split(".", 1)
        down, up = _pair(name, params, "lora_A.weight", "lora_B.weight")
        rank = int(down.shape[0])
        bare = module.removeprefix(CLASSIC)
        alpha = adapter.get(f"{comp}.lora_alpha", rank)
        alpha = _pattern_value(adapter.get(f"{comp}.alpha_pattern") or {}, bare, alpha)
        if adapter.get(f"{comp}.use_rslora"):
            raise LoraToolError("rsLoRA scaling (alpha / sqrt(rank)) is not supported here")
        modules[name] = Module(down, up, float(alpha), params)
    return LoraFile(layout, modules, metadata, other)


# ---------------------------------------------------------------------------------- writing


def _peft_adapter_meta(lora: LoraFile) -> dict[str, Any]:
    """Per component: the most common rank/alpha, patterns for the modules that differ."""
    old = _adapter_meta(lora.metadata)
    by_comp: dict[str, list[tuple[str, Module]]] = {}
    for name, module in lora.modules.items():
        comp, rest = name.split(".", 1)
        by_comp.setdefault(comp, []).append((rest.removeprefix(CLASSIC), module))
    out: dict[str, Any] = {}
    for comp, items in by_comp.items():
        rank = Counter(m.rank for _, m in items).most_common(1)[0][0]
        alpha = Counter(m.alpha for _, m in items).most_common(1)[0][0]
        keep = {k[len(comp) + 1 :]: v for k, v in old.items() if k.startswith(comp + ".")}
        keep.update(
            r=rank,
            lora_alpha=alpha,
            rank_pattern={n: m.rank for n, m in items if m.rank != rank},
            alpha_pattern={n: m.alpha for n, m in items if m.alpha != alpha},
            target_modules=sorted({n for n, _ in items}),
        )
        keep.setdefault("use_dora", False)
        keep.setdefault("use_rslora", False)
        keep.setdefault("lora_dropout", 0.0)
        keep.setdefault("init_lora_weights", True)
        keep.setdefault("bias", "none")
        out.update({f"{comp}.{k}": v for k, v in keep.items()})
    return out


def _summary_meta(lora: LoraFile, extra: dict[str, Any] | None) -> dict[str, str]:
    meta = dict(lora.metadata)
    if lora.modules:
        ranks = [m.rank for m in lora.modules.values()]
        alphas = [m.alpha for m in lora.modules.values()]
        rank = Counter(ranks).most_common(1)[0][0]
        alpha = Counter(alphas).most_common(1)[0][0]
        meta.update(rank=str(rank), alpha=str(alpha))
        meta.update(ss_network_dim=str(rank), ss_network_alpha=str(alpha))
    for key, value in (extra or {}).items():
        meta[key] = value if isinstance(value, str) else json.dumps(value)
    return meta


def save(lora: LoraFile, path: str | Path, extra_meta: dict[str, Any] | None = None) -> Path:
    """Write ``lora`` in its layout (peft: ``path`` may be a folder -> the diffusers file name)."""
    path = Path(path)
    if lora.layout == PEFT and path.suffix != ".safetensors":
        path = path / lora_io.WEIGHTS_NAME
    tensors: dict[str, Tensor] = {}
    meta = _summary_meta(lora, extra_meta)
    for name, m in lora.modules.items():
        if lora.layout == KOHYA:
            tensors[f"{name}.lora_down.weight"] = m.down
            tensors[f"{name}.lora_up.weight"] = m.up
            tensors[f"{name}.alpha"] = torch.tensor(float(m.alpha))
            tensors.update({f"{name}.{k}": v for k, v in m.extra.items()})
        else:
            tensors[f"{name}.lora_A.weight"] = m.down
            tensors[f"{name}.lora_B.weight"] = m.up
            tensors.update({f"{name}.{k}": v for k, v in m.extra.items()})
    tensors.update(lora.other)
    if lora.layout == PEFT:
        meta[lora_io.ADAPTER_METADATA_KEY] = json.dumps(_peft_adapter_meta(lora), sort_keys=True)
    return lora_io.atomic_save_file(tensors, path, meta)


# ---------------------------------------------------------------------------------- inspect


def inspect(path: str | Path) -> dict[str, Any]:
    """Layout, module count, ranks, alphas, components, metadata, of a LoRA file."""
    lora = load(path)
    ranks = Counter(m.rank for m in lora.modules.values())
    alphas = Counter(m.alpha for m in lora.modules.values())
    comps: Counter[str] = Counter()
    for name in [*lora.modules, *lora.other]:
        comps[name.split(".", 1)[0] if lora.layout == PEFT else name.split("_")[1]] += 1
    meta = {k: v for k, v in lora.metadata.items() if k != lora_io.ADAPTER_METADATA_KEY}
    return {
        "file": str(lora_io.lora_file(path)),
        "layout": lora.layout,
        "modules": len(lora.modules),
        "other_tensors": len(lora.other),
        "ranks": dict(sorted(ranks.items())),
        "alphas": dict(sorted(alphas.items())),
        "components": dict(comps),
        "keys": sorted(lora.modules)[:10],
        "metadata": meta,
        "adapter_config": _adapter_meta(lora.metadata),
    }


# ---------------------------------------------------------------------------------- resize


def choose_rank(singular: Tensor, method: str, param: float, max_rank: int) -> int:
    """kohya resize_lora's rules: keep ranks by fixed count or by the singular values."""
    s = singular.double()
    if method == "rank":
        rank = int(param)
    elif method == "sv_ratio":  # keep values >= largest / param
        rank = int((s >= s[0] / param).sum())
    elif method == "sv_fro":  # keep enough to retain fraction `param` of the Frobenius norm
        energy = torch.cumsum(s**2, 0) / (s**2).sum()
        rank = int((energy < param**2).sum()) + 1
    elif method == "sv_cumulative":  # fraction `param` of the sum of singular values
        cumulative = torch.cumsum(s, 0) / s.sum()
        rank = int((cumulative < param).sum()) + 1
    else:
        raise LoraToolError(f"method must be one of {RESIZE_METHODS}, got {method!r}")
    return max(1, min(rank, max_rank, len(s)))


def resize(
    lora: LoraFile, method: str = "rank", param: float = 4, max_rank: int | None = None
) -> tuple[LoraFile, dict[str, Any]]:
    """Lower each module's rank by SVD of its delta (one alpha for all modules, see below).

    Returns the new file and stats: per-module new rank and relative Frobenius error.
    """
    if not lora.plain:
        raise LoraToolError("resize needs a plain LoRA/LoCon (no DoRA, LoHa or LoKr tensors)")
    if method == "rank" and int(param) < 1:
        raise LoraToolError("the new rank must be at least 1")
    cap = max_rank if max_rank is not None else (int(param) if method == "rank" else 10**9)
    out: dict[str, Module] = {}
    errors: dict[str, float] = {}
    ranks: dict[str, int] = {}
    for name, m in lora.modules.items():
        delta = m.delta().double()
        u, s, vh = torch.linalg.svd(delta, full_matrices=False)
        rank = min(choose_rank(s, method, param, cap), m.rank)
        up = (u[:, :rank] * s[:rank]).float()
        down = vh[:rank].float()
        norm = float(torch.linalg.norm(delta))
        approx = up.double() @ down.double()
        errors[name] = float(torch.linalg.norm(delta - approx)) / norm if norm else 0.0
        out[name] = Module(
            down.reshape(rank, *m.down.shape[1:]).contiguous().to(m.down.dtype),
            up.reshape(m.up.shape[0], rank, *m.up.shape[2:]).contiguous().to(m.up.dtype),
            float(rank),
        )
        ranks[name] = rank
    # One alpha for every module (the most common new rank), the per-module scale baked into
    # ``up``: diffusers' kohya loader applies a single alpha when ranks differ per module.
    alpha = float(Counter(ranks.values()).most_common(1)[0][0]) if ranks else 1.0
    for module in out.values():
        module.up = module.up * (module.rank / alpha)
        module.alpha = alpha
    stats = {
        "method": method,
        "param": param,
        "ranks": ranks,
        "mean_rank": sum(ranks.values()) / max(len(ranks), 1),
        "max_error": max(errors.values(), default=0.0),
        "mean_error": sum(errors.values()) / max(len(errors), 1),
        "errors": errors,
    }
    return LoraFile(lora.layout, out, dict(lora.metadata)), stats


# ---------------------------------------------------------------------------------- merge


def merge(loras: list[LoraFile], weights: list[float]) -> LoraFile:
    """One LoRA whose delta is sum(w_i * delta_i), exactly: ranks are concatenated.

    ``down`` = downs stacked, ``up`` = [w_i * scale_i * up_i] side by side, alpha = total rank.
    A module present in only some files keeps only those parts.
    """
    if len(loras) != len(weights) or not loras:
        raise LoraToolError("give one weight per LoRA")
    layouts = {lora.layout for lora in loras}
    if len(layouts) != 1:
        raise LoraToolError("convert the files to one layout before merging")
    if not all(lora.plain for lora in loras):
        raise LoraToolError("merge needs plain LoRA/LoCon files (no DoRA, LoHa or LoKr)")
    names: list[str] = []
    for lora in loras:
        names += [n for n in lora.modules if n not in names]
    out: dict[str, Module] = {}
    for name in names:
        parts = [
            (lora.modules[name], w)
            for lora, w in zip(loras, weights, strict=True)
            if name in lora.modules
        ]
        shapes = {(tuple(m.up.shape[:1]), tuple(m.down.shape[1:])) for m, _ in parts}
        if len(shapes) != 1:
            raise LoraToolError(f"{name}: the LoRAs were trained on different base models")
        down = torch.cat([m.down.float() for m, _ in parts], dim=0)
        up = torch.cat([m.up.float() * (w * m.scale) for m, w in parts], dim=1)
        out[name] = Module(down, up, float(down.shape[0]))
    meta = dict(loras[0].metadata)
    meta["merged_from"] = json.dumps(
        [
            {"name": lora.metadata.get("name", ""), "weight": w}
            for lora, w in zip(loras, weights, strict=True)
        ]
    )
    return LoraFile(layouts.pop(), out, meta)


# ---------------------------------------------------------------------------------- convert


def _kohya_prefixes(arch: str) -> dict[str, str]:
    if arch not in KOHYA_PREFIXES:
        raise LoraToolError(f"unknown arch {arch!r}")
    if arch == "flux":
        raise LoraToolError(
            "Flux files use the BFL layout (fused Q/K/V); convert them by re-saving from the "
            "trainer (save_format both) instead"
        )
    return KOHYA_PREFIXES[arch]


def file_arch(lora: LoraFile, arch: str | None = None) -> str:
    if arch:
        return arch
    if lora.metadata.get("arch"):
        return lora.metadata["arch"]
    version = lora.metadata.get("ss_base_model_version", "")
    if version.startswith("sdxl") or any(n.startswith("lora_te2_") for n in lora.modules):
        return "sdxl"
    if version.startswith("flux"):
        return "flux"
    if any(n.startswith("text_encoder_2.") for n in lora.modules):
        return "sdxl"
    return "sd15"


def to_kohya(lora: LoraFile, arch: str | None = None) -> LoraFile:
    """peft/diffusers names -> kohya names (no base model needed)."""
    if lora.layout == KOHYA:
        return lora
    if lora.other:
        raise LoraToolError("only LoRA/LoCon/DoRA tensors convert here (not LoHa/LoKr)")
    arch = file_arch(lora, arch)
    prefixes = _kohya_prefixes(arch)
    out: dict[str, Module] = {}
    for name, m in lora.modules.items():
        comp, module = name.split(".", 1)
        extra = dict(m.extra)
        if "lora_magnitude_vector" in extra:
            mag = extra.pop("lora_magnitude_vector")
            extra["dora_scale"] = mag.reshape(-1, *([1] * (m.down.dim() - 1)))
        out[f"{prefixes[comp]}_{module.replace('.', '_')}"] = Module(m.down, m.up, m.alpha, extra)
    meta = {k: v for k, v in lora.metadata.items() if k != lora_io.ADAPTER_METADATA_KEY}
    meta.setdefault("arch", arch)
    return LoraFile(KOHYA, out, meta)


def base_module_names(pipe: Any, arch: str) -> dict[str, str]:
    """kohya name -> ``<component>.<module>`` (classic CLIP names) for a base pipeline."""
    names: dict[str, str] = {}
    for comp, prefix in _kohya_prefixes(arch).items():
        part = getattr(pipe, comp, None)
        if part is None:
            continue
        classic = classic_prefix(part)
        for module, layer in part.named_modules():
            if isinstance(layer, torch.nn.Linear | torch.nn.Conv2d):
                full = classic + module.removesuffix(".base_layer")  # peft-wrapped layers
                names[f"{prefix}_{full.replace('.', '_')}"] = f"{comp}.{full}"
    return names


def to_peft(lora: LoraFile, pipe: Any, arch: str | None = None) -> LoraFile:
    """kohya names -> peft/diffusers names, using the base pipeline's module names."""
    if lora.layout == PEFT:
        return lora
    if lora.other:
        raise LoraToolError("only LoRA/LoCon/DoRA tensors convert here (not LoHa/LoKr)")
    arch = file_arch(lora, arch)
    names = base_module_names(pipe, arch)
    unknown = sorted(set(lora.modules) - set(names))
    if unknown:
        raise LoraToolError(f"layers not in this base model: {unknown[:5]}")
    out: dict[str, Module] = {}
    for name, m in lora.modules.items():
        extra = dict(m.extra)
        if "dora_scale" in extra:
            extra["lora_magnitude_vector"] = extra.pop("dora_scale").reshape(-1)
        out[names[name]] = Module(m.down, m.up, m.alpha, extra)
    meta = dict(lora.metadata)
    meta.setdefault("arch", arch)
    converted = LoraFile(PEFT, out, meta)
    if any(m.extra for m in out.values()):
        adapter = _peft_adapter_meta(converted)
        for key in list(adapter):
            if key.endswith(".use_dora"):
                adapter[key] = True
        meta[lora_io.ADAPTER_METADATA_KEY] = json.dumps(adapter)
    return converted


def rank_label(value: float) -> str:
    return str(int(value)) if math.isclose(value, round(value)) else f"{value:g}"
