"""The batches dataset: all scanned datasets as one torch Dataset whose batches share a bucket.

The path from a folder to a batch::

    scan = scan_dataset(ds, folder)           # verify files, read captions, list what is skipped
    check_enough([scan, ...], batch, accum)   # stop before training when one step cannot be filled
    data = BucketBatches(scans, batch_size=batch, seed=seed, size_multiple=8)
    for batch in data.loader(epoch, skip_batches=k):   # every batch shares one bucket
        batch["pixels"], batch["captions"], batch["masks"], ...

Also here: item keys and latent-cache modes (what a cached latent may stand for) and the
``DatasetReport`` the run logs.

Choices worth knowing:

- Randomness never depends on load order: every item's crop, flips, augmentations and caption come
  from a generator seeded by (seed, epoch, entry). Runs are reproducible with any number of loader
  workers, and a resumed run sees exactly the batches it would have seen.
- Sizes follow diffusers' SDXL convention: ``original_size`` and ``target_size`` are
  (height, width), ``crop_top_left`` is (top, left). Buckets are (width, height).
"""

from __future__ import annotations

import hashlib
import math
import random
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from trainer.config.sections.datasets import DatasetConfig
from trainer.data.buckets import Bucket, batches_per_epoch, bucket_for, floor_to, make_buckets
from trainer.data.captions import build_caption
from trainer.data.scanning import DatasetScan, ImageInfo
from trainer.data.transforms import Plan, plan_transform, render

# Part of every item key: bump it when the same file and settings would give different pixels.
PIPELINE_VERSION = "2"

ItemKey = tuple[int, int]  # (epoch, entry index): what the batch sampler hands the dataset
FLIPS = ("flip_x", "flip_y")  # the only random changes a cached latent can stand for


# ------------------------------------------------------------------------------ latent caching


def latent_cache_mode(ds: DatasetConfig) -> tuple[str, str]:
    """How this dataset's latents can be cached: (mode, the sentence the run log shows).

    Modes: "cached" (one latent per image and size), "per_variant" (flips are the only random
    change: each flipped / unflipped copy is cached under its own key), "off" (random crops,
    zooms or colour / blur / rotation augmentations give new pixels every time, so a cached
    latent would be stale: encoded live each step) and "not_requested" (caching is off).
    """
    if not (ds.cache_latents or ds.cache_latents_to_disk):
        return "not_requested", ""
    changing = [f"augmentation {aug.type}" for aug in ds.augmentations if aug.type not in FLIPS]
    changing += [name for name in ("random_crop", "random_scale") if getattr(ds, name)]
    if changing:
        return "off", (
            f"latent caching turned OFF for this dataset: {', '.join(dict.fromkeys(changing))} "
            "change the pixels every time an image is used, so every latent is encoded live "
            "(slower steps)"
        )
    flips = [name for name in FLIPS if getattr(ds, name)]
    flips += [f"augmentation {aug.type}" for aug in ds.augmentations if aug.type in FLIPS]
    if flips:
        return "per_variant", (
            f"latents cached per variant: {', '.join(dict.fromkeys(flips))} give each image "
            "flipped and unflipped copies, each cached under its own key (up to "
            f"{2 ** len({f.rsplit(' ', 1)[-1] for f in flips})}x the cache size)"
        )
    return "cached", ""


def item_key(content_hash: str, plan: Plan) -> str:
    """Stable id of an item's pixels: file content + bucket + crop/flip/augmentation variant."""
    return f"{content_hash}|v{PIPELINE_VERSION}|{plan.variant}"


# -------------------------------------------------------------------------------------- batches
@dataclass(frozen=True)
class Entry:
    """One use of one image per epoch: image × resolution × repeat, with its bucket."""

    dataset: int
    image: int
    resolution: int
    repeat: int
    bucket: Bucket


