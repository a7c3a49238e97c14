"""How long a run trains: ``train.steps``, or ``train.epochs`` made into steps at the start.

With ``train.epochs`` set, epochs win over steps (as kohya's max_train_epochs does): once the
datasets are scanned, steps = epochs x steps per epoch, where an epoch is every item of
`trainer.data.batches.BucketBatches` (images x repeats x resolutions) batched per bucket, and one
optimizer step takes gradient accumulation x processes of those batches. The advisor counts the
same from the folders before the run (`advisor.dataset.run_steps`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from trainer.config.schema import TrainingConfig
from trainer.data.batches import BucketBatches
from trainer.engine.context import RunContext
from trainer.tracking.layout import PARAM_STEPS_PER_EPOCH, PARAM_TOTAL_STEPS


@dataclass(frozen=True)
class RunLength:
    steps: int  # optimizer steps the run trains
    steps_per_epoch: int  # optimizer steps in one pass over the data
    epochs: int | None  # train.epochs, when it decided the steps

    def describe(self) -> str:
        per_epoch = f"{self.steps_per_epoch} steps per epoch"
        if self.epochs is None:
            return f"{self.steps} steps ({self.steps / self.steps_per_epoch:.3g} x {per_epoch})"
        epochs = f"{self.epochs} epoch{'s' if self.epochs != 1 else ''}"
        return f"{self.steps} steps = {epochs} x {per_epoch}"


def steps_before_data(cfg: TrainingConfig) -> int | None:
    """The run's steps while the datasets are not scanned yet: None when epochs decide them."""
    steps = cfg.train.steps
    return steps if cfg.train.epochs is None and isinstance(steps, int) else None


def run_length(cfg: TrainingConfig, data: BucketBatches, processes: int = 1) -> RunLength:
    """The steps this run trains on ``data`` (all ``processes`` together share one epoch)."""
    per_step = cfg.train.gradient_accumulation_steps * processes
    per_epoch = max(1, math.ceil(data.batches_per_epoch / per_step))
    epochs = cfg.train.epochs
    if epochs is None:
        return RunLength(int(cfg.train.steps), per_epoch, None)
    return RunLength(epochs * per_epoch, per_epoch, epochs)


def plan_steps(cfg: TrainingConfig, ctx: RunContext, data: BucketBatches) -> int:
    """Resolve the run's length and record it: MLflow params ``total_steps`` and
    ``steps_per_epoch`` beside the config's ``train.steps`` / ``train.epochs``."""
    length = run_length(cfg, data, ctx.dist.world)
    ctx.tracker.log_params(
        {PARAM_TOTAL_STEPS: length.steps, PARAM_STEPS_PER_EPOCH: length.steps_per_epoch}
    )
    if cfg.train.epochs is not None and ctx.dist.is_main:
        print(f"run length: {length.describe()}", flush=True)
    return length.steps
