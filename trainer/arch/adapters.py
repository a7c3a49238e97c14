"""Adapters on a model's networks, through peft: which layers, which config, which are active.

The trained adapter is peft's ``default`` (``ADAPTER_NAME``): LoRA, DoRA and LoCon as a
``LoraConfig``, LoHa and LoKr as peft's own configs (``adapter_config``). An accuracy recovery
adapter (``ARA_NAME``, loaded by ``trainer.engine.memory.accuracy_recovery``) sits beside it,
frozen and always at full strength: ``activate_adapters`` keeps it frozen while peft switches
adapters, and ``scale_trained_adapter`` scales the trained one only (previews' LoRA strength).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from trainer.config.sections.model import NetworkConfig

ADAPTER_NAME = "default"  # the peft adapter name of the trained adapter
ARA_NAME = "ara"  # the peft adapter name of the accuracy recovery adapter

# Module name endings per architecture (``network.target_modules: auto``).
SD_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
FLUX_TARGETS = (*SD_TARGETS, "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out")
TEXT_ENCODER_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")
# Convolutions LoCon adds (kohya's choice: resnet and resampler convs, transformer proj in/out).
# 3x3 kernels take the conv rank; 1x1 kernels (shortcuts, proj_in/out) take the linear rank.
CONV_TARGET_ENDINGS = ("conv1", "conv2", "conv_shortcut", "conv", "proj_in", "proj_out")
# peft's LoKr makes a factor full-rank when the rank is at least half its size: this forces it.
LOKR_FULL_RANK = 1_000_000


# ---------------------------------------------------------------------------------- layers
def tuner_layers(module: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """(name, layer) of every peft adapter layer inside ``module``."""
    # peft pulls in transformers (seconds); the studio imports this module without training.
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, sub in module.named_modules():
        if isinstance(sub, BaseTunerLayer):
            yield name, sub


def has_adapters(module: nn.Module | None) -> bool:
    return module is not None and getattr(module, "peft_config", None) is not None


def conv_module_names(module: nn.Module, endings: Sequence[str] = CONV_TARGET_ENDINGS) -> list[str]:
    """Full names of the Conv2d layers LoCon adapts (kohya's choice of layers)."""
    return [
        name
        for name, sub in module.named_modules()
        if isinstance(sub, nn.Conv2d) and name.rsplit(".", 1)[-1] in endings
    ]


def is_spatial_conv(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d) and tuple(module.kernel_size) != (1, 1)


def lora_targets(
    denoiser: nn.Module, network: NetworkConfig, default_targets: Sequence[str], conv: bool
) -> tuple[list[str], list[str], list[str]]:
    """(linear targets, conv module names, of which 3x3) of ``denoiser`` for ``network``.

    ``default_targets``: the architecture's linear targets for ``target_modules: auto``;
    ``conv``: whether the architecture supports convolution adapters (LoCon, ``network.conv``).
    """
    linear = (
        list(default_targets) if network.target_modules == "auto" else list(network.target_modules)
    )
    if not (conv and (network.type == "locon" or network.conv is not None)):
        return linear, [], []
    modules = dict(denoiser.named_modules())
    convs = [name for name in conv_module_names(denoiser) if name not in linear]
    spatial = [name for name in convs if is_spatial_conv(modules[name])]
    if network.type == "locon":
        # SDXL's proj_in/proj_out are Linear layers: LoCon adapts them with the linear rank.
        linear += [
            ending
            for ending in ("proj_in", "proj_out")
            if any(
                n.endswith("." + ending) and isinstance(m, nn.Linear) for n, m in modules.items()
            )
            and ending not in linear
        ]
    return linear, convs, spatial


# ---------------------------------------------------------------------------------- config
def adapter_config(
    network: NetworkConfig,
    linear_targets: Sequence[str],
    conv_targets: Sequence[str] = (),
    spatial_convs: Sequence[str] = (),
):
    """The peft config for ``network.type`` on the given modules.

    ``conv_targets`` are full module names of convolutions; those in ``spatial_convs`` (3x3
    kernels) take ``network.conv`` / ``network.conv_alpha`` through peft's rank/alpha patterns,
    1x1 convolutions take the linear rank, as in kohya's LoCon.
    """
    from peft import LoHaConfig, LoKrConfig, LoraConfig  # peft: seconds; only when training

    rank, alpha = network.linear, network.linear_alpha
    if rank == "auto" or alpha == "auto":
        raise ValueError(
            "network.linear and network.linear_alpha must be numbers before adapters are added "
            "(the advisor resolves 'auto' before a run starts)"
        )
    conv_rank = network.conv or rank
    conv_alpha = network.conv_alpha or (network.conv if network.conv else alpha)
    targets = [*linear_targets, *conv_targets]
    rank_pattern = {f"^{re.escape(name)}$": conv_rank for name in spatial_convs}
    alpha_pattern = {f"^{re.escape(name)}$": conv_alpha for name in spatial_convs}
    common: dict[str, Any] = {
        "target_modules": targets,
        "rank_pattern": rank_pattern,
        "alpha_pattern": alpha_pattern,
    }
    if network.type in ("lora", "locon", "dora"):
        return LoraConfig(
            r=int(rank),
            lora_alpha=float(alpha),
            init_lora_weights="gaussian",
            lora_dropout=network.dropout,
            use_dora=network.type == "dora",
            **common,
        )
    if network.type == "loha":
        return LoHaConfig(
            r=int(rank),
            alpha=float(alpha),
            rank_dropout=network.dropout,
            init_weights=True,
            **common,
        )
    if network.type == "lokr":
        if network.lokr_full_rank:
            # Full-rank factors: LyCORIS then uses scale 1 (alpha = rank), so do the same.
            rank = alpha = LOKR_FULL_RANK
            common["rank_pattern"] = dict.fromkeys(rank_pattern, LOKR_FULL_RANK)
            common["alpha_pattern"] = dict.fromkeys(alpha_pattern, LOKR_FULL_RANK)
        return LoKrConfig(
            r=int(rank),
            alpha=float(alpha),
            decompose_factor=network.lokr_factor,
            decompose_both=False,
            rank_dropout=network.dropout,
            init_weights=True,
            **common,
        )
    raise ValueError(f"unknown network type {network.type!r}")


def add_adapter(module: nn.Module, config: Any) -> list[nn.Parameter]:
    """Add the trained adapter to ``module``, in fp32; returns its trainable parameters."""
    # diffusers: seconds to import; only when training starts.
    from diffusers.training_utils import cast_training_params

    module.add_adapter(config)
    cast_training_params(module, torch.float32)
    return [p for p in module.parameters() if p.requires_grad]


# ---------------------------------------------------------------------------------- state
def adapter_state(module: nn.Module) -> dict[str, Tensor]:
    """peft's state dict of ``module``'s adapter (keys without the adapter name)."""
    from peft.utils import get_peft_model_state_dict  # peft: seconds; only when training

    return get_peft_model_state_dict(module)


def load_adapter_state(name: str, module: nn.Module, state: dict[str, Tensor]) -> None:
    """Load ``state`` into ``module``'s adapter after checking every key and shape matches."""
    from peft.utils import set_peft_model_state_dict  # peft: seconds; only when training

    expected = {k: v.shape for k, v in adapter_state(module).items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k])
    if missing or unexpected or wrong:
        raise ValueError(
            f"the LoRA for '{name}' does not match this network: {len(missing)} missing, "
            f"{len(unexpected)} unexpected and {len(wrong)} wrongly shaped tensors "
            f"(e.g. {(missing or unexpected or wrong)[0]}) — use the same network type, "
            f"rank and target modules it was trained with"
        )
    set_peft_model_state_dict(module, state)


