"""Steps or epochs on the Training step: type either, see the other computed.

``train.epochs`` wins over ``train.steps`` when set (the trainer makes epochs steps at the start
of the run, `trainer.engine.run_length`). In the wizard the two stay one run length:
``store(path, value)`` writes what the user typed, and with epochs set it also writes the steps
they come to on the draft's images (so the Steps box, the predictions and the MLflow params show
the real count); typing steps clears epochs. ``store_all(patch)`` does the same for several
values at once (applying recommendations), and ``offered`` leaves out a recommendation for the
steps while epochs are set. ``render_run_length()`` draws the line under the
Epochs box: "1,200 steps = 10 epochs of 120 steps (24 images × 5 repeats ÷ batch 1)"; the words
of an epoch (``epoch_words``) are the Dataset card's too (``ui.datasets``).
The counting is the advisor's (`advisor.dataset.run_steps`), on the images `ui.dataset_facts`
counted.
"""

from __future__ import annotations

import copy
from typing import Any

import streamlit as st

from advisor.dataset import DatasetInfo, EpochCount, epoch_count, run_steps, training_info
from trainer.config.io import ConfigError, config_from_dict
from trainer.config.schema import TrainingConfig
from ui import state
from ui.boundary import advisor_boundary
from ui.dataset_facts import dataset_info

STEPS, EPOCHS = "train.steps", "train.epochs"
MAX_STEPS = 1_000_000  # train.steps' upper bound: more is left to the config's own check
LINE_KEY = "run_length_line"


# ------------------------------------------------------------------------------- the draft
def store(path: str, value: Any) -> None:
    """Write ``value`` at ``path``, keeping steps and epochs one run length (one undo step)."""
    links = linked_values(path, value, state.draft())
    if links:
        state.set_values({path: value, **links})
    else:
        state.set_value(path, value)


def linked_values(path: str, value: Any, draft: dict[str, Any]) -> dict[str, Any]:
    """What else changes when ``path`` becomes ``value``: typed steps (or Auto) clear epochs;
    with epochs set, any change (epochs, batch size, repeats...) brings the steps along."""
    return {k: v for k, v in linked_patch({path: value}, draft).items() if k != path}


def linked_patch(patch: dict[str, Any], draft: dict[str, Any]) -> dict[str, Any]:
    """``patch`` and what else changes with it (one run length): steps in it without epochs
    clear the epochs; else, with epochs set, the steps they come to on the draft's images."""
    after = copy.deepcopy(draft)
    for path, value in patch.items():
        state.dset(after, path, value)
    epochs = state.dget(after, EPOCHS)
    if STEPS in patch and EPOCHS not in patch:
        return patch | ({EPOCHS: None} if epochs is not None else {})
    if epochs is None:
        return patch
    try:
        cfg = config_from_dict(after)
    except ConfigError:  # the config's own checks explain it; nothing to count on
        return patch
    steps = run_steps(cfg, counted_images(cfg, after))
    if steps is None or steps > MAX_STEPS or steps == state.dget(after, STEPS):
        return patch
    return patch | {STEPS: steps}


def store_all(patch: dict[str, Any]) -> None:
    """Apply ``patch`` as one undo step, keeping steps and epochs one run length."""
    state.set_values(linked_patch(patch, state.draft()))


def offered(recs: dict[str, Any], draft: dict[str, Any]) -> dict[str, Any]:
    """The recommendations a person may apply to ``draft``: none for the steps while its epochs
    decide the run's length (the epochs would override them)."""
    if state.dget(draft, EPOCHS) is None:
        return recs
    return {path: rec for path, rec in recs.items() if path != STEPS}


def counted_images(cfg: TrainingConfig, draft: dict[str, Any]) -> DatasetInfo | None:
    """The draft's images as the advisor counts them; None while a folder is not known."""
    if any(not ds.folder_path for ds in cfg.datasets):
        return None
    info = dataset_info(draft, cfg)
    return info.found if info is not None and info.folders else None


# ------------------------------------------------------------------------------------ words
def run_length_text(cfg: TrainingConfig, info: DatasetInfo | None) -> str:
    """The run's length in steps and epochs, with how an epoch is counted."""
    train = cfg.train
    if info is None:
        return "Steps per epoch are counted once the dataset's images are found (Dataset step)" + (
            f"; the run trains {train.epochs} epochs." if train.epochs else "."
        )
    count = epoch_count(cfg, info)
    per_epoch = count.steps
    how = f"{per_epoch:,} steps ({epoch_words(cfg, info, count)})"
    steps = run_steps(cfg, info)
    if steps is None:
        return f"Steps are auto (the advisor decides); one epoch is {how}."
    epochs = steps / per_epoch
    shown = f"{epochs:,.0f}" if epochs.is_integer() else f"{epochs:,.1f}"
    noun = "epoch" if shown == "1" else "epochs"
    return f"**{steps:,} steps = {shown} {noun}** of {how}."


def epoch_words(cfg: TrainingConfig, info: DatasetInfo, count: EpochCount | None = None) -> str:
    """How one epoch is counted: '24 images × 5 repeats ÷ batch 1', with sizes, accumulation and
    processes when used; with a validation hold-out '10 images trained (12 − 2 held out for
    validation) × ...', since held-out images are never trained on."""
    count = count or epoch_count(cfg, info)
    repeats = {ds.num_repeats for ds in cfg.datasets}
    sizes = {len(ds.resolution) for ds in cfg.datasets}
    parts = [f"{count.images:,} images"]
    if count.held_out:
        parts = [
            f"{count.trained:,} images trained ({count.images:,} − {count.held_out:,} held out "
            "for validation)"
        ]
    if len(repeats) == 1:
        number = repeats.pop()
        parts.append(f"× {number} repeat{'s' if number != 1 else ''}")
    else:
        parts.append("× each dataset's repeats")
    if sizes != {1}:
        parts.append("× its sizes" if len(sizes) > 1 else f"× {sizes.pop()} sizes")
    train = cfg.train
    batch = train.max_batch_size if train.auto_scale_batch_size else train.batch_size
    parts.append(f"÷ batch {batch if isinstance(batch, int) else '1 (auto)'}")
    if train.gradient_accumulation_steps > 1:
        parts.append(f"÷ {train.gradient_accumulation_steps} accumulated")
    if cfg.runtime.num_processes > 1:
        parts.append(f"÷ {cfg.runtime.num_processes} processes")
    text = " ".join(parts)
    return text + ", rounded up per bucket" if _rounded(cfg, info, batch, count) else text


def _rounded(cfg: TrainingConfig, info: DatasetInfo, batch: Any, count: EpochCount) -> bool:
    """Whether batching per bucket adds steps to the plain division (of the trained images)."""
    trained = training_info(cfg, info)
    items = sum(
        f.images * ds.num_repeats * len(ds.resolution)
        for ds, f in zip(cfg.datasets, trained.folders, strict=False)
    )
    per_step = (batch if isinstance(batch, int) else 1) * cfg.train.gradient_accumulation_steps
    plain = -(-items // (per_step * cfg.runtime.num_processes))
    return count.steps != max(1, plain)


# ---------------------------------------------------------------------------------- drawing
def render_run_length() -> None:
    """The line under the Epochs box: the run's steps and epochs as the trainer will count."""
    checked = state.validated()
    cfg = checked.config or checked.last_valid
    if cfg is None:
        return
    with st.container(key=LINE_KEY), advisor_boundary("counting the steps per epoch"):
        text = run_length_text(cfg, counted_images(cfg, cfg.model_dump(mode="json")))
        st.caption(f":material/repeat: {text}")
