"""Stable Diffusion 1.x / 2.x: a U-Net trained with DDPM noise, one CLIP text encoder.

Training noise (``train.noise_scheduler``):

- ``ddpm``: ``x_t = sqrt(a_t) x + sqrt(1 - a_t) eps``, the U-Net sees ``x_t``.
- ``euler``: the Euler (k-diffusion) formulation of the same schedule: ``x_t = x + sigma_t eps``
  with ``sigma_t = sqrt((1 - a_t) / a_t)``, and the U-Net sees ``x_t / sqrt(sigma_t^2 + 1)``,
  which is the DDPM input again; same alphas, same targets.

Targets: the noise for epsilon models, the velocity ``sqrt(a) eps - sqrt(1 - a) x`` for
v-prediction models (``model.is_v_pred`` or a scheduler config that says so).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from trainer.arch.base import Arch
from trainer.arch.tensors import expand_like


class StableDiffusionFamily(Arch):
    """What SD1.5 and SDXL share: the U-Net, its noise schedule, objective and sampler call."""

    denoiser_name: ClassVar[str] = "unet"

    @property
    def is_v_pred(self) -> bool:
        return bool(
            self.cfg.model.is_v_pred
            or self.base_scheduler_config.get("prediction_type") == "v_prediction"
        )

    def _prediction_kwargs(self) -> dict[str, Any]:
        return {"prediction_type": "v_prediction" if self.is_v_pred else "epsilon"}

    @property
    def alphas_cumprod(self) -> Tensor:
        return self.noise_scheduler.alphas_cumprod

    def _alpha(self, t: Tensor, like: Tensor) -> Tensor:
        a = self.alphas_cumprod.to(t.device)[t.long()]
        return expand_like(a, like)

    def _sigma(self, t: Tensor, like: Tensor) -> Tensor:
        a = self.alphas_cumprod.to(t.device)[t.long()]
        return expand_like(((1 - a) / a).sqrt(), like)

    @property
    def uses_euler(self) -> bool:
        return type(self.noise_scheduler).__name__ == "EulerDiscreteScheduler"

    def add_noise(self, latents: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        if self.uses_euler:
            return latents + self._sigma(t, latents) * noise
        a = self._alpha(t, latents)
        return a.sqrt() * latents + (1 - a).sqrt() * noise

    def target(self, latents: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        if not self.is_v_pred:
            return noise
        a = self._alpha(t, latents)
        return a.sqrt() * noise - (1 - a).sqrt() * latents

    def model_input(self, noisy: Tensor, t: Tensor) -> Tensor:
        """What the U-Net sees: Euler's noisy latents are rescaled to the DDPM range."""
        if self.uses_euler:
            return noisy / (self._sigma(t, noisy) ** 2 + 1).sqrt()
        return noisy

    def snr(self, t: Tensor) -> Tensor:
        a = self.alphas_cumprod.to(t.device)[t.long()].float()
        return a / (1 - a)

    def _unet_kwargs(self, noisy: Tensor, cond: dict[str, Tensor], extra: dict) -> dict[str, Any]:
        return {}

    def predict(
        self, noisy: Tensor, t: Tensor, cond: dict[str, Tensor], extra: dict | None = None
    ) -> Tensor:
        x = self.model_input(noisy, t).to(self.device, self.dtype)
        out = self.denoiser(
            x,
            t.to(self.device),
            encoder_hidden_states=cond["prompt_embeds"].to(self.device, self.dtype),
            return_dict=False,
            **self._unet_kwargs(x, cond, extra or {}),
        )[0]
        return out

    def _pipeline_embeds(self, prompt: str, neg: str, guidance_scale: float) -> dict[str, Tensor]:
        cond = self.encode_prompts([prompt])
        kwargs = {"prompt_embeds": cond["prompt_embeds"]}
        if guidance_scale > 1:
            kwargs["negative_prompt_embeds"] = self.encode_prompts([neg or ""])["prompt_embeds"]
        return kwargs

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
        result = self.sampler_pipe(
            **self._pipeline_embeds(prompt, neg, guidance_scale),
            num_inference_steps=steps,
            guidance_scale=guidance_scale,
            width=width,
            height=height,
            generator=generator,
            output_type="latent",
        )
        return result.images


class SD15Arch(StableDiffusionFamily):
    name: ClassVar[str] = "sd15"
    pipeline_class_name: ClassVar[str] = "StableDiffusionPipeline"
    text_encoder_names: ClassVar[tuple[str, ...]] = ("text_encoder",)
    tokenizer_names: ClassVar[tuple[str, ...]] = ("tokenizer",)
    extra_pipeline_kwargs: ClassVar[dict[str, Any]] = {
        "safety_checker": None,
        "feature_extractor": None,
        "requires_safety_checker": False,
    }

    def _pipeline_init_extras(self) -> dict[str, Any]:
        return {"requires_safety_checker": False}

    def _encode_prompts(self, prompts: list[str]) -> dict[str, Tensor]:
        prompt_embeds, _ = self.pipe.encode_prompt(
            prompts,
            device=self.te_device,
            num_images_per_prompt=1,
            do_classifier_free_guidance=False,
        )
        return {"prompt_embeds": prompt_embeds}
