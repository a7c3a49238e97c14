"""The one interface every model family implements, so the training loop never branches on arch.

A training step reads the same for SD1.5, SDXL and Flux::

    arch = load_arch(cfg, home, device, dtype)
    groups = arch.add_lora(cfg.network, cfg.train.train_text_encoder)
    latents = arch.encode_images(pixels)                  # [-1, 1] pixels -> scaled latents
    cond = arch.encode_prompts(captions, with_grad=te)   # dict of embeddings
    t = arch.sample_timesteps(len(latents), generator)
    noisy = arch.add_noise(latents, noise, t)
    loss = mse(arch.predict(noisy, t, cond, extra), arch.target(latents, noise, t))

This module holds what is shared: loading (demo refs, folders, single files, hub ids, a different
VAE / text encoder, per-component device and dtype), adapters (LoRA, DoRA, LoCon, LoHa, LoKr via
peft), timestep sampling, latents, sampling with the pipeline and the adapter state dicts. The
subclasses (``sd15.py``, ``sdxl.py``, ``flux.py``) add prompt encoding, the noise objective and
the network call.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

from trainer.config.schema import ARCH_DEFAULTS, NetworkConfig, TrainingConfig, resolved

if TYPE_CHECKING:
    from PIL import Image

DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".bin", ".pth")
ADAPTER_NAME = "default"

# Module name endings per architecture (``network.target_modules: auto``).
SD_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
FLUX_TARGETS = (*SD_TARGETS, "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out")
TEXT_ENCODER_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")
# Convolutions LoCon adds (kohya's choice: resnet and resampler convs, transformer proj in/out).
# 3x3 kernels take the conv rank; 1x1 kernels (shortcuts, proj_in/out) take the linear rank.
CONV_TARGET_ENDINGS = ("conv1", "conv2", "conv_shortcut", "conv", "proj_in", "proj_out")
# peft's LoKr makes a factor full-rank when the rank is at least half its size: this forces it.
LOKR_FULL_RANK = 1_000_000

SAMPLERS = {
    "euler": "EulerDiscreteScheduler",
    "euler_a": "EulerAncestralDiscreteScheduler",
    "dpmpp_2m": "DPMSolverMultistepScheduler",
    "ddpm": "DDPMScheduler",
    "flowmatch": "FlowMatchEulerDiscreteScheduler",
}


class ModelLoadError(RuntimeError):
    """A base model (or its VAE / text encoder) could not be loaded; the message says how to fix it."""


# ---------------------------------------------------------------------------------- loading


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def classify_source(ref: str) -> str:
    """'dir', 'file', 'hub' or 'missing' for a model reference (after demo refs are resolved)."""
    path = Path(ref).expanduser()
    if path.is_dir():
        return "dir"
    if path.is_file():
        return "file"
    looks_like_path = (
        ref.startswith(("/", ".", "~", "\\"))
        or ref.lower().endswith(SINGLE_FILE_SUFFIXES)
        or ref.count("/") != 1
        or ":" in ref
        or not re.fullmatch(r"[\w.-]+/[\w.-]+", ref)
    )
    return "missing" if looks_like_path else "hub"


def load_error(
    what: str, ref: str, source: str, arch: str, exc: BaseException | None
) -> ModelLoadError:
    """A ModelLoadError that says what was tried, why it failed and how to fix it."""
    demo = f"demo:{arch}"
    fixes = (
        f"point it to a local diffusers folder (with model_index.json) or a single "
        f".safetensors checkpoint, or use '{demo}' to try the studio with the tiny built-in model"
    )
    if source == "missing":
        message = (
            f"{what} '{ref}' was not found: no such folder or file on this machine. "
            f"Fix: check the path for typos, or {fixes}."
        )
    elif source == "hub":
        if hub_offline():
            why = (
                "this machine is offline (HF_HUB_OFFLINE=1) and the model is not in the local "
                "Hugging Face cache"
            )
        else:
            why = "it could not be downloaded from the Hugging Face Hub or found in the cache"
        message = (
            f"{what} '{ref}' was tried as a Hugging Face Hub id, but {why}. Fix: download it "
            f"first on a connected machine (`hf download {ref}`) and copy the cache here, or "
            f"{fixes}."
        )
    elif source == "dir":
        message = (
            f"{what} '{ref}' is a folder but could not be loaded as a diffusers model. Fix: "
            f"make sure it is a complete diffusers folder (model_index.json plus one subfolder "
            f"per component), or {fixes}."
        )
    else:
        message = (
            f"{what} '{ref}' is a file but could not be loaded as a single-file checkpoint: "
            f"from_single_file also needs the model's configs, which come from the Hugging Face "
            f"Hub or its local cache{' (this machine is offline)' if hub_offline() else ''}. "
            f"Fix: check that the file is a complete {arch} checkpoint, convert it once to a "
            f"diffusers folder on a connected machine and point model.name_or_path there, or "
            f"use '{demo}' to try the studio with the tiny built-in model."
        )
    if exc is not None:
        message += f" (Original error: {type(exc).__name__}: {str(exc).strip()[:400]})"
    return ModelLoadError(message)


def resolve_device(value: str, default: torch.device) -> torch.device:
    return default if value == "auto" else torch.device(value)


def resolve_dtype(value: str, default: torch.dtype) -> torch.dtype:
    return default if value == "auto" else DTYPES[value]


def freeze(module: nn.Module | None) -> None:
    if module is not None:
        module.requires_grad_(False)


def place(module: nn.Module, device: torch.device, dtype: torch.dtype) -> None:
    """Move a module only where it is not already (diffusers warns on no-op dtype casts)."""
    param = next(module.parameters(), None)
    if param is None:
        return
    if param.dtype != dtype:
        module.to(dtype=dtype)
    if param.device != device:
        module.to(device)


def tuner_layers(module: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """(name, layer) of every peft adapter layer inside ``module``."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, sub in module.named_modules():
        if isinstance(sub, BaseTunerLayer):
            yield name, sub


