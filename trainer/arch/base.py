"""The one interface every model family implements, so the training loop never branches on arch.

A training step reads the same for SD1.5, SDXL and Flux::

    arch = load_arch(cfg, home, device, dtype)            # trainer.arch.registry
    groups = arch.add_lora(cfg.network, cfg.train.train_text_encoder)
    latents = arch.encode_images(pixels)                  # [-1, 1] pixels -> scaled latents
    cond = arch.encode_prompts(captions, with_grad=te)   # dict of embeddings
    t = arch.sample_timesteps(len(latents), generator)
    noisy = arch.add_noise(latents, noise, t)
    loss = mse(arch.predict(noisy, t, cond, extra), arch.target(latents, noise, t))

``Arch`` holds what is shared: loading the pipeline (demo refs, folders, single files, hub ids, a
different VAE / text encoder: ``loading``, ``sources``), per-component device and dtype, adapters
(LoRA, DoRA, LoCon, LoHa, LoKr via peft: ``adapters``), timestep sampling (``tensors``), latents,
sampling with the pipeline and the adapter state dicts. The subclasses (``sd15.py``, ``sdxl.py``,
``flux.py``) add prompt encoding, the noise objective and the network call.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

from trainer.arch.adapters import (
    SD_TARGETS,
    TEXT_ENCODER_TARGETS,
    adapter_config,
    adapter_state,
    add_adapter,
    has_adapters,
    load_adapter_state,
    lora_targets,
    scale_adapters,
    scale_trained_adapter,
)
from trainer.arch.loading import load_base_pipeline
from trainer.arch.pipelines import eval_mode, image_settings, make_scheduler, pinned_pipeline
from trainer.arch.tensors import (
    draw_unit_timesteps,
    freeze,
    own_dtype,
    place,
    resolve_device,
    resolve_dtype,
)
from trainer.config.fields import ARCH_DEFAULTS
from trainer.config.introspection import resolved
from trainer.config.schema import TrainingConfig
from trainer.config.sections.model import NetworkConfig

if TYPE_CHECKING:
    from PIL import Image


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
        import diffusers  # diffusers: seconds to import; only when a model loads or saves

        return getattr(diffusers, cls.pipeline_class_name)

    @classmethod
    def load(
        cls, cfg: TrainingConfig, home: Path, device: torch.device, dtype: torch.dtype
    ) -> Arch:
        """Load the base model named by ``cfg.model`` (what it may be: ``trainer.arch.loading``)."""
        pipe, model_path = load_base_pipeline(cls, cfg, Path(home), dtype)
        return cls(cfg, pipe, model_path=model_path, device=device, dtype=dtype)

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
        return lora_targets(self.denoiser, network, self.default_targets, self.supports_conv)

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
            config = adapter_config(network_cfg, linear, convs, spatial)
            groups["unet"] = add_adapter(self.denoiser, config)
        if train_text_encoder:
            te_targets = list(TEXT_ENCODER_TARGETS)
            for te in self.text_encoders.values():
                groups["text_encoder"] += add_adapter(te, adapter_config(network_cfg, te_targets))
        if train_unet and not groups["unet"]:
            raise ValueError(
                f"no layer of the {self.name} {self.denoiser_name} matched the target modules "
                f"{linear} — check network.target_modules"
            )
        self.network = network_cfg
        return groups

    def lora_state_dicts(self) -> dict[str, dict[str, Tensor]]:
        """peft state dicts (keys without the adapter name) per adapted component name."""
        return {
            name: {k: v.detach().clone() for k, v in adapter_state(module).items()}
            for name, module in self.adapted_components().items()
        }

    def load_lora_state(self, state_dicts: dict[str, dict[str, Tensor]]) -> None:
        """Load what ``lora_state_dicts`` returned (resume, or init from model.lora_path)."""
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
            load_adapter_state(name, parts[target], dict(state))

    def lora_scale(self, scale: float) -> contextlib.AbstractContextManager[None]:
        """Temporarily scale every adapter by ``scale``; 0 turns them off exactly.

        An accuracy recovery adapter (``frozen_adapter``) stays at full strength."""
        parts = list(self.adapted_components().values())
        if getattr(self, "frozen_adapter", None):
            return scale_trained_adapter(parts, scale)
        return scale_adapters(parts, scale)

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
        with own_dtype(self.vae_device):  # also inside the training step's autocast
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
        allowed = ("flowmatch",) if self.is_flow else ("ddpm", "euler")
        if name not in allowed:
            raise ValueError(
                f"train.noise_scheduler {name!r} does not fit {self.name}; use one of {allowed}"
            )
        return make_scheduler(name, self.base_scheduler_config, **self._prediction_kwargs())

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
        store = getattr(self, "prompt_store", None)  # text encoders unloaded: engine.memory.prompts
        if store is not None:
            return store.lookup(list(prompts), self.device, self.dtype)
        context = contextlib.nullcontext() if with_grad else torch.no_grad()
        precision = contextlib.nullcontext() if with_grad else own_dtype(self.te_device)
        with context, precision:  # trained encoders run under the step's autocast, frozen ones not
            out = self._encode_prompts(list(prompts))
        return {
            k: v.to(self.device, self.dtype if v.is_floating_point() else v.dtype)
            for k, v in out.items()
        }

    @abstractmethod
    def _encode_prompts(self, prompts: list[str]) -> dict[str, Tensor]: ...

    # ------------------------------------------------------------------ sampling
    def _sampling_scheduler(self, sampler: str) -> Any:
        name = ARCH_DEFAULTS[self.name]["sampler"] if sampler == "auto" else sampler
        allowed = ("flowmatch",) if self.is_flow else ("ddpm", "euler", "euler_a", "dpmpp_2m")
        if name not in allowed:
            raise ValueError(f"sampler {name!r} does not fit {self.name}; use one of {allowed}")
        return make_scheduler(name, self.base_scheduler_config, **self._prediction_kwargs())

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
        defaults = {
            "neg": neg,
            "seed": seed,
            "width": width,
            "height": height,
            "steps": steps,
            "guidance_scale": guidance_scale,
            "network_multiplier": lora_scale,
        }
        old_scheduler = self.pipe.scheduler
        self.pipe.scheduler = self._sampling_scheduler(sampler)
        self._sampler_pipe = self._pipeline_on_training_device()
        images = []
        try:
            with eval_mode([self.denoiser, *self.text_encoders.values(), self.vae]):
                for item in prompts:
                    settings = image_settings(item, defaults)
                    with self.lora_scale(settings.pop("network_multiplier")):
                        images.append(self._sample_one(**settings))
        finally:
            self.pipe.scheduler = old_scheduler
            self._sampler_pipe = None
        return images

    def _pipeline_on_training_device(self) -> Any:
        """The pipeline, made to run on the training device even if the VAE or text encoders
        live elsewhere (a pipeline takes its device from its first module, often the VAE).
        Prompts are encoded and latents decoded by this class, so those never run inside it."""
        offloaded = getattr(self, "pin_execution_device", False)  # weights in offload storage
        if self.vae_device == self.device and self.te_device == self.device and not offloaded:
            return self.pipe
        return pinned_pipeline(self.pipe, self.device, self._pipeline_init_extras())

    def _pipeline_init_extras(self) -> dict[str, Any]:
        return {}

    @property
    def sampler_pipe(self) -> Any:
        """The pipeline ``_sample_latents`` calls (set while ``sample`` runs)."""
        return getattr(self, "_sampler_pipe", None) or self.pipe

    def _sample_one(self, *, seed: int, guidance_scale: float, **settings: Any) -> Image.Image:
        """One image; ``settings``: prompt, neg, width, height, steps (``image_settings``)."""
        generator = torch.Generator("cpu").manual_seed(int(seed))
        latents = self._sample_latents(
            generator=generator, guidance_scale=float(guidance_scale), **settings
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
