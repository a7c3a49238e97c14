"""What a training run measures for its reports (the loop's `report` sends them to the progress
file and MLflow): step speed and loss smoothing (`Meter`), memory (`peak_memory_mb`), and what
its ETA counts on (`plan_clock`: the previews, validations and saves still due,
trainer.engine.eta)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psutil
import torch

from trainer.config.schema import TrainingConfig
from trainer.data.batches import BucketBatches
from trainer.engine.context import RunContext
from trainer.engine.previews import preview_steps


@dataclass
class Meter:
    """Loss smoothing and speed; the first step (one-time set-up) is left out of s/step."""

    smoothed: float | None = None
    seconds: float = 0.0
    timed_steps: int = 0
    images: int = 0
    last_loss: float = float("nan")
    last_images: int = 0  # images in the last step (all its micro-batches)

    def update(self, loss: float, seconds: float, images: int, step: int) -> None:
        self.last_loss = loss
        self.last_images = images
        self.smoothed = loss if self.smoothed is None else 0.9 * self.smoothed + 0.1 * loss
        if self.timed_steps or step > 1:
            self.seconds += seconds
            self.timed_steps += 1
            self.images += images

    @property
    def seconds_per_step(self) -> float:
        return self.seconds / self.timed_steps if self.timed_steps else float("nan")


def plan_clock(
    ctx: RunContext,
    cfg: TrainingConfig,
    start: int,
    total: int,
    data: BucketBatches,
    trainable: list[torch.nn.Parameter],
    validation: Any = None,
) -> None:
    """Tell the run's clock (trainer.engine.eta) which previews, validations (``validation``:
    the run's ``trainer.engine.validation.Validation``) and saves are still due."""
    every = cfg.save.save_every
    scored = validation.due_steps(start, total) if validation is not None else []
    ctx.clock.plan(
        start=start,
        total=total,
        preview_steps=preview_steps(cfg, start, total) if ctx.dist.is_main else [],
        checkpoint_steps=range(every, total, every),
        images_per_round=len(cfg.sample.prompts),
        sample_steps=cfg.sample.sample_steps,
        images_per_step=data.batch_size * ctx.dist.world * cfg.train.gradient_accumulation_steps,
        trainable_bytes=sum(p.numel() * p.element_size() for p in trainable),
        validation_steps=scored,
        validation_forwards=validation.forwards if validation is not None else 0,
    )


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return psutil.Process().memory_info().rss / 2**20
