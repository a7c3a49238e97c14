"""Validation loss: the LoRA scored on images it never trains on, with fixed noise and timesteps.

Two parts, in the order a run meets them:

- ``split_validation(cfg, scans, home)`` runs where the datasets are scanned
  (``loop.prepare_data``): it takes the held-out images (``validation.holdout``) out of the
  training scans, or scans ``validation.folder_path`` and drops its images from training, so a
  validation image is never trained on. Held-out images are the first ``holdout`` distinct
  images by content hash: the same ones whatever the seed, the file names or their order.
- ``Validation`` scores the LoRA on them every ``validation.every`` steps, at every checkpoint
  save and at the end (so every saved LoRA has a value), logs the metric ``val_loss`` and tags
  the saved LoRA with the lowest one (``studio.best_step``, ``studio.best_val_loss``). The job
  folder's ``validation.json`` keeps the same for the model card (``trainer.lora.card``).

Why the value compares across steps and runs: each (image, draw) has its own generator seeded by
``validation.seed``, the image's item key and the draw, so it gets the same noise and timestep at
every evaluation, independent of the training seed. The loss is ``objective.compute_loss`` (the
training objective) with the adapters in eval mode, without gradients, with the EMA weights when
``train.use_ema`` is on (what the saved LoRA holds). The global and CUDA RNG are forked around it
and the training noise generator is never touched, so a run trains exactly as without validation.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from trainer.arch.base import Arch
from trainer.config.schema import TrainingConfig
from trainer.config.sections.datasets import DatasetConfig
from trainer.data.batches import BucketBatches, collate_batch, derive_seed
from trainer.data.scanning import DatasetError, DatasetScan, scan_dataset
from trainer.demo.tiny import resolve_demo_ref
from trainer.engine.context import RunContext
from trainer.engine.ema import ema_weights
from trainer.engine.objective import ObjectiveState, compute_loss, needs_unaugmented
from trainer.files import write_json
from trainer.lora.card import VALIDATION_FILE, ValidationSummary
from trainer.tracking.layout import METRIC_VAL_LOSS, TAG_BEST_STEP, TAG_BEST_VAL_LOSS

# What a validation image is read with: every image once, centre crop, no random change to its
# pixels or its caption, weight 1. Masks and the trigger word stay: they are part of the objective.
STEADY = {
    "num_repeats": 1,
    "flip_x": False,
    "flip_y": False,
    "random_crop": False,
    "random_scale": False,
    "augmentations": [],
    "shuffle_tokens": False,
    "token_dropout_rate": 0.0,
    "caption_dropout_rate": 0.0,
    "loss_multiplier": 1.0,
    "is_reg": False,
}
AutocastFactory = Callable[[], Any]  # accelerate's ``accelerator.autocast``: mixed precision


# ------------------------------------------------------------------------------------ the split
def split_validation(
    cfg: TrainingConfig, scans: list[DatasetScan], home: Path
) -> tuple[list[DatasetScan], list[DatasetScan]]:
    """(training scans, validation scans): training without any validation image.

    Validation scans line up with ``cfg.datasets`` (empty where a dataset gave none), so a
    validation batch's dataset index names the dataset whose caching and trigger word apply.
    Raises DatasetError when the folder is missing or the hold-out would leave a dataset empty.
    """
    settings = cfg.validation
    if settings.folder_path:
        folder = validation_folder_scan(cfg, home)
        first = next(i for i, ds in enumerate(cfg.datasets) if not ds.is_reg)
        held = [
            folder if i == first else DatasetScan(steady(s.config), s.folder, [])
            for i, s in enumerate(scans)
        ]
        hashes = {info.content_hash for info in folder.images}
    elif settings.holdout:
        hashes = held_out_hashes(scans, settings.holdout)
        held = [
            DatasetScan(
                steady(s.config), s.folder, [i for i in s.images if i.content_hash in hashes]
            )
            for s in scans
        ]
    else:
        return scans, []
    training = [
        replace(s, images=[i for i in s.images if i.content_hash not in hashes]) for s in scans
    ]
    for before, after in zip(scans, training, strict=True):
        if before.images and not after.images:
            raise DatasetError(
                f"every image of {before.folder} is a validation image, so none is left to "
                "train on — lower validation.holdout or use other validation images"
            )
    return training, held


def held_out_hashes(scans: list[DatasetScan], holdout: int) -> set[str]:
    """The content hashes of the ``holdout`` images held out: the first by hash among the
    non-regularisation datasets' distinct images (duplicates of one image count once)."""
    pool = sorted({i.content_hash for s in scans if not s.config.is_reg for i in s.images})
    if holdout >= len(pool):
        raise DatasetError(
            f"validation.holdout is {holdout}, but the datasets hold {len(pool)} distinct "
            f"images — hold out fewer than {len(pool)} so some are left to train on"
        )
    return set(pool[:holdout])


