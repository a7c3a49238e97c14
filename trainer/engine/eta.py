"""How long the rest of a run takes: the training steps, preview rounds, validations and saves
still due.

``RunClock`` lives on the run's context (``ctx.clock``). The loop plans it once (which steps make
previews, which score the validation images, which save a checkpoint) and tells it each step's
speed; ``sample_and_log``, ``Validation.evaluate`` and the loop's saves time themselves with it.
``seconds_left()`` is then

    steps left x s/step + preview images still due x s/image
        + validations still due x s/validation + saves still due x s/save

and every progress write carries it as ``eta_s`` (``RunContext.phase``), so the ETA keeps counting
down while previews are made and files saved instead of reading 0 once the last step is done.
Per-image, per-validation and per-save times are measured; until the first one is, they are
predicted (below).
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

# Prediction until a preview image has been timed: a training step is a forward and a backward
# pass (about 3 forwards) over the step's images; one denoising step of a preview is one forward
# at batch 2 (classifier-free guidance). So an image costs about
# sample_steps x 2 / (3 x images per step) training steps.
PREVIEW_FORWARDS_PER_STEP = 2
TRAINING_FORWARDS_PER_IMAGE = 3
# Prediction until a save has been timed: a checkpoint writes the trainable weights and an
# Adam-style optimizer's two moments (3 x the fp32 weights), and MLflow copies the LoRA file;
# 200 MB/s is a conservative local-disk rate for that.
SAVED_COPIES_OF_WEIGHTS = 3
DISK_BYTES_PER_S = 200e6
FINAL_SAVES = 2  # the last checkpoint, then the LoRA file(s)
# Prediction until a validation has been timed: one forward pass at batch 1 per validation image
# and draw, no backward, against about 3 forwards per image of a training step.


@dataclass
class Durations:
    """A running mean of measured seconds."""

    total: float = 0.0
    count: int = 0

    def add(self, seconds: float) -> None:
        self.total += seconds
        self.count += 1

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None


@dataclass
class RunClock:
    """What is still due in this run and how long each kind of work takes here."""

    step: int = 0
    s_per_step: float | None = None
    total: int = 0  # 0 until planned: then nothing is predicted
    # Sorted steps of the work still to come; only what lies at or after the current step counts.
    preview_rounds_due: list[int] = field(default_factory=list)
    saves_due: list[int] = field(default_factory=list)
    validations_due: list[int] = field(default_factory=list)
    validation_forwards: int = 0  # forward passes of one validation: images x draws
    images_per_round: int = 0
    images_left_in_round: int = 0
    sample_steps: int = 0
    images_per_step: int = 1
    trainable_bytes: int = 0
    images: Durations = field(default_factory=Durations)
    saves: Durations = field(default_factory=Durations)
    validations: Durations = field(default_factory=Durations)

    def plan(
        self,
        *,
        start: int,
        total: int,
        preview_steps: Sequence[int],
        checkpoint_steps: Sequence[int],
        images_per_round: int,
        sample_steps: int,
        images_per_step: int,
        trainable_bytes: int,
        validation_steps: Sequence[int] = (),
        validation_forwards: int = 0,
    ) -> None:
        """The work still due after ``start``: previews at ``preview_steps``, checkpoints at
        ``checkpoint_steps``, validations (``validation_forwards`` forward passes each) at
        ``validation_steps`` and the final saves at ``total``."""
        self.step, self.total = start, total
        self.preview_rounds_due = sorted(s for s in preview_steps if s > start)
        self.saves_due = sorted(s for s in checkpoint_steps if s > start) + [total] * FINAL_SAVES
        self.images_per_round, self.sample_steps = images_per_round, sample_steps
        self.images_per_step, self.trainable_bytes = max(1, images_per_step), trainable_bytes
        self.validations_due = sorted(s for s in set(validation_steps) if s > start)
        self.validation_forwards = validation_forwards

    def at_step(self, step: int, s_per_step: float | None) -> None:
        self.step, self.s_per_step = step, s_per_step

    # ----------------------------------------------------------------- measuring
    @contextmanager
    def preview_round(self, step: int, images: int) -> Iterator[None]:
        """One round of previews (the round at ``step`` is no longer due once it starts)."""
        if step in self.preview_rounds_due:
            self.preview_rounds_due.remove(step)
        self.images_left_in_round = images
        try:
            yield
        finally:
            self.images_left_in_round = 0

    @contextmanager
    def preview_image(self) -> Iterator[None]:
        started = time.perf_counter()
        yield
        self.images.add(time.perf_counter() - started)
        self.images_left_in_round = max(0, self.images_left_in_round - 1)

    @contextmanager
    def validation(self, step: int) -> Iterator[None]:
        """One validation (the one at ``step`` is no longer due once it starts)."""
        if step in self.validations_due:
            self.validations_due.remove(step)
        started = time.perf_counter()
        yield
        self.validations.add(time.perf_counter() - started)

    @contextmanager
    def save(self) -> Iterator[None]:
        """One save (a checkpoint or the final LoRA): the next save due is no longer due."""
        started = time.perf_counter()
        yield
        self.saves.add(time.perf_counter() - started)
        next_due = bisect_left(self.saves_due, self.step)
        if next_due < len(self.saves_due):
            self.saves_due.pop(next_due)

    # ----------------------------------------------------------------- predicting
    @property
    def seconds_per_image(self) -> float | None:
        if self.images.mean is not None:
            return self.images.mean
        if self.s_per_step is None:
            return None
        forwards = self.sample_steps * PREVIEW_FORWARDS_PER_STEP
        return self.s_per_step * forwards / (TRAINING_FORWARDS_PER_IMAGE * self.images_per_step)

    @property
    def seconds_per_validation(self) -> float | None:
        if self.validations.mean is not None:
            return self.validations.mean
        if self.s_per_step is None:
            return None
        forwards = self.validation_forwards / (TRAINING_FORWARDS_PER_IMAGE * self.images_per_step)
        return self.s_per_step * forwards

    @property
    def seconds_per_save(self) -> float:
        if self.saves.mean is not None:
            return self.saves.mean
        return self.trainable_bytes * SAVED_COPIES_OF_WEIGHTS / DISK_BYTES_PER_S

    def seconds_left(self) -> float | None:
        """Seconds until the run ends, or None until the clock is planned and a step was timed."""
        if not self.total or self.s_per_step is None:
            return None
        training = max(0, self.total - self.step) * self.s_per_step
        rounds = len(self.preview_rounds_due) - bisect_left(self.preview_rounds_due, self.step)
        images = rounds * self.images_per_round + self.images_left_in_round
        saves = len(self.saves_due) - bisect_left(self.saves_due, self.step)
        validations = len(self.validations_due) - bisect_left(self.validations_due, self.step)
        return (
            training
            + images * (self.seconds_per_image or 0.0)
            + validations * (self.seconds_per_validation or 0.0)
            + saves * self.seconds_per_save
        )