class BucketBatches(Dataset):
    """All datasets as one torch Dataset, batched so that each batch shares one bucket.

    Items are addressed by ``(epoch, entry index)``; ``batches_for_epoch(epoch)`` lists the
    batches of keys (seeded shuffle, deterministic), which a DataLoader takes as its
    ``batch_sampler`` — ``loader()`` builds that DataLoader. To resume, skip the batches already
    done: ``resume_position(batches_done)`` gives (epoch, batches to skip).
    """

    def __init__(
        self,
        scans: Sequence[DatasetScan],
        *,
        batch_size: int,
        seed: int = 0,
        size_multiple: int = 8,
        want_unaugmented: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.scans = list(scans)
        self.batch_size = batch_size
        self.seed = seed
        self.size_multiple = size_multiple
        self.want_unaugmented = want_unaugmented
        self.entries = self._build_entries()
        # Item keys whose latents the trainer has cached: those items come without pixels.
        self.known_latents: set[str] = set()

    def _build_entries(self) -> list[Entry]:
        entries: list[Entry] = []
        for d, scan in enumerate(self.scans):
            ds = scan.config
            for resolution in ds.resolution:
                side = floor_to(resolution, self.size_multiple)
                buckets = make_buckets(side, self.size_multiple)
                for i, info in enumerate(scan.images):
                    bucket = bucket_for(
                        info.width,
                        info.height,
                        side,
                        self.size_multiple,
                        enable_bucketing=ds.enable_bucketing,
                        no_upscale=ds.bucket_no_upscale,
                        buckets=buckets,
                    )
                    entries += [Entry(d, i, side, r, bucket) for r in range(ds.num_repeats)]
        return entries

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def bucket_counts(self) -> dict[Bucket, int]:
        """Entries per bucket in one epoch (repeats included), smallest aspect ratio first."""
        counts = Counter(entry.bucket for entry in self.entries)
        return dict(sorted(counts.items(), key=lambda kv: (kv[0][0] / kv[0][1], kv[0])))

    @property
    def batches_per_epoch(self) -> int:
        return batches_per_epoch(self.bucket_counts, self.batch_size)

    def steps_per_epoch(self, grad_accum: int = 1) -> int:
        return math.ceil(self.batches_per_epoch / grad_accum)

    def resume_position(self, batches_done: int) -> tuple[int, int]:
        """(epoch, batches to skip in it) after ``batches_done`` batches since the start."""
        return divmod(batches_done, self.batches_per_epoch)

    def batches_for_epoch(self, epoch: int) -> list[list[ItemKey]]:
        """This epoch's batches in order; the same for the same seed and epoch, every time."""
        rng = random.Random(derive_seed(self.seed, "batches", epoch))
        by_bucket: dict[Bucket, list[int]] = {}
        for index, entry in enumerate(self.entries):
            by_bucket.setdefault(entry.bucket, []).append(index)
        batches: list[list[int]] = []
        for bucket in sorted(by_bucket):
            indices = by_bucket[bucket]
            rng.shuffle(indices)
            batches += [
                indices[i : i + self.batch_size] for i in range(0, len(indices), self.batch_size)
            ]
        rng.shuffle(batches)
        return [[(epoch, index) for index in batch] for batch in batches]

    def loader(
        self, epoch: int, *, skip_batches: int = 0, num_workers: int = 0, pin_memory: bool = False
    ) -> DataLoader:
        """A DataLoader over this epoch's batches, starting after ``skip_batches`` of them."""
        batches = self.batches_for_epoch(epoch)[skip_batches:]
        return DataLoader(
            self,
            batch_sampler=ListBatchSampler(batches),
            collate_fn=collate_batch,
            num_workers=num_workers,
            pin_memory=pin_memory,
        )

    def _rng(self, purpose: str, epoch: int, index: int) -> random.Random:
        return random.Random(derive_seed(self.seed, purpose, epoch, index))

    def _locate(self, key: ItemKey | int) -> tuple[int, int, Entry, DatasetScan, ImageInfo]:
        epoch, index = (0, key) if isinstance(key, int) else key
        entry = self.entries[index]
        scan = self.scans[entry.dataset]
        return epoch, index, entry, scan, scan.images[entry.image]

    def describe(self, key: ItemKey | int) -> dict[str, Any]:
        """Everything about an item except its pixels (cheap: no image is decoded).

        The trainer can look its ``key`` up in a latent cache before paying for ``self[key]``.
        """
        epoch, index, entry, scan, info = self._locate(key)
        ds = scan.config
        plan = plan_transform(
            info.width, info.height, entry.bucket, ds, self._rng("plan", epoch, index)
        )
        caption_rng = self._rng("caption", epoch, index)
        bucket_w, bucket_h = entry.bucket
        return {
            "caption": build_caption(info.caption, ds, caption_rng, trigger=ds.trigger_word),
            "original_size": (info.height, info.width),
            "crop_top_left": (plan.crop_top, plan.crop_left),
            "target_size": (bucket_h, bucket_w),
            "bucket": entry.bucket,
            "loss_multiplier": ds.loss_multiplier,
            "is_reg": ds.is_reg,
            "key": item_key(info.content_hash, plan),
            # Same key => same pixels only when nothing but flips is random.
            "cacheable": latent_cache_mode(ds)[0] != "off",
            "path": str(info.path),
            "dataset_index": entry.dataset,
            "resolution": entry.resolution,
            "plan": plan,
            "source": key,
        }

    def __getitem__(self, key: ItemKey | int) -> dict[str, Any]:
        item = self.describe(key)
        *_, scan, info = self._locate(key)
        if item["key"] in self.known_latents and not self.needs_pixels(scan.config):
            item.update(pixels=None, mask=None, unaugmented=None)  # no file read: latent cached
            return item
        rendered = render(info, item["plan"], scan.config, want_unaugmented=self.want_unaugmented)
        item.update(pixels=rendered.pixels, mask=rendered.mask, unaugmented=rendered.unaugmented)
        return item

    def needs_pixels(self, ds: DatasetConfig) -> bool:
        """Whether a step needs this dataset's images even with their latents cached: for masks
        or the copy before augmentations."""
        return self.want_unaugmented or bool(ds.mask_path) or ds.alpha_mask


class ListBatchSampler(Sampler[list[ItemKey]]):
    """Hands a DataLoader a precomputed list of batches."""

    def __init__(self, batches: list[list[ItemKey]]) -> None:
        self.batches = batches

    def __iter__(self) -> Iterator[list[ItemKey]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def collate_batch(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack a batch. Missing masks become all-ones and a missing unaugmented copy the pixels,
    so batches mixing datasets with and without them still stack. Items handed out without
    pixels (their latents cached) are left out of ``pixels``; ``rendered`` says which are in."""
    rendered = [item["pixels"] is not None for item in items]
    pixels = (
        torch.stack([item["pixels"] for item in items if item["pixels"] is not None])
        if any(rendered)
        else None
    )
    masks = None
    if any(item["mask"] is not None for item in items):
        ones = torch.ones_like(items[rendered.index(True)]["pixels"][:1])
        masks = torch.stack([item["mask"] if item["mask"] is not None else ones for item in items])
    unaugmented = None
    if any(item["unaugmented"] is not None for item in items):
        unaugmented = torch.stack(
            [
                item["unaugmented"] if item["unaugmented"] is not None else item["pixels"]
                for item in items
            ]
        )
    return {
        "pixels": pixels,
        "rendered": rendered,
        "sources": [item["source"] for item in items],
        "masks": masks,
        "unaugmented": unaugmented,
        "captions": [item["caption"] for item in items],
        "original_sizes": [item["original_size"] for item in items],
        "crop_top_lefts": [item["crop_top_left"] for item in items],
        "target_sizes": [item["target_size"] for item in items],
        "loss_multiplier": torch.tensor(
            [item["loss_multiplier"] for item in items], dtype=torch.float32
        ),
        "is_reg": torch.tensor([item["is_reg"] for item in items], dtype=torch.bool),
        "keys": [item["key"] for item in items],
        "cacheable": [item["cacheable"] for item in items],
        "paths": [item["path"] for item in items],
        "dataset_indices": [item["dataset_index"] for item in items],
    }


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any parts; stable across processes (unlike the salted hash())."""
    digest = hashlib.sha256(repr(parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") >> 1


# --------------------------------------------------------------------------------------- report
@dataclass
class DatasetReport:
    """What the run trains on, for the log and MLflow."""

    datasets: list[dict[str, Any]]
    skipped: list[tuple[str, str]]  # (folder/file, reason)
    notes: list[tuple[str, str]]
    buckets: dict[str, int]  # "WxH" -> entries per epoch
    batches_per_epoch: int
    steps_per_epoch: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "datasets": self.datasets,
            "skipped": [{"file": name, "reason": reason} for name, reason in self.skipped],
            "notes": [{"file": name, "note": note} for name, note in self.notes],
            "buckets": dict(self.buckets),
            "batches_per_epoch": self.batches_per_epoch,
            "steps_per_epoch": self.steps_per_epoch,
        }

    def summary(self) -> str:
        """A few lines for the run's log."""
        lines = [
            f"{d['folder']}: {d['images']} images ({d['captioned']} with caption files), "
            f"{d['skipped']} skipped, ×{d['repeats']} repeats, resolutions {d['resolutions']}"
            + (" [regularisation]" if d["is_reg"] else "")
            for d in self.datasets
        ]
        lines.append("buckets: " + ", ".join(f"{k} ({n})" for k, n in self.buckets.items()))
        lines.append(f"{self.batches_per_epoch} batches = {self.steps_per_epoch} steps per epoch")
        lines += [f"skipped {name}: {reason}" for name, reason in self.skipped]
        lines += [f"note {name}: {note}" for name, note in self.notes]
        lines += [f"dataset {i} ({folder}): {note}" for i, folder, _, note in self.cache_notes()]
        return "\n".join(lines)

    def cache_notes(self) -> list[tuple[int, str, str, str]]:
        """(dataset index, folder, cache mode, sentence) where caching was changed or split."""
        return [
            (i, d["folder"], d["latent_cache"], d["latent_cache_note"])
            for i, d in enumerate(self.datasets)
            if d.get("latent_cache_note")
        ]


def build_report(data: BucketBatches, grad_accum: int = 1) -> DatasetReport:
    datasets = [
        {
            "folder": str(scan.folder),
            "images": len(scan.images),
            "captioned": sum(info.caption_from_file for info in scan.images),
            "skipped": len(scan.skipped),
            "repeats": scan.config.num_repeats,
            "resolutions": list(scan.config.resolution),
            "items_per_epoch": scan.items_per_epoch,
            "is_reg": scan.config.is_reg,
            "loss_multiplier": scan.config.loss_multiplier,
            "latent_cache": latent_cache_mode(scan.config)[0],
            "latent_cache_note": latent_cache_mode(scan.config)[1],
        }
        for scan in data.scans
    ]
    return DatasetReport(
        datasets=datasets,
        skipped=[(f"{s.folder.name}/{n}", r) for s in data.scans for n, r in s.skipped],
        notes=[(f"{s.folder.name}/{n}", r) for s in data.scans for n, r in s.notes],
        buckets={f"{w}x{h}": n for (w, h), n in data.bucket_counts.items()},
        batches_per_epoch=data.batches_per_epoch,
        steps_per_epoch=data.steps_per_epoch(grad_accum),
    )