def has_adapters(module: nn.Module | None) -> bool:
    return module is not None and getattr(module, "peft_config", None) is not None


# ---------------------------------------------------------------------------------- adapters


def conv_module_names(module: nn.Module, endings: Sequence[str] = CONV_TARGET_ENDINGS) -> list[str]:
    """Full names of the Conv2d layers LoCon adapts (kohya's choice of layers)."""
    return [
        name
        for name, sub in module.named_modules()
        if isinstance(sub, nn.Conv2d) and name.rsplit(".", 1)[-1] in endings
    ]


def is_spatial_conv(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d) and tuple(module.kernel_size) != (1, 1)


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
    from peft import LoHaConfig, LoKrConfig, LoraConfig

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


# ---------------------------------------------------------------------------------- timesteps


def draw_unit_timesteps(
    n: int,
    timestep_type: str,
    content_or_style: str,
    shift: float,
    generator: torch.Generator | None = None,
) -> Tensor:
    """n noise levels in [0, 1) (1 = pure noise), on the CPU, as float64.

    uniform: flat; sigmoid: logit-normal (more middle levels); shift: flat, then bent towards
    high noise by ``s*u / (1 + (s-1)*u)`` as flow-matching schedulers do. ``content`` bends
    the draws towards high noise (``1 - (1-u)^3``), ``style`` towards low noise (``u^3``), the
    cubic sampling of the T2I-Adapter paper (section 3.4).
    """
    if timestep_type == "sigmoid":
        u = torch.sigmoid(torch.randn(n, generator=generator, dtype=torch.float64))
    else:
        u = torch.rand(n, generator=generator, dtype=torch.float64)
    if timestep_type == "shift":
        u = shift * u / (1 + (shift - 1) * u)
    if content_or_style == "content":
        u = 1 - (1 - u) ** 3
    elif content_or_style == "style":
        u = u**3
    return u.clamp(0.0, 1.0 - 1e-7)


# ---------------------------------------------------------------------------------- the interface


