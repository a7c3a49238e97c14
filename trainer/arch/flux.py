"""Flux.1: a rectified-flow transformer, CLIP (pooled) + T5 (sequence) text encoders.

Objective (rectified flow): with ``sigma = t / 1000``, ``noisy = (1 - sigma) x + sigma noise`` and
the transformer predicts the velocity ``noise - x``. Latents are ``(z - shift_factor) *
scaling_factor`` of a 16-channel VAE, packed 2x2 into tokens with the pipeline's own helpers
(``_pack_latents`` / ``_unpack_latents`` / ``_prepare_latent_image_ids``, private API: diffusers is
pinned). Guidance-distilled models (FLUX.1-dev, ``guidance_embeds``) get a guidance value, 1.0 while
training unless ``extra["guidance"]`` says otherwise.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from trainer.arch.adapters import FLUX_TARGETS
from trainer.arch.base import Arch
from trainer.arch.tensors import expand_like, unit_sigma


class FluxArch(Arch):
    name: ClassVar[str] = "flux"
    pipeline_class_name: ClassVar[str] = "FluxPipeline"
    denoiser_name: ClassVar[str] = "transformer"
    text_encoder_names: ClassVar[tuple[str, ...]] = ("text_encoder", "text_encoder_2")
    tokenizer_names: ClassVar[tuple[str, ...]] = ("tokenizer", "tokenizer_2")
    primary_text_encoder: ClassVar[str] = "text_encoder_2"  # a bare folder replaces T5
    default_targets: ClassVar[tuple[str, ...]] = FLUX_TARGETS
    supports_conv: ClassVar[bool] = False
    supports_text_encoder_training: ClassVar[bool] = False
    max_sequence_length: int = 512  # T5 tokens; what FluxPipeline uses by default
    train_guidance: float = 1.0

    @classmethod
    def text_encoder_classes(cls) -> dict[str, str]:
        return {"text_encoder": "CLIPTextModel", "text_encoder_2": "T5EncoderModel"}

    @property
    def is_flow(self) -> bool:
        return True

    # ------------------------------------------------------------------ latents
    def _scale_latents(self, z: Tensor) -> Tensor:
        config = self.vae.config
        return (z - (config.shift_factor or 0.0)) * config.scaling_factor

    def _unscale_latents(self, z: Tensor) -> Tensor:
        config = self.vae.config
        return z / config.scaling_factor + (config.shift_factor or 0.0)

    def pack(self, latents: Tensor) -> Tensor:
        b, c, h, w = latents.shape
        return self.pipe._pack_latents(latents, b, c, h, w)

    def unpack(self, packed: Tensor, latent_h: int, latent_w: int) -> Tensor:
        factor = self.vae_scale_factor
        return self.pipe._unpack_latents(packed, latent_h * factor, latent_w * factor, factor)

    # ------------------------------------------------------------------ prompts
    def _encode_prompts(self, prompts: list[str]) -> dict[str, Tensor]:
        prompt_embeds, pooled, text_ids = self.pipe.encode_prompt(
            prompt=prompts,
            prompt_2=None,
            device=self.te_device,
            num_images_per_prompt=1,
            max_sequence_length=self.max_sequence_length,
        )
        # Batch-first like every other entry, so per-caption caches can be stacked; the
        # transformer takes one (T, 3) row set (all rows are zeros for text tokens).
        return {
            "prompt_embeds": prompt_embeds,
            "pooled_prompt_embeds": pooled,
            "text_ids": text_ids.unsqueeze(0).repeat(len(prompts), 1, 1),
            "text_mask": self.text_mask(prompts, prompt_embeds.shape[1]),
        }

    def text_mask(self, prompts: list[str], length: int) -> Tensor:
        """1 for real T5 tokens, 0 for padding (what model.attn_masking hides from attention)."""
        tokens = self.pipe.tokenizer_2(
            prompts,
            padding="max_length",
            max_length=length,
            truncation=True,
            return_tensors="pt",
        )
        return tokens.attention_mask.float()

    def joint_attention_mask(self, text_mask: Tensor, image_tokens: int) -> Tensor:
        """Boolean (B, 1, 1, text + image) mask: every query may attend to real tokens only."""
        image = torch.ones(text_mask.shape[0], image_tokens, device=self.device)
        keep = torch.cat([text_mask.to(self.device), image], dim=1) > 0.5
        return keep[:, None, None, :]

    # ------------------------------------------------------------------ objective
    def sigma(self, t: Tensor) -> Tensor:
        return unit_sigma(t, self.num_train_timesteps)

    def add_noise(self, latents: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        s = expand_like(self.sigma(t), latents)
        return (1 - s) * latents + s * noise

    def target(self, latents: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        return noise - latents

    def snr(self, t: Tensor) -> Tensor:
        s = self.sigma(t).clamp(1e-4, 1.0)
        return ((1 - s) / s) ** 2

    def predict(
        self, noisy: Tensor, t: Tensor, cond: dict[str, Tensor], extra: dict | None = None
    ) -> Tensor:
        extra = extra or {}
        b, _, h, w = noisy.shape
        packed = self.pack(noisy.to(self.device, self.dtype))
        img_ids = self.pipe._prepare_latent_image_ids(b, h // 2, w // 2, self.device, self.dtype)
        prompt_embeds = cond["prompt_embeds"].to(self.device, self.dtype)
        text_ids = cond.get("text_ids")
        if text_ids is None:
            text_ids = torch.zeros(prompt_embeds.shape[1], 3)
        if text_ids.dim() == 3:  # (B, T, 3): the same ids for every sample
            text_ids = text_ids[0]
        guidance = None
        if self.denoiser.config.guidance_embeds:
            value = float(extra.get("guidance", self.train_guidance))
            guidance = torch.full((b,), value, device=self.device, dtype=torch.float32)
        attention = None
        if self.cfg.model.attn_masking and "text_mask" in cond:
            mask = self.joint_attention_mask(cond["text_mask"], packed.shape[1])
            attention = {"attention_mask": mask}
        out = self.denoiser(
            joint_attention_kwargs=attention,
            hidden_states=packed,
            timestep=self.sigma(t).to(self.device, self.dtype),
            guidance=guidance,
            pooled_projections=cond["pooled_prompt_embeds"].to(self.device, self.dtype),
            encoder_hidden_states=prompt_embeds,
            txt_ids=text_ids.to(self.device, self.dtype),
            img_ids=img_ids,
            return_dict=False,
        )[0]
        return self.unpack(out, h, w)

    # ------------------------------------------------------------------ sampling
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
        # Negative prompts need Flux's "true CFG" (two passes); previews use distilled guidance.
        cond = self.encode_prompts([prompt])
        result = self.sampler_pipe(
            prompt_embeds=cond["prompt_embeds"],
            pooled_prompt_embeds=cond["pooled_prompt_embeds"],
            num_inference_steps=steps,
            guidance_scale=guidance_scale,
            width=width,
            height=height,
            generator=generator,
            max_sequence_length=self.max_sequence_length,
            output_type="latent",
        )
        factor = self.vae_scale_factor
        return self.unpack(result.images, height // factor, width // factor)
