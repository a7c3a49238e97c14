"""The validation section: images the LoRA is scored on but never trained on, and how often.

Either hold out ``holdout`` images of the datasets or name a separate ``folder_path``; the
trainer (``trainer.engine.validation``) then logs a deterministic validation loss (``val_loss``)
every ``every`` steps and at every LoRA save, and marks the saved LoRA with the lowest one.
Rules that need the scanned folders (the folder exists, the hold-out leaves images to train on)
are checked where the datasets are scanned, before training starts.
"""

from __future__ import annotations

from pydantic import model_validator

from trainer.config.fields import Section, field_error, opt
from trainer.config.sections.outputs import MAX_SEED


class ValidationConfig(Section):
    holdout: int = opt(
        0,
        "Images of your datasets set aside to measure overfitting (0 = none): the run never "
        "trains on them and scores the LoRA on them (the validation loss), which falls while the "
        "LoRA learns and rises again once it starts copying its training images, and so shows "
        "which saved LoRA is best. They leave training, so an epoch has fewer steps. The same "
        "images are held out whatever the seed or the order of the files, so runs on one dataset "
        "compare.",
        step="dataset",
        level="basic",
        affects=("quality",),
        ge=0,
        le=10_000,
    )
    folder_path: str | None = opt(
        None,
        "A separate folder of validation images (with captions, like a dataset) to score the "
        "LoRA on, instead of holding out images of your datasets. Images that also appear in a "
        "dataset are left out of training.",
        step="dataset",
        level="basic",
        affects=("quality",),
        min_length=1,
    )
    every: int = opt(
        0,
        "How often the validation loss is computed, in training steps (0 = only when a LoRA is "
        "saved and at the end). It is always computed at every LoRA save and at the end, so "
        "every saved LoRA has a value; a smaller number draws a finer curve at the cost of a "
        "few forward passes each time. Needs validation images (holdout or folder).",
        step="dataset",
        affects=("speed",),
        ge=0,
        le=1_000_000,
    )
    draws: int = opt(
        4,
        "Noise and timestep draws per validation image each time the validation loss is "
        "computed. More draws give a steadier value at the cost of one forward pass each.",
        step="dataset",
        affects=("speed",),
        ge=1,
        le=64,
    )
    seed: int = opt(
        0,
        "Seed of the validation noise and timesteps, independent of the training seed: keep it "
        "the same to compare the validation loss of different runs.",
        step="dataset",
        ge=0,
        le=MAX_SEED,
    )

    @property
    def enabled(self) -> bool:
        return self.holdout > 0 or bool(self.folder_path)

    @model_validator(mode="after")
    def _one_source(self) -> ValidationConfig:
        if self.holdout and self.folder_path:
            raise field_error(
                "folder_path",
                "validation images come from held-out images or from a folder, not both — "
                "set holdout to 0 or leave folder_path empty",
            )
        return self
