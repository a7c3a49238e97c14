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
        "Hold out this many images of your datasets for validation (0 = no validation images). "
        "They are never trained on; the run scores the LoRA on them (the validation loss) to "
        "show when it starts to overfit and which checkpoint is best. The same images are held "
        "out whatever the seed or the order of the files, so runs on one dataset compare.",
        step="dataset",
        level="basic",
        affects=("quality",),
        ge=0,
        le=10_000,
    )
    folder_path: str | None = opt(
        None,
        "A separate folder of validation images (with captions, like a dataset) instead of "
        "held-out ones. Images that also appear in a dataset are left out of training.",
        step="dataset",
        affects=("quality",),
        min_length=1,
    )
    every: int = opt(
        0,
        "Compute the validation loss every this many steps. 0 = at each checkpoint save only. "
        "It is always computed at every checkpoint save and at the end, so every saved LoRA "
        "has a value.",
        step="save",
        affects=("speed",),
        ge=0,
        le=1_000_000,
    )
    draws: int = opt(
        4,
        "Noise and timestep draws per validation image. More draws give a steadier value at "
        "the cost of one forward pass each.",
        step="save",
        level="expert",
        affects=("speed",),
        ge=1,
        le=64,
    )
    seed: int = opt(
        0,
        "Seed of the validation noise and timesteps, independent of the training seed: keep it "
        "to compare the validation loss of different runs.",
        step="save",
        level="expert",
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
