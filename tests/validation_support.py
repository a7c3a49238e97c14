"""Helpers for the validation-loss tests: score a LoRA on a run's validation images in-process.

Not a test module (pytest collects ``test_*.py`` only); the tests import it like
``options_support``.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from options_support import RecordingTracker

from trainer.arch.registry import load_arch
from trainer.config.schema import TrainingConfig
from trainer.engine.context import RunContext
from trainer.engine.loop import LoopState, ModelInputs, prepare_data
from trainer.engine.validation import Validation
from trainer.lora.io import load_lora_file


class Scorer:
    """The tiny model with fresh adapters and ``cfg``'s validation images, ready to score LoRAs
    (loaded once: several scores share it)."""

    def __init__(self, cfg: TrainingConfig, home: Path, job: Path) -> None:
        self.cfg = cfg
        self.arch = load_arch(cfg, home, torch.device("cpu"), torch.float32)
        self.arch.add_lora(cfg.network, cfg.train.train_text_encoder)
        self.ctx = RunContext(home=home, job_dir=job, tracker=RecordingTracker())
        self.validation = Validation(cfg, self.ctx)
        self.data = prepare_data(cfg, self.ctx, self.validation)
        self.inputs = ModelInputs(self.arch, cfg, self.ctx.cache_dir)

    def score(self, lora_file: Path | None = None, validation: Validation | None = None) -> float:
        """The validation loss of ``lora_file`` (None: the adapters as they are)."""
        if lora_file is not None:
            load_lora_file(self.arch, lora_file)
        scorer = validation or self.validation
        return scorer.loss(self.arch, self.inputs, LoopState(), contextlib.nullcontext)

    def with_settings(self, **settings: object) -> Validation:
        """A validation set of the same images with other validation settings (draws, seed)."""
        cfg = self.cfg.model_copy(
            update={"validation": self.cfg.validation.model_copy(update=settings)}
        )
        other = Validation(cfg, self.ctx)
        other.data = self.validation.data
        return other


def val_losses(tracker: RecordingTracker) -> dict[int, float]:
    """``{step: val_loss}`` as the run logged it."""
    return {s: m["val_loss"] for s, m in sorted(tracker.metrics.items()) if "val_loss" in m}
