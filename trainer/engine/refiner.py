"""SDXL refiner for previews: finishes each sample with img2img, as many SDXL users generate.

The refiner is never trained; it only makes previews look like what people will get from a
base + refiner workflow. Loaded once per run, on first use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from PIL import Image

from trainer.arch.sources import classify_source, load_error
from trainer.demo.tiny import resolve_demo_ref

REFINE_STRENGTH = 0.3  # the refiner redraws the last 30% of the noise schedule


class Refiner:
    def __init__(self, ref: str, home: Path, device: torch.device, dtype: torch.dtype) -> None:
        self.ref, self.home, self.device, self.dtype = ref, home, device, dtype
        self._pipe: Any = None

    def pipe(self) -> Any:
        if self._pipe is None:
            # diffusers: seconds to import; only when a refiner is configured.
            from diffusers import StableDiffusionXLImg2ImgPipeline

            path = resolve_demo_ref(self.ref, self.home)
            try:
                pipe = StableDiffusionXLImg2ImgPipeline.from_pretrained(path, dtype=self.dtype)
            except (OSError, ValueError) as err:
                source = classify_source(path)
                raise load_error("refiner", self.ref, source, "sdxl", err) from err
            pipe.set_progress_bar_config(disable=True)
            self._pipe = pipe.to(self.device)
        return self._pipe

    @torch.no_grad()
    def refine(self, image: Image.Image, prompt: str, seed: int, steps: int, guidance: float):
        generator = torch.Generator().manual_seed(seed)
        return self.pipe()(
            prompt=prompt,
            image=image,
            strength=REFINE_STRENGTH,
            num_inference_steps=max(steps, 4),
            guidance_scale=guidance,
            generator=generator,
        ).images[0]
