"""SDXL: the SD objective, two CLIP text encoders and "micro-conditioning" on sizes and crops.

The U-Net gets the concatenated penultimate hidden states of both encoders as cross-attention
input, plus the pooled projection of the second encoder and six numbers (original size, crop
top-left, target size) as ``added_cond_kwargs``. The loop passes those numbers per image in
``extra`` (``original_size``, ``crop_top_left``, ``target_size``, each (B, 2) as (height, width)
or (top, left)); missing ones default to the training size and no crop.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from trainer.arch.sd15 import StableDiffusionFamily


def _pairs(value: Any, batch: int, default: tuple[int, int]) -> Tensor:
    """(B, 2) float tensor from None, one pair, a list of pairs or a tensor."""
    if value is None:
        value = default
    pairs = torch.as_tensor(value, dtype=torch.float32)
    if pairs.dim() == 1:
        pairs = pairs.unsqueeze(0)
    if pairs.shape[0] == 1 and batch > 1:
        pairs = pairs.expand(batch, 2)
    if pairs.shape != (batch, 2):
        raise ValueError(
            f"expected {batch} (height, width)-style pairs, got shape {tuple(pairs.shape)}"
        )
    return pairs


class SDXLArch(StableDiffusionFamily):
    name: ClassVar[str] = "sdxl"
    pipeline_class_name: ClassVar[str] = "StableDiffusionXLPipeline"
    text_encoder_names: ClassVar[tuple[str, ...]] = ("text_encoder", "text_encoder_2")
    tokenizer_names: ClassVar[tuple[str, ...]] = ("tokenizer", "tokenizer_2")
    extra_pipeline_kwargs: ClassVar[dict[str, Any]] = {"add_watermarker": False}

    def _pipeline_init_extras(self) -> dict[str, Any]:
        return {
            "add_watermarker": False,
            "force_zeros_for_empty_prompt": self.pipe.config.get(
                "force_zeros_for_empty_prompt", True
            ),
        }

    @classmethod
    def text_encoder_classes(cls) -> dict[str, str]:
        return {"text_encoder": "CLIPTextModel", "text_encoder_2": "CLIPTextModelWithProjection"}

    def _encode_prompts(self, prompts: list[str]) -> dict[str, Tensor]:
        prompt_embeds, _, pooled, _ = self.pipe.encode_prompt(
            prompt=prompts,
            device=self.te_device,
            num_images_per_prompt=1,
            do_classifier_free_guidance=False,
        )
        return {"prompt_embeds": prompt_embeds, "pooled_prompt_embeds": pooled}

    def add_time_ids(self, batch: int, latent_hw: tuple[int, int], extra: dict) -> Tensor:
        """(B, 6): original size, crop top-left, target size, as SDXL was trained with."""
        size = (latent_hw[0] * self.vae_scale_factor, latent_hw[1] * self.vae_scale_factor)
        target = _pairs(extra.get("target_size"), batch, size)
        original = _pairs(extra.get("original_size"), batch, tuple(target[0].tolist()))
        crop = _pairs(extra.get("crop_top_left"), batch, (0, 0))
        return torch.cat([original, crop, target], dim=1)

    def _unet_kwargs(self, noisy: Tensor, cond: dict[str, Tensor], extra: dict) -> dict[str, Any]:
        time_ids = self.add_time_ids(noisy.shape[0], tuple(noisy.shape[-2:]), extra)
        return {
            "added_cond_kwargs": {
                "text_embeds": cond["pooled_prompt_embeds"].to(self.device, self.dtype),
                "time_ids": time_ids.to(self.device, self.dtype),
            }
        }

    def _pipeline_embeds(self, prompt: str, neg: str, guidance_scale: float) -> dict[str, Tensor]:
        cond = self.encode_prompts([prompt])
        kwargs = {
            "prompt_embeds": cond["prompt_embeds"],
            "pooled_prompt_embeds": cond["pooled_prompt_embeds"],
        }
        if guidance_scale > 1:
            if not neg and self.pipe.config.get("force_zeros_for_empty_prompt", True):
                # What the pipeline itself does for an empty negative prompt.
                negative = {k: torch.zeros_like(v) for k, v in cond.items()}
            else:
                negative = self.encode_prompts([neg])
            kwargs["negative_prompt_embeds"] = negative["prompt_embeds"]
            kwargs["negative_pooled_prompt_embeds"] = negative["pooled_prompt_embeds"]
        return kwargs