# ---------------------------------------------------------------------------------- activity
def adapter_names(layer: Any) -> set[str]:
    """The names of the adapters a peft layer holds (active or not)."""
    names: set[str] = set()
    for attr in getattr(layer, "adapter_layer_names", ()):
        names.update(getattr(layer, attr, {}).keys())
    return names


def freeze_adapter(module: nn.Module, adapter: str) -> None:
    for name, param in module.named_parameters():
        if f".{adapter}." in f".{name}.":
            param.requires_grad_(False)


def set_active_adapters(
    layers: Iterable[Any], modules: Iterable[nn.Module], choose: Callable
) -> None:
    """``layer.set_adapter(choose(layer))`` for each layer, keeping every requires_grad flag
    (peft's set_adapter makes active adapters trainable and inactive ones frozen)."""
    flags = [(p, p.requires_grad) for m in modules for p in m.parameters()]
    for layer in layers:
        layer.set_adapter(choose(layer))
    for param, flag in flags:
        param.requires_grad_(flag)


def activate_adapters(denoiser: nn.Module, names: Sequence[str]) -> None:
    """Make ``names`` the active adapters of the denoiser's adapter layers (ARA stays frozen)."""
    layers = [layer for _, layer in tuner_layers(denoiser)]
    set_active_adapters(
        layers, [denoiser], lambda layer: [n for n in names if n in adapter_names(layer)]
    )
    freeze_adapter(denoiser, ARA_NAME)


# ---------------------------------------------------------------------------------- strength
@contextlib.contextmanager
def scale_adapters(parts: Sequence[nn.Module], scale: float) -> Iterator[None]:
    """Temporarily scale every adapter of ``parts`` by ``scale``; 0 turns them off exactly."""
    # diffusers: seconds to import; only when a model with adapters exists.
    from diffusers.utils.peft_utils import scale_lora_layers, unscale_lora_layers

    if scale == 0:
        layers = [layer for part in parts for _, layer in tuner_layers(part)]
        for layer in layers:
            layer.enable_adapters(False)
        try:
            yield
        finally:
            for layer in layers:
                layer.enable_adapters(True)
        return
    for part in parts:
        scale_lora_layers(part, scale)
    try:
        yield
    finally:
        for part in parts:
            unscale_lora_layers(part, scale)


@contextlib.contextmanager
def scale_trained_adapter(parts: Sequence[nn.Module], scale: float) -> Iterator[None]:
    """Scale only the trained adapter of ``parts`` (the previews' LoRA strength); the ARA stays
    at 1.

    Scale 0 deactivates the trained adapter outright (as ``scale_adapters`` disables adapters),
    which for DoRA is not the same as a zero scale.
    """
    layers = [layer for part in parts for _, layer in tuner_layers(part)]
    if scale == 0:
        active = {id(layer): list(layer.active_adapters) for layer in layers}
        set_active_adapters(
            layers, parts, lambda layer: [n for n in active[id(layer)] if n != ADAPTER_NAME]
        )
        try:
            yield
        finally:
            set_active_adapters(layers, parts, lambda layer: active[id(layer)])
        return
    saved = [(layer, dict(layer.scaling)) for layer in layers if ADAPTER_NAME in layer.scaling]
    for layer, old in saved:
        layer.scaling[ADAPTER_NAME] = old[ADAPTER_NAME] * scale
    try:
        yield
    finally:
        for layer, old in saved:
            layer.scaling.update(old)