class Arch(ABC):
    """One loaded base model with everything the loop needs, behind one small interface."""

    name: ClassVar[str]
    pipeline_class_name: ClassVar[str]
    denoiser_name: ClassVar[str] = "unet"  # the pipeline attribute LoRA trains ("transformer")
    text_encoder_names: ClassVar[tuple[str, ...]] = ("text_encoder",)
    tokenizer_names: ClassVar[tuple[str, ...]] = ("tokenizer",)
    # The text encoder a bare (non-pipeline) te_name_or_path folder replaces.
    primary_text_encoder: ClassVar[str] = "text_encoder"
    default_targets: ClassVar[tuple[str, ...]] = SD_TARGETS
    supports_conv: ClassVar[bool] = True
    supports_text_encoder_training: ClassVar[bool] = True
    extra_pipeline_kwargs: ClassVar[dict[str, Any]] = {}

    def __init__(
        self,
        cfg: TrainingConfig,
        pipe: Any,
        *,
        model_path: str,
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        self.cfg = cfg
        self.pipe = pipe
        self.model_path = model_path
        self.device = torch.device(device)
        self.dtype = dtype
        m = cfg.model
        self.vae_device = resolve_device(m.vae_device, self.device)
        self.vae_dtype = resolve_dtype(m.vae_dtype, dtype)
        self.te_device = resolve_device(m.te_device, self.device)
        self.te_dtype = resolve_dtype(m.te_dtype, dtype)
        self.base_scheduler_config = dict(pipe.scheduler.config)
        for module in pipe.components.values():
            if isinstance(module, nn.Module):
                freeze(module)
                module.eval()
        place(self.denoiser, self.device, dtype)
        place(self.vae, self.vae_device, self.vae_dtype)
        for te in self.text_encoders.values():
            place(te, self.te_device, self.te_dtype)
        pipe.set_progress_bar_config(disable=True)
        self.network: NetworkConfig | None = None
        self.noise_scheduler = self._make_noise_scheduler(resolved(cfg, "noise_scheduler"))

    # ------------------------------------------------------------------ loading
    @classmethod
    def pipeline_class(cls) -> type:
        import diffusers

        return getattr(diffusers, cls.pipeline_class_name)

    @classmethod
    def load(
        cls, cfg: TrainingConfig, home: Path, device: torch.device, dtype: torch.dtype
    ) -> Arch:
        """Load the base model named by ``cfg.model`` (see module docstring for what it accepts)."""
        from trainer.demo.tiny import resolve_demo_ref

        ref = cfg.model.name_or_path
        try:
            path = resolve_demo_ref(ref, Path(home))
        except ValueError as exc:
            raise ModelLoadError(f"model.name_or_path: {exc}") from exc
        source = classify_source(path)
        what = f"The {cls.name} base model (model.name_or_path)"
        if source == "missing":
            raise load_error(what, path, source, cls.name, None)
        if source == "dir" and not (Path(path) / "model_index.json").is_file():
            raise ModelLoadError(
                f"{what} '{path}' is a folder without model_index.json, so it is not a diffusers "
                f"pipeline folder. Fix: point to the folder that contains model_index.json, to a "
                f"single .safetensors checkpoint, or use 'demo:{cls.name}'."
            )
        kwargs: dict[str, Any] = {"dtype": dtype, **cls.extra_pipeline_kwargs}
        kwargs.update(cls._component_overrides(cfg, Path(home), dtype))
        pipeline_class = cls.pipeline_class()
        try:
            if source == "file":
                pipe = pipeline_class.from_single_file(path, **kwargs)
            else:
                pipe = pipeline_class.from_pretrained(path, **kwargs)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise load_error(what, path, source, cls.name, exc) from exc
        resolved_path = str(Path(path).expanduser().resolve()) if source != "hub" else path
        return cls(cfg, pipe, model_path=resolved_path, device=device, dtype=dtype)

    @classmethod
    def _component_overrides(cls, cfg: TrainingConfig, home: Path, dtype: torch.dtype) -> dict:
        """A different VAE and/or text encoder(s), loaded from model.vae_path / te_name_or_path."""
        from trainer.demo.tiny import resolve_demo_ref

        overrides: dict[str, Any] = {}
        if cfg.model.vae_path:
            overrides["vae"] = cls._load_vae(resolve_demo_ref(cfg.model.vae_path, home), dtype)
        if cfg.model.te_name_or_path:
            ref = resolve_demo_ref(cfg.model.te_name_or_path, home)
            overrides.update(cls._load_text_encoders(ref, dtype))
        return overrides

    @classmethod
    def _load_vae(cls, ref: str, dtype: torch.dtype) -> nn.Module:
        from diffusers import AutoencoderKL

        source = classify_source(ref)
        what = "The VAE (model.vae_path)"
        if source == "missing":
            raise load_error(what, ref, source, cls.name, None)
        try:
            if source == "file":
                return AutoencoderKL.from_single_file(ref, dtype=dtype)
            if source == "dir":
                sub = "vae" if (Path(ref) / "vae" / "config.json").is_file() else None
                return AutoencoderKL.from_pretrained(ref, subfolder=sub, dtype=dtype)
            try:
                return AutoencoderKL.from_pretrained(ref, dtype=dtype)
            except OSError:
                return AutoencoderKL.from_pretrained(ref, subfolder="vae", dtype=dtype)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise load_error(what, ref, source, cls.name, exc) from exc

    @classmethod
    def _load_text_encoders(cls, ref: str, dtype: torch.dtype) -> dict[str, Any]:
        """Text encoder(s) (and their tokenizers) from a pipeline folder or one model folder."""
        import transformers

        source = classify_source(ref)
        what = "The text encoder (model.te_name_or_path)"
        if source in ("missing", "file"):
            if source == "file":
                raise ModelLoadError(
                    f"{what} '{ref}' is a single file; text encoders load from a folder or Hub id "
                    f"(config.json + weights). Fix: point to such a folder."
                )
            raise load_error(what, ref, source, cls.name, None)
        root = Path(ref)
        pairs = list(zip(cls.text_encoder_names, cls.tokenizer_names, strict=True))
        if source == "dir" and any((root / te).is_dir() for te, _ in pairs):
            wanted = [(te, tok, te, tok) for te, tok in pairs if (root / te).is_dir()]
        else:  # one bare model folder / Hub id: it replaces the primary text encoder
            tok = cls.tokenizer_names[cls.text_encoder_names.index(cls.primary_text_encoder)]
            wanted = [(cls.primary_text_encoder, tok, None, None)]
        classes = cls.text_encoder_classes()
        out: dict[str, Any] = {}
        try:
            for te_name, tok_name, te_sub, tok_sub in wanted:
                model_class = getattr(transformers, classes[te_name])
                te_kwargs = {"subfolder": te_sub} if te_sub else {}
                out[te_name] = model_class.from_pretrained(ref, dtype=dtype, **te_kwargs)
                tok_dir = root / tok_sub if tok_sub else root
                if source == "hub" or (tok_dir / "tokenizer_config.json").is_file():
                    tok_kwargs = {"subfolder": tok_sub} if tok_sub else {}
                    out[tok_name] = transformers.AutoTokenizer.from_pretrained(ref, **tok_kwargs)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise load_error(what, ref, source, cls.name, exc) from exc
        return out

    @classmethod
    def text_encoder_classes(cls) -> dict[str, str]:
        return {"text_encoder": "CLIPTextModel"}

    # ------------------------------------------------------------------ components
    @property
    def denoiser(self) -> nn.Module:
        """The network LoRA trains: the U-Net (SD) or the transformer (Flux)."""
        return getattr(self.pipe, self.denoiser_name)

    @property
    def vae(self) -> nn.Module:
        return self.pipe.vae

    @property
    def text_encoders(self) -> dict[str, nn.Module]:
        return {
            name: getattr(self.pipe, name)
            for name in self.text_encoder_names
            if getattr(self.pipe, name, None) is not None
        }

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def is_flow(self) -> bool:
        return False

    def adapted_components(self) -> dict[str, nn.Module]:
        """Components that carry adapters, by pipeline attribute name."""
        parts = {self.denoiser_name: self.denoiser, **self.text_encoders}
        return {name: module for name, module in parts.items() if has_adapters(module)}

    def train(self, mode: bool = True) -> None:
        """Train mode (adapter dropout on) for the networks that carry adapters."""
        for module in self.adapted_components().values():
            module.train(mode)

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        """Recompute activations in backward (less memory) for the networks being trained."""
        den = self.denoiser
        if enabled:
            den.enable_gradient_checkpointing()
        else:
            den.disable_gradient_checkpointing()
        for part in self.adapted_components().values():
            if part is den:
                continue
            if enabled and hasattr(part, "gradient_checkpointing_enable"):
                part.gradient_checkpointing_enable()
            elif not enabled and hasattr(part, "gradient_checkpointing_disable"):
                part.gradient_checkpointing_disable()

    # ------------------------------------------------------------------ adapters
    def target_modules(self, network: NetworkConfig) -> tuple[list[str], list[str], list[str]]:
        """(linear targets, conv module names, of which 3x3) for the denoiser."""
        linear = (
            list(self.default_targets)
            if network.target_modules == "auto"
            else list(network.target_modules)
        )
        use_conv = self.supports_conv and (network.type == "locon" or network.conv is not None)
        if not use_conv:
            return linear, [], []
        modules = dict(self.denoiser.named_modules())
        convs = [name for name in conv_module_names(self.denoiser) if name not in linear]
        spatial = [name for name in convs if is_spatial_conv(modules[name])]
        if network.type == "locon":
            # SDXL's proj_in/proj_out are Linear layers: LoCon adapts them with the linear rank.
            linear += [
                ending
                for ending in ("proj_in", "proj_out")
                if any(
                    n.endswith("." + ending) and isinstance(m, nn.Linear)
                    for n, m in modules.items()
                )
                and ending not in linear
            ]
        return linear, convs, spatial

    def add_lora(
        self,
        network_cfg: NetworkConfig,
        train_text_encoder: bool = False,
        train_unet: bool | None = None,
    ) -> dict[str, list[nn.Parameter]]:
        """Add adapters (trainable, fp32) and return the parameter groups {"unet", "text_encoder"}.

        The key "unet" also names Flux's transformer, so optimizers group the same way for all.
        ``train_unet`` (default: ``train.train_unet``) False trains a text-encoder-only LoRA:
        the U-Net / transformer then gets no adapter at all, so none is saved either.
        """
        from diffusers.training_utils import cast_training_params

        if self.network is not None:
            raise RuntimeError("adapters were already added to this model")
        if train_text_encoder and not self.supports_text_encoder_training:
            raise ValueError(f"text-encoder LoRA is not supported for {self.name}")
        if train_unet is None:
            train_unet = self.cfg.train.train_unet
        if not (train_unet or train_text_encoder):
            raise ValueError("nothing to train: both train_unet and train_text_encoder are off")
        linear, convs, spatial = self.target_modules(network_cfg)
        groups: dict[str, list[nn.Parameter]] = {"unet": [], "text_encoder": []}
        if train_unet:
            self.denoiser.add_adapter(adapter_config(network_cfg, linear, convs, spatial))
            cast_training_params(self.denoiser, torch.float32)
            groups["unet"] = [p for p in self.denoiser.parameters() if p.requires_grad]
        if train_text_encoder:
            te_targets = list(TEXT_ENCODER_TARGETS)
            for te in self.text_encoders.values():
                te.add_adapter(adapter_config(network_cfg, te_targets))
                cast_training_params(te, torch.float32)
                groups["text_encoder"] += [p for p in te.parameters() if p.requires_grad]
        if train_unet and not groups["unet"]:
            raise ValueError(
                f"no layer of the {self.name} {self.denoiser_name} matched the target modules "
                f"{linear} — check network.target_modules"
            )
        self.network = network_cfg
        return groups

    def lora_state_dicts(self) -> dict[str, dict[str, Tensor]]:
        """peft state dicts (keys without the adapter name) per adapted component name."""
        from peft.utils import get_peft_model_state_dict

        return {
            name: {k: v.detach().clone() for k, v in get_peft_model_state_dict(module).items()}
            for name, module in self.adapted_components().items()
        }

    def load_lora_state(self, state_dicts: dict[str, dict[str, Tensor]]) -> None:
        """Load what ``lora_state_dicts`` returned (resume, or init from model.lora_path)."""
        from peft.utils import set_peft_model_state_dict

        parts = self.adapted_components()
        aliases = {"unet": self.denoiser_name, "transformer": self.denoiser_name}
        for name, state in state_dicts.items():
            target = aliases.get(name, name)
            if target not in parts:
                raise ValueError(
                    f"the LoRA has weights for '{name}', which has no adapter here (adapted: "
                    f"{', '.join(parts) or 'none'}) — add_lora first, with the same network type "
                    f"and text-encoder setting"
                )
            module = parts[target]
            expected = {k: v.shape for k, v in self._peft_state(module).items()}
            state = {k: v for k, v in state.items()}
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

    @staticmethod
    def _peft_state(module: nn.Module) -> dict[str, Tensor]:
        from peft.utils import get_peft_model_state_dict

        return get_peft_model_state_dict(module)

    @contextlib.contextmanager
    def lora_scale(self, scale: float) -> Iterator[None]:
        """Temporarily scale every adapter by ``scale``; 0 turns them off exactly."""
        from diffusers.utils.peft_utils import scale_lora_layers, unscale_lora_layers

        if getattr(self, "frozen_adapter", None):  # an accuracy recovery adapter stays at 1
            from trainer.engine.memory import scale_trained_adapter

            with scale_trained_adapter(self, scale):
                yield
            return
        parts = list(self.adapted_components().values())
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

    # ------------------------------------------------------------------ latents
    def _scale_latents(self, z: Tensor) -> Tensor:
        return z * self.vae.config.scaling_factor

    def _unscale_latents(self, z: Tensor) -> Tensor:
        return z / self.vae.config.scaling_factor

    @torch.no_grad()
    def encode_images(
        self, pixels: Tensor, generator: torch.Generator | None = None, sample: bool = False
    ) -> Tensor:
        """Pixels in [-1, 1] (B, 3, H, W) -> scaled latents on the training device and dtype.

        The distribution's mean by default (deterministic, so cached and live latents agree);
        ``sample=True`` draws from it with ``generator``.
        """
        x = pixels.to(self.vae_device, self.vae_dtype)
        dist = self.vae.encode(x).latent_dist
        z = dist.sample(generator) if sample else dist.mean
        return self._scale_latents(z.float()).to(self.device, self.dtype)

    @torch.no_grad()
    def decode_latents(self, latents: Tensor) -> Tensor:
        """Scaled latents -> pixels in [-1, 1] (B, 3, H, W), float32 on the CPU."""
        z = self._unscale_latents(latents.float()).to(self.vae_device, self.vae_dtype)
        return self.vae.decode(z).sample.float().clamp(-1, 1).cpu()

    # ------------------------------------------------------------------ noise and objective
    def _make_noise_scheduler(self, name: str) -> Any:
        import diffusers

        allowed = ("flowmatch",) if self.is_flow else ("ddpm", "euler")
        if name not in allowed:
            raise ValueError(
                f"train.noise_scheduler {name!r} does not fit {self.name}; use one of {allowed}"
            )
        scheduler_class = getattr(diffusers, SAMPLERS[name])
        return scheduler_class.from_config(self.base_scheduler_config, **self._prediction_kwargs())

    def _prediction_kwargs(self) -> dict[str, Any]:
        return {}

    @property
    def num_train_timesteps(self) -> int:
        return int(self.base_scheduler_config.get("num_train_timesteps", 1000))

    def sample_timesteps(self, batch_size: int, generator: torch.Generator | None = None) -> Tensor:
        """Training timesteps in [min_denoising_steps, max_denoising_steps] on the device.

        Integer (long) timesteps for SD models; continuous (float) ones for flow models, whose
        noise level is ``t / 1000``.
        """
        train = self.cfg.train
        low, high = sorted((train.min_denoising_steps, train.max_denoising_steps))
        high = min(high, self.num_train_timesteps - 1)
        u = draw_unit_timesteps(
            batch_size,
            resolved(self.cfg, "timestep_type"),
            train.content_or_style,
            train.timestep_shift,
            generator,
        )
        if self.is_flow:
            return (low + u * (high - low)).to(self.device, torch.float32)
        t = low + torch.floor(u * (high - low + 1)).long()
        return t.clamp(low, high).to(self.device)

    @abstractmethod
    def add_noise(self, latents: Tensor, noise: Tensor, t: Tensor) -> Tensor: ...

    @abstractmethod
    def target(self, latents: Tensor, noise: Tensor, t: Tensor) -> Tensor: ...

    @abstractmethod
    def predict(
        self, noisy: Tensor, t: Tensor, cond: dict[str, Tensor], extra: dict | None = None
    ) -> Tensor: ...

    @abstractmethod
    def snr(self, t: Tensor) -> Tensor: ...

    # ------------------------------------------------------------------ prompts
    def encode_prompts(self, prompts: list[str], with_grad: bool = False) -> dict[str, Tensor]:
        """Embeddings for a batch of captions, on the training device.

        ``with_grad=True`` keeps the graph (needed when a text-encoder LoRA is trained).
        """
        store = getattr(self, "prompt_store", None)  # text encoders unloaded: trainer.engine.memory
        if store is not None:
            return store.lookup(list(prompts), self.device, self.dtype)
        context = contextlib.nullcontext() if with_grad else torch.no_grad()
        with context:
            out = self._encode_prompts(list(prompts))
        return {
            k: v.to(self.device, self.dtype if v.is_floating_point() else v.dtype)
            for k, v in out.items()
        }

    @abstractmethod
    def _encode_prompts(self, prompts: list[str]) -> dict[str, Tensor]: ...

    # ------------------------------------------------------------------ sampling
    def _sampling_scheduler(self, sampler: str) -> Any:
        import diffusers

        name = ARCH_DEFAULTS[self.name]["sampler"] if sampler == "auto" else sampler
        allowed = ("flowmatch",) if self.is_flow else ("ddpm", "euler", "euler_a", "dpmpp_2m")
        if name not in allowed:
            raise ValueError(f"sampler {name!r} does not fit {self.name}; use one of {allowed}")
        scheduler_class = getattr(diffusers, SAMPLERS[name])
        return scheduler_class.from_config(self.base_scheduler_config, **self._prediction_kwargs())

    @torch.no_grad()
    def sample(
        self,
        prompts: Sequence[dict | str],
        *,
        sampler: str = "auto",
        steps: int = 20,
        guidance_scale: float | str = "auto",
        width: int = 512,
        height: int = 512,
        seed: int = 42,
        neg: str = "",
        lora_scale: float = 1.0,
    ) -> list[Image.Image]:
        """One image per prompt with the loaded components (nothing is reloaded).

        Each prompt may be a string or a dict with ``prompt`` and optional per-image overrides
        (``neg``, ``seed``, ``width``, ``height``, ``guidance_scale``, ``sample_steps``,
        ``network_multiplier``, as in ``SamplePrompt``). Every image gets its own seeded
        generator; networks return to their previous train/eval mode afterwards.
        """
        if guidance_scale == "auto":
            guidance_scale = float(ARCH_DEFAULTS[self.name]["guidance_scale"])
        parts = {self.denoiser_name: self.denoiser, **self.text_encoders, "vae": self.vae}
        modes = {name: module.training for name, module in parts.items()}
        old_scheduler = self.pipe.scheduler
        self.pipe.scheduler = self._sampling_scheduler(sampler)
        self._sampler_pipe = self._pipeline_on_training_device()
        images = []
        try:
            for module in parts.values():
                module.eval()
            for item in prompts:
                spec = {"prompt": item} if isinstance(item, str) else dict(item)
                scale = spec.get("network_multiplier")
                with self.lora_scale(lora_scale if scale is None else scale):
                    images.append(
                        self._sample_one(
                            prompt=spec["prompt"],
                            neg=spec.get("neg") if spec.get("neg") is not None else neg,
                            seed=spec.get("seed") if spec.get("seed") is not None else seed,
                            width=spec.get("width") or width,
                            height=spec.get("height") or height,
                            steps=spec.get("sample_steps") or steps,
                            guidance_scale=(
                                spec["guidance_scale"]
                                if spec.get("guidance_scale") is not None
                                else guidance_scale
                            ),
                        )
                    )
        finally:
            self.pipe.scheduler = old_scheduler
            self._sampler_pipe = None
            for name, module in parts.items():
                module.train(modes[name])
        return images

    def _pipeline_on_training_device(self) -> Any:
        """The pipeline, made to run on the training device even if the VAE or text encoders
        live elsewhere (a pipeline takes its device from its first module, often the VAE).
        Prompts are encoded and latents decoded by this class, so those never run inside it."""
        offloaded = getattr(self, "pin_execution_device", False)  # weights in offload storage
        if self.vae_device == self.device and self.te_device == self.device and not offloaded:
            return self.pipe
        device = self.device
        pinned = type(
            f"{type(self.pipe).__name__}OnTrainingDevice",
            (type(self.pipe),),
            {"_execution_device": property(lambda _self: device)},
        )
        pipe = pinned(**self.pipe.components, **self._pipeline_init_extras())
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def _pipeline_init_extras(self) -> dict[str, Any]:
        return {}

    @property
    def sampler_pipe(self) -> Any:
        """The pipeline ``_sample_latents`` calls (set while ``sample`` runs)."""
        return getattr(self, "_sampler_pipe", None) or self.pipe

    def _sample_one(
        self,
        *,
        prompt: str,
        neg: str,
        seed: int,
        width: int,
        height: int,
        steps: int,
        guidance_scale: float,
    ) -> Image.Image:
        generator = torch.Generator("cpu").manual_seed(int(seed))
        latents = self._sample_latents(
            prompt=prompt,
            neg=neg,
            generator=generator,
            width=width,
            height=height,
            steps=steps,
            guidance_scale=float(guidance_scale),
        )
        pixels = self.decode_latents(latents)
        return self.pipe.image_processor.postprocess(pixels, output_type="pil")[0]

    @abstractmethod
    def _sample_latents(
        self,
        *,
        prompt: str,
        neg: str,
        generator: torch.Generator,
        width: int,
        height: int,
        steps: int,
        guidance_scale: float,
    ) -> Tensor:
        """Scaled latents (B=1, C, h, w) from the pipeline, denoised but not decoded."""

    # ------------------------------------------------------------------ identity
    def fingerprint(self) -> str:
        """A stable id of what makes latents/embeddings: arch, model path, VAE config, encoders."""
        vae_config = {k: v for k, v in dict(self.vae.config).items() if not k.startswith("_")}
        payload = {
            "arch": self.name,
            "model": self.model_path,
            "vae_path": self.cfg.model.vae_path,
            "te": self.cfg.model.te_name_or_path,
            "vae_config": vae_config,
            "vae_dtype": str(self.vae_dtype),
        }
        blob = json.dumps(payload, sort_keys=True, default=str).encode()
        return f"{self.name}-{hashlib.sha256(blob).hexdigest()[:16]}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.model_path!r}, device={self.device}, dtype={self.dtype})"
        )


def unit_sigma(t: Tensor, num_train_timesteps: int = 1000) -> Tensor:
    """Flow-matching noise level in [0, 1] from a timestep in [0, num_train_timesteps]."""
    return (t.float() / num_train_timesteps).clamp(0.0, 1.0)


def expand_like(values: Tensor, like: Tensor) -> Tensor:
    """(B,) -> (B, 1, 1, ...) matching ``like``'s rank, device and dtype."""
    return values.to(like.device, like.dtype).reshape(-1, *([1] * (like.dim() - 1)))


__all__ = [
    "ADAPTER_NAME",
    "FLUX_TARGETS",
    "SAMPLERS",
    "SD_TARGETS",
    "TEXT_ENCODER_TARGETS",
    "Arch",
    "ModelLoadError",
    "adapter_config",
    "draw_unit_timesteps",
    "expand_like",
    "unit_sigma",
]
