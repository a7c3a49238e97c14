"""What a training run measures for its reports (the loop's `report` sends them to the progress
file and MLflow): step speed and loss smoothing (`Meter`), memory (`peak_memory_mb`), and what
its ETA counts on (`plan_clock`: the previews, validations and saves still due,
trainer.engine.eta)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import psutil
import torch

from trainer.config.schema import TrainingConfig
from trainer.data.batches import BucketBatches
from trainer.engine.context import RunContext
from trainer.engine.previews import preview_steps

LOSS_SMOOTHING = 0.9  # the EMA's decay: about the last 10 steps count


@dataclass
class Meter:
    """Loss smoothing and speed; the first step (one-time set-up) is left out of s/step.

    The smoothed loss is a debiased exponential moving average, as TensorBoard draws it: the
    average starts from 0 and is divided by the weight its steps carry so far (1 - 0.9^n), so
    every step counts as the decay says from the first on. Seeding the average with the first
    raw loss instead gave that one noisy value the weight 0.9^n (a quarter of the average after
    14 steps), which kept the curve near it, below the raw losses of a rising run."""

    seconds: float = 0.0
    timed_steps: int = 0
    images: int = 0
    last_loss: float = float("nan")
    last_images: int = 0  # images in the last step (all its micro-batches)
    ema_total: float = 0.0  # the moving average before the bias correction
    ema_weight: float = 0.0  # 1 - 0.9^n after n losses: what the correction divides by

    @property
    def smoothed(self) -> float | None:
        """The debiased moving average of the losses so far; None before the first."""
        return self.ema_total / self.ema_weight if self.ema_weight else None

    @smoothed.setter
    def smoothed(self, value: float | None) -> None:
        # a resumed run goes on from the value it saved, as an average of many steps
        self.ema_total, self.ema_weight = (0.0, 0.0) if value is None else (float(value), 1.0)

    def update(self, loss: float, seconds: float, images: int, step: int) -> None:
        self.last_loss = loss
        self.last_images = images
        self.ema_total = LOSS_SMOOTHING * self.ema_total + (1 - LOSS_SMOOTHING) * loss
        self.ema_weight = LOSS_SMOOTHING * self.ema_weight + (1 - LOSS_SMOOTHING)
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
    return _this_process().memory_info().rss / 2**20


@functools.cache
def _this_process() -> psutil.Process:
    return psutil.Process()  # built once: it reads /proc to learn the process's start time
