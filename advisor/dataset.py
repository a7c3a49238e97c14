"""What the advisor knows about the training images, and the step arithmetic built on it.

``DatasetInfo`` is plain data: per dataset folder the number of usable images and, when the
folder was scanned, their sizes, captions and the files that were skipped. With sizes the step
arithmetic is exact and bucket-aware (the trainer's own ``epoch_bucket_counts`` /
``steps_per_epoch`` from ``trainer.data.buckets``, plain Python); without them it uses
``ceil(images × repeats / (batch × accumulation))`` (docs/sources.md#step-arithmetic).

Validation images are not trained on, and the step arithmetic leaves them out as the trainer
does. The trainer holds out the first ``validation.holdout`` distinct images by content hash
(``trainer.engine.validation.held_out_hashes``), which only a full read of every image can tell;
the advisor approximates: it takes ``holdout`` images from the regularisation-free datasets in
proportion to their image counts (largest remainder), and their sizes evenly spread over each
folder's list, and it counts duplicates as images. Images of ``validation.folder_path`` that also
lie in a dataset leave training too; the advisor does not compare contents and keeps them.

Scanning a folder (``trainer.data.scanning``) decodes images with PIL, so that module is imported
only when a folder is scanned.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from trainer.config.fields import ARCH_DEFAULTS
from trainer.config.schema import TrainingConfig
from trainer.config.sections.datasets import DatasetConfig
from trainer.data.buckets import epoch_bucket_counts
from trainer.data.buckets import steps_per_epoch as trainer_steps

if TYPE_CHECKING:
    from trainer.data.scanning import DatasetScan  # imports PIL: for type checkers only


@dataclass(frozen=True)
class FolderInfo:
    images: int
    sizes: tuple[tuple[int, int], ...] = ()  # (width, height) per usable image, if scanned
    captioned: int | None = None  # images with a caption file
    unique_captions: int | None = None
    skipped: tuple[tuple[str, str], ...] = ()  # (file, reason)
    notes: tuple[tuple[str, str], ...] = ()
    with_alpha: int = 0
    folder: str = ""
    caption_trigger: str | None = None  # a rare token every caption contains already
    captions: tuple[str, ...] = field(default=(), repr=False)  # the caption files' texts
    missing: bool = False  # the folder does not exist: nothing else about it is known
    refused: str = ""  # why it may not be read (outside the studio's allowed folders): also missing


@dataclass(frozen=True)
class DatasetInfo:
    """One ``FolderInfo`` per entry of ``cfg.datasets`` (same order); ``validation``: the
    folder ``validation.folder_path`` names, when one is named and was looked at (a missing or
    refused one is ``missing``)."""

    folders: tuple[FolderInfo, ...] = field(default_factory=tuple)
    validation: FolderInfo | None = None

    @classmethod
    def counts(cls, *images: int) -> DatasetInfo:
        return cls(tuple(FolderInfo(n) for n in images))

    def folder(self, index: int) -> FolderInfo | None:
        return self.folders[index] if index < len(self.folders) else None

    @property
    def found(self) -> DatasetInfo | None:
        """Itself when every folder exists, else None (predictions then use the priors)."""
        return None if any(f.missing for f in self.folders) else self

    @property
    def total_images(self) -> int:
        return sum(f.images for f in self.folders)


def training_images(cfg: TrainingConfig, info: DatasetInfo) -> int:
    """Images of the subject (regularisation folders left out)."""
    return sum(f.images for ds, f in zip(cfg.datasets, info.folders, strict=False) if not ds.is_reg)


def held_out_counts(cfg: TrainingConfig, info: DatasetInfo) -> dict[int, int]:
    """Dataset index -> images ``validation.holdout`` takes from it (the advisor's estimate:
    shares proportional to the regularisation-free datasets' image counts, largest remainder
    first, an earlier dataset first on a tie); empty without a hold-out."""
    holdout = cfg.validation.holdout
    pool = {
        i: f.images
        for i, (ds, f) in enumerate(zip(cfg.datasets, info.folders, strict=False))
        if not ds.is_reg and f.images
    }
    total = sum(pool.values())
    if not holdout or not total:
        return {}
    take = min(holdout, total)
    shares = {i: take * n / total for i, n in pool.items()}
    counts = {i: int(share) for i, share in shares.items()}
    by_remainder = sorted(pool, key=lambda i: (counts[i] - shares[i], i))
    for i in by_remainder[: take - sum(counts.values())]:
        counts[i] += 1
    return {i: n for i, n in counts.items() if n}


def _without(folder: FolderInfo, taken: int) -> FolderInfo:
    """``folder`` less ``taken`` images, their sizes taken evenly from its list of sizes."""
    sizes = folder.sizes
    if sizes:
        drop = min(len(sizes), round(taken * len(sizes) / folder.images))
        gone = {int((j + 0.5) * len(sizes) / drop) for j in range(drop)} if drop else set()
        sizes = tuple(size for index, size in enumerate(sizes) if index not in gone)
    return replace(folder, images=max(0, folder.images - taken), sizes=sizes)


def training_info(cfg: TrainingConfig, info: DatasetInfo) -> DatasetInfo:
    """``info`` as the trainer trains on it: the held-out validation images taken out (the
    estimate of ``held_out_counts``)."""
    taken = held_out_counts(cfg, info)
    if not taken:
        return info
    folders = tuple(
        _without(folder, taken[i]) if i in taken else folder
        for i, folder in enumerate(info.folders)
    )
    return replace(info, folders=folders)


# ----------------------------------------------------------------------------- step arithmetic
def bucket_counts(ds: DatasetConfig, folder: FolderInfo, arch: str) -> Counter[object]:
    """Items per bucket for one epoch of one dataset (repeats and resolutions included)."""
    if not folder.sizes:
        return Counter({("unknown", id(ds)): folder.images * ds.num_repeats * len(ds.resolution)})
    key = (tuple(ds.resolution), ds.enable_bucketing, ds.bucket_no_upscale, folder.sizes, arch)
    return Counter({b: n * ds.num_repeats for b, n in _bucket_table(*key)})


@lru_cache(maxsize=256)
def _bucket_table(
    resolutions: tuple[int, ...],
    enable_bucketing: bool,
    no_upscale: bool,
    sizes: tuple[tuple[int, int], ...],
    arch: str,
) -> tuple[tuple[tuple[int, int], int], ...]:
    counts = epoch_bucket_counts(
        sizes,
        resolutions,
        ARCH_DEFAULTS[arch]["size_multiple"],
        enable_bucketing=enable_bucketing,
        no_upscale=no_upscale,
    )
    return tuple(counts.items())


def steps_per_epoch(cfg: TrainingConfig, info: DatasetInfo, batch: int | None = None) -> int:
    """Optimizer steps in one epoch over every dataset (bucket-aware when sizes are known),
    without the held-out validation images (``training_info``).

    Like the trainer's ``BucketBatches``, images of every dataset that share a bucket are batched
    together and a batch never mixes buckets.
    """
    info = training_info(cfg, info)
    batch = batch or _batch(cfg)
    accum = cfg.train.gradient_accumulation_steps
    counts: Counter[object] = Counter()
    for ds, folder in zip(cfg.datasets, info.folders, strict=False):
        counts.update(bucket_counts(ds, folder, cfg.model.arch))
    if any(f.sizes for f in info.folders):
        return max(1, trainer_steps(dict(counts), batch, accum))
    return max(1, math.ceil(sum(counts.values()) / (batch * accum)))


def run_epoch_steps(cfg: TrainingConfig, info: DatasetInfo) -> int:
    """Optimizer steps in one epoch of the run: all processes together share one epoch
    (``trainer.engine.run_length``)."""
    return max(1, math.ceil(steps_per_epoch(cfg, info) / cfg.runtime.num_processes))


@dataclass(frozen=True)
class EpochCount:
    """One epoch of the run as the advisor counts it: every image found, those held out for
    validation (never trained on), and the optimizer steps the rest make. The wizard's Dataset
    card, the Training step and the Datasets page all show this one count."""

    images: int
    held_out: int
    steps: int

    @property
    def trained(self) -> int:
        return self.images - self.held_out


def epoch_count(cfg: TrainingConfig, info: DatasetInfo) -> EpochCount:
    """The images, the held-out ones (``held_out_counts``) and ``run_epoch_steps``."""
    held_out = sum(held_out_counts(cfg, info).values())
    return EpochCount(info.total_images, held_out, run_epoch_steps(cfg, info))


def run_steps(cfg: TrainingConfig, info: DatasetInfo | None) -> int | None:
    """The optimizer steps the run will train, as the trainer resolves them at its start:
    ``train.epochs`` x steps per epoch when epochs are set (they win over steps), else
    ``train.steps``. None while unknown: steps still 'auto', or epochs without the images."""
    epochs, steps = cfg.train.epochs, cfg.train.steps
    if epochs is None:
        return steps if isinstance(steps, int) else None
    if info is None or not info.folders:
        return None
    return epochs * run_epoch_steps(cfg, info)


def repeats_per_image(cfg: TrainingConfig, info: DatasetInfo, steps: int | None = None) -> float:
    """How many times each training image is seen over the run (the quantity people tune)."""
    steps = steps if steps is not None else run_steps(cfg, info)
    trained = training_info(cfg, info)
    if not training_images(cfg, trained) or not steps:
        return 0.0
    epochs = steps / steps_per_epoch(cfg, info)  # which leaves the held-out images out itself
    repeats = _mean_repeats(cfg, trained)
    return epochs * repeats


def steps_for_repeats(
    cfg: TrainingConfig, info: DatasetInfo, target: float, batch: int | None = None
) -> int:
    """Steps that show each training image about ``target`` times (whole epochs, bucket-aware)."""
    repeats = _mean_repeats(cfg, training_info(cfg, info)) or 1.0
    epochs = max(1, round(target / repeats))
    return epochs * steps_per_epoch(cfg, info, batch)


def _mean_repeats(cfg: TrainingConfig, info: DatasetInfo) -> float:
    pairs = [
        (f.images, ds.num_repeats * len(ds.resolution))
        for ds, f in zip(cfg.datasets, info.folders, strict=False)
        if not ds.is_reg
    ]
    images = sum(n for n, _ in pairs)
    return sum(n * r for n, r in pairs) / images if images else 0.0


def _batch(cfg: TrainingConfig) -> int:
    batch = cfg.train.batch_size
    if cfg.train.auto_scale_batch_size:
        return cfg.train.max_batch_size
    return batch if isinstance(batch, int) else 1


# ------------------------------------------------------------------------------------ scanning
def scan_folders(cfg: TrainingConfig, root: Path | None = None) -> DatasetInfo | None:
    """Scan every dataset folder that exists on disk (via ``trainer.data.scanning.scan_dataset``).

    Relative folders are read from ``root`` (default: the working directory, as the trainer
    does). Returns None when a folder cannot be read (e.g. a config written for another machine)
    or is a built-in demo reference.
    """
    if any(ds.folder_path.startswith("demo:") for ds in cfg.datasets):
        return None
    paths = [Path(ds.folder_path).expanduser() for ds in cfg.datasets]
    paths = [root / p if root is not None and not p.is_absolute() else p for p in paths]
    if not all(p.is_dir() for p in paths):
        return None
    from trainer.data.scanning import DatasetError, scan_dataset  # PIL: only when scanning

    folders = []
    for ds, path in zip(cfg.datasets, paths, strict=True):
        try:
            scan = scan_dataset(ds, path)
        except DatasetError as err:
            folders.append(FolderInfo(0, skipped=((str(path), str(err)),), folder=str(path)))
            continue
        folders.append(folder_info(scan))
    return DatasetInfo(tuple(folders), validation=_scan_validation_folder(cfg, root))


def _scan_validation_folder(cfg: TrainingConfig, root: Path | None) -> FolderInfo | None:
    """``validation.folder_path`` scanned like the first subject dataset (None when unset)."""
    named = cfg.validation.folder_path
    subjects = [ds for ds in cfg.datasets if not ds.is_reg]
    if not named or not subjects:
        return None
    path = Path(named).expanduser()
    path = root / path if root is not None and not path.is_absolute() else path
    if not path.is_dir():
        return FolderInfo(0, folder=str(path.absolute()), missing=True)
    from trainer.data.scanning import DatasetError, scan_dataset  # PIL: only when scanning

    try:
        scan = scan_dataset(subjects[0].model_copy(update={"folder_path": named}), path)
    except DatasetError as err:
        return FolderInfo(0, skipped=((str(path), str(err)),), folder=str(path))
    return folder_info(scan)


# Words that already mean something to the model: a trigger word made of one is mixed with it.
_COMMON = (
    "man woman girl boy person people dog cat style art photo painting anime face car house "
    "cute beautiful"
)
COMMON_WORDS = frozenset(_COMMON.split())
# Words captions share for reasons other than a trigger ("a photo of ..., ... background"). A
# class word not listed ("corgi") passes for a trigger word unless the config names it its class.
_COMMON_CAPTION_WORDS = (
    "a an the of on in at with and or to by for from is are this that picture image portrait "
    "drawing render close up view front side shot background white black wearing standing "
    "sitting smiling looking holding hair shirt light"
)
_CAPTION_WORDS = COMMON_WORDS | frozenset(_COMMON_CAPTION_WORDS.split())
_MIN_CAPTIONS = 3  # with fewer captions, every word of the subject is "shared"
_MAX_TRIGGER_LENGTH = 8  # rare tokens are short ('sks', 'ohwx', 'zwx'); long words are subjects


def _words(caption: str) -> set[str]:
    return {w.strip(".,;:!?()[]\"'").lower() for w in caption.split()} - {""}


def caption_trigger(captions: Iterable[str]) -> str | None:
    """The one rare token that every caption contains, if there is exactly one such word."""
    captions = list(captions)
    if len(captions) < _MIN_CAPTIONS:
        return None
    shared: set[str] | None = None
    for caption in captions:
        words = _words(caption)
        shared = words if shared is None else shared & words
        if not shared:
            return None
    found = {
        w for w in shared or () if w and w not in _CAPTION_WORDS and len(w) <= _MAX_TRIGGER_LENGTH
    }
    return found.pop() if len(found) == 1 else None


# A word in this share of the captions is the captions' own trigger: 'sks' in 12 of 12 demo
# captions. Not all of them, so a few captions written without it do not hide it.
_SHARED_SHARE = 0.8
_FEW_WITH_TRIGGER = 0.2  # under this share of the captions, the trigger is hardly in them


@dataclass(frozen=True)
class TriggerClash:
    """Captions written for another trigger word than the configured one: ``with_trigger`` of
    ``captions`` name the configured trigger, ``with_shared`` name ``shared`` instead."""

    captions: int
    with_trigger: int
    shared: str
    with_shared: int

    def message(self, trigger: str) -> str:
        """What it means for a run with ``trigger``, the counts first: "none of the 12 captions
        contains 'ohwx'; 12 of 12 contain 'sks'. The trainer puts 'ohwx' in front..."."""
        n, k, word = self.captions, self.with_trigger, self.shared
        if k:
            some = f"only {k} of the {n} captions contain" + ("s" if k == 1 else "")
        else:
            some = f"none of the {n} captions contains"
        return (
            f"{some} '{trigger}'; {self.with_shared} of {n} contain '{word}'. The trainer puts "
            f"'{trigger}' in front of each caption that lacks it, so the LoRA would learn "
            f"'{trigger}' next to '{word}' in every caption, and a prompt with '{trigger}' alone "
            f"would bring back only part of it. Use '{word}' as the trigger word, or write "
            f"'{trigger}' into the captions (Datasets page: Captions, Insert trigger)"
        )