def validation_folder_scan(cfg: TrainingConfig, home: Path) -> DatasetScan:
    """The images of ``validation.folder_path``, read like the first non-regularisation dataset
    (caption extension, default caption, trigger word, masks) but steadily."""
    configured = str(cfg.validation.folder_path)
    folder = Path(resolve_demo_ref(configured, home)).expanduser()
    if not folder.is_dir():
        state = "is not a folder" if folder.exists() else "does not exist"
        raise DatasetError(
            f"validation folder {folder} {state} — fix validation.folder_path ({configured!r}) "
            "or set it empty"
        )
    base = next(ds for ds in cfg.datasets if not ds.is_reg)
    return scan_dataset(steady(base).model_copy(update={"folder_path": configured}), folder)


def steady(ds: DatasetConfig) -> DatasetConfig:
    return ds.model_copy(update=STEADY)


# ------------------------------------------------------------------------------- the evaluation
class Validation:
    """The run's validation set and what it found: ``history`` ({step: val_loss}) and the best
    saved LoRA (``best``: (step, val_loss)). Without validation images every call does nothing."""

    def __init__(self, cfg: TrainingConfig, ctx: RunContext) -> None:
        self.cfg, self.ctx, self.settings = cfg, ctx, cfg.validation
        self.data: BucketBatches | None = None
        self.history: dict[int, float] = {}
        self.saved: set[int] = set()  # steps whose LoRA was saved
        self.best: tuple[int, float] | None = None

    def use(self, scans: list[DatasetScan]) -> None:
        """Score on these scans' images (``split_validation``'s validation scans)."""
        if not any(scan.images for scan in scans):
            return
        self.data = BucketBatches(
            scans,
            batch_size=1,
            seed=self.settings.seed,
            size_multiple=16 if self.cfg.model.arch == "flux" else 8,
            want_unaugmented=needs_unaugmented(self.cfg.train),
        )
        if self.ctx.dist.is_main:
            count = sum(len(scan.images) for scan in scans)
            source = "held out" if self.settings.holdout else "from validation.folder_path"
            print(f"validation: {count} images {source}, never trained on", flush=True)

    @property
    def items(self) -> int:
        return len(self.data) if self.data is not None else 0

    @property
    def forwards(self) -> int:
        """Forward passes one evaluation takes: every image, every draw."""
        return self.items * self.settings.draws

    def due_steps(self, start: int, total: int) -> list[int]:
        """The steps after ``start`` this run will score at (``after_step``'s every K steps and
        saves before the end, then the end), for the ETA; none without validation images."""
        if self.data is None or not self.ctx.dist.is_main:
            return []
        every, save_every = self.settings.every, self.cfg.save.save_every
        due = {total} if total > start else set()
        if every:
            due.update(range(every * (start // every + 1), total + 1, every))
        due.update(range(save_every * (start // save_every + 1), total, save_every))
        return sorted(step for step in due if step not in self.history)

    def after_step(
        self, arch: Arch, inputs: Any, state: Any, total: int, autocast: AutocastFactory
    ) -> float | None:
        """The loop's call after each step: score every ``validation.every`` steps and before
        each checkpoint the loop saves on its way (the end calls ``evaluate(..., saved=True)``).
        The last step's LoRA is saved right after, so it counts as saved here already: its log
        line then names the right best LoRA."""
        every, step = self.settings.every, state.step
        saves = step % self.cfg.save.save_every == 0 or step >= total  # as the loop decides
        if self.data is None or not (saves or (every and step % every == 0)):
            return None
        return self.evaluate(arch, inputs, state, autocast, saved=saves)

    def evaluate(
        self,
        arch: Arch,
        inputs: Any,
        state: Any,
        autocast: AutocastFactory = contextlib.nullcontext,
        saved: bool = False,
    ) -> float | None:
        """Score the LoRA as it is after ``state.step`` (once per step) and log ``val_loss``;
        ``saved``: this step's LoRA is saved, so it may be the best. Only the main process
        scores (the others have nothing to log)."""
        if self.data is None or not self.ctx.dist.is_main:
            return None
        step, fresh = state.step, state.step not in self.history
        if fresh:
            with self.ctx.clock.validation(step):  # measured: the ETA counts the ones still due
                self.history[step] = self.loss(arch, inputs, state, autocast)
            self.ctx.tracker.log_metrics({METRIC_VAL_LOSS: self.history[step]}, step=step)
        if saved:
            self.mark_saved(step)
        if fresh or saved:
            write_json(self.ctx.job_dir / VALIDATION_FILE, self.summary().to_json())
        if fresh:
            note = f" (best saved LoRA: step {self.best[0]})" if self.best else ""
            print(f"step {step}: validation loss {self.history[step]:.6g}{note}", flush=True)
        return self.history[step]

    def summary(self) -> ValidationSummary:
        """What the model card reports (``trainer.lora.card.ValidationSummary``)."""
        held_out = not self.settings.folder_path
        return ValidationSummary(self.items, held_out, dict(self.history), self.best)

    def mark_saved(self, step: int) -> None:
        """The LoRA of ``step`` is saved: it may be the new best (the earlier one on a tie)."""
        self.saved.add(step)
        value = self.history[step]
        if self.best is None or value < self.best[1]:
            self.best = (step, value)
            self.ctx.tracker.set_tags({TAG_BEST_STEP: str(step), TAG_BEST_VAL_LOSS: repr(value)})

    def loss(self, arch: Arch, inputs: Any, state: Any, autocast: AutocastFactory) -> float:
        """The mean training objective over every validation image and draw: deterministic for
        given weights (same images, captions, noise and timesteps every time)."""
        assert self.data is not None
        # The learnable SNR weights keep a running loss that a forward pass updates: use a copy.
        objective = ObjectiveState(snr_weights=copy.deepcopy(state.objective.snr_weights))
        parts = list(arch.adapted_components().values())
        was_training = [part.training for part in parts]
        forked = [arch.device] if arch.device.type == "cuda" else []
        total, count = 0.0, 0
        arch.train(False)
        try:
            with torch.random.fork_rng(devices=forked), torch.no_grad(), ema_weights(state.ema):
                for index in range(len(self.data)):
                    batch = collate_batch([self.data[(0, index)]])
                    for draw in range(self.settings.draws):
                        seed = derive_seed(self.settings.seed, "validation", batch["keys"][0], draw)
                        generator = torch.Generator().manual_seed(seed)
                        with autocast():
                            loss = compute_loss(arch, inputs, batch, self.cfg, generator, objective)
                        total += float(loss.detach().float().item())
                        count += 1
        finally:
            for part, mode in zip(parts, was_training, strict=True):
                part.train(mode)
        return total / count

    # A resumed run continues the history and the best from its checkpoint.
    def state_dict(self) -> dict[str, Any]:
        return {"history": dict(self.history), "saved": sorted(self.saved), "best": self.best}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if not state:
            return
        self.history = {int(k): float(v) for k, v in (state.get("history") or {}).items()}
        self.saved = {int(s) for s in state.get("saved") or []}
        best = state.get("best")
        self.best = (int(best[0]), float(best[1])) if best else None