def mentions(caption: str, word: str) -> bool:
    """Whether the trainer sees ``word`` in ``caption`` (``trainer.data.captions``): as a whole
    word, any case, or through the ``[trigger]`` placeholder it fills in."""
    if "[trigger]" in caption.lower():
        return True
    return re.search(rf"(?<!\w){re.escape(word)}(?!\w)", caption, re.IGNORECASE) is not None


def shared_token(captions: Iterable[str]) -> tuple[str, int] | None:
    """The rare token most captions share, with the number of captions holding it: a word in at
    least 80% of them (3 or more), not a common caption word ('photo', 'background'...), at most
    8 characters, letters and digits only. None when there is none, or two tie for the most."""
    sets = [_words(c) for c in captions]
    if len(sets) < _MIN_CAPTIONS:
        return None
    counts = Counter(w for words in sets for w in words)
    least = math.ceil(_SHARED_SHARE * len(sets))
    found = [
        (n, w)
        for w, n in counts.items()
        if n >= least and w.isalnum() and w not in _CAPTION_WORDS and len(w) <= _MAX_TRIGGER_LENGTH
    ]
    found.sort(reverse=True)
    if not found or (len(found) > 1 and found[0][0] == found[1][0]):
        return None
    return found[0][1], found[0][0]


def trigger_clash(captions: Iterable[str], trigger: str) -> TriggerClash | None:
    """The captions' own trigger when it is not ``trigger``: fewer than 20% of the captions
    name ``trigger`` (as the trainer reads it, ``mentions``) while another rare token is in most
    of them (``shared_token``). None when the captions agree with ``trigger``, or share no token."""
    captions = list(captions)
    with_trigger = sum(mentions(c, trigger) for c in captions)
    if not captions or with_trigger >= _FEW_WITH_TRIGGER * len(captions):
        return None
    shared = shared_token(captions)
    if shared is None or shared[0] in _words(trigger):  # 'ohwx' of a trigger 'ohwx man'
        return None
    return TriggerClash(len(captions), with_trigger, *shared)


def folder_info(scan: DatasetScan) -> FolderInfo:
    """A ``FolderInfo`` from a ``trainer.data.scanning.DatasetScan``."""
    images = scan.images
    return FolderInfo(
        images=len(images),
        sizes=tuple((i.width, i.height) for i in images),
        captioned=sum(i.caption_from_file for i in images),
        unique_captions=len({i.caption for i in images}),
        skipped=tuple(scan.skipped),
        notes=tuple(scan.notes),
        with_alpha=sum(i.has_alpha for i in images),
        folder=str(scan.folder),
        caption_trigger=caption_trigger(i.caption for i in images if i.caption_from_file),
        captions=tuple(i.caption for i in images if i.caption_from_file),
    )
