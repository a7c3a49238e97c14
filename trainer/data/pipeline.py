"""Training data: scan a folder, caption, bucket, transform and batch the images.

The path from a folder to a batch::

    scan = scan_dataset(ds, folder)           # verify files, read captions, list what is skipped
    check_enough([scan, ...], batch, accum)   # stop before training when one step cannot be filled
    data = BucketBatches(scans, batch_size=batch, seed=seed, size_multiple=8)
    for batch in data.loader(epoch, skip_batches=k):   # every batch shares one bucket
        batch["pixels"], batch["captions"], batch["masks"], ...

Choices worth knowing:

- Scanning is NOT recursive: only files directly in the folder are read. Sub-folders are named in
  the "no images" error, because kohya-style ``10_name`` sub-folders are a common layout mistake.
  Hidden files (``.name``) are ignored silently.
- Every image is decoded once during the scan (``verify()`` and then a full ``load()``), so corrupt,
  truncated, zero-byte and oversize files are skipped up front and reported, never met mid-run.
- Randomness never depends on load order: every item's crop, flips, augmentations and caption come
  from a generator seeded by (seed, epoch, entry). Runs are reproducible with any number of loader
  workers, and a resumed run sees exactly the batches it would have seen.
- Sizes follow diffusers' SDXL convention: ``original_size`` and ``target_size`` are
  (height, width), ``crop_top_left`` is (top, left). Buckets are (width, height).
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import random
import re
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torch.utils.data import DataLoader, Dataset, Sampler

from trainer.config.schema import Augmentation, DatasetConfig

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
# Image formats people drop into datasets that we do not train on: named in the skip reason.
OTHER_IMAGE_EXTENSIONS = (".gif", ".tif", ".tiff", ".heic", ".heif", ".avif", ".jxl", ".psd")
MAX_PIXELS = 40_000_000  # bigger images are almost always mistakes and cost seconds per load
# Part of every item key: bump it when the same file and settings would give different pixels.
PIPELINE_VERSION = "1"
TRIGGER_PLACEHOLDER = "[trigger]"
MAX_RANDOM_ZOOM = 0.25  # random_scale zooms in by up to 25 %
MAX_ROTATION_DEGREES = 30.0  # rotate strength 1.0 = ±30°
MAX_BLUR_SHARE = 0.02  # blur strength 1.0 = sigma of 2 % of the shorter side

Bucket = tuple[int, int]  # (width, height) in pixels
ItemKey = tuple[int, int]  # (epoch, entry index): what the batch sampler hands the dataset


class DatasetError(ValueError):
    """A data problem that stops a run before training; the message names the folder and fix."""


# ------------------------------------------------------------------------------------- scanning
@dataclass(frozen=True)
class ImageInfo:
    """One usable image found by the scan."""

    path: Path
    caption: str  # raw: from the caption file or the default, before trigger/shuffle/dropout
    width: int  # after EXIF orientation, i.e. as the image is trained
    height: int
    content_hash: str  # sha256 of the file's bytes: identifies the pixels for caching
    caption_from_file: bool
    mask_path: Path | None = None
    has_alpha: bool = False


@dataclass
class DatasetScan:
    """What one dataset folder holds: usable images, and every file left out with the reason."""

    config: DatasetConfig
    folder: Path
    images: list[ImageInfo]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file name, reason)
    notes: list[tuple[str, str]] = field(default_factory=list)  # usable, but worth knowing
    files_seen: int = 0

    @property
    def items_per_epoch(self) -> int:
        return len(self.images) * self.config.num_repeats * len(self.config.resolution)


def scan_dataset(ds: DatasetConfig, folder: Path) -> DatasetScan:
    """List, verify and caption the images directly in ``folder`` (not in sub-folders).

    Raises DatasetError when the folder is missing or empty, holds no usable image, or when two
    images share a name (their captions would be ambiguous).
    """
    folder = Path(folder)
    _require_folder(folder, ds.folder_path, "dataset folder", "folder_path")
    files, subfolders = _list_folder(folder)
    caption_ext = "." + ds.caption_ext.lstrip(".").lower()
    candidates, skipped = _sort_files(files, caption_ext)
    _refuse_duplicate_stems(folder, candidates)
    masks = _mask_index(ds)
    captions = {p.stem: p for p in files if p.suffix.lower() == caption_ext}
    image_stems = {p.stem for p in candidates}
    skipped += [
        (p.name, "caption file with no image of the same name")
        for p in captions.values()
        if p.stem not in image_stems
    ]
    scan = DatasetScan(ds, folder, [], skipped, [], files_seen=len(files))
    for path, result in zip(candidates, _inspect_all(candidates, masks, ds), strict=True):
        if isinstance(result, str):
            scan.skipped.append((path.name, result))
            continue
        caption, from_file, note = _read_caption(captions.get(path.stem), ds.default_caption)
        if note:
            scan.notes.append((captions[path.stem].name, note))
        if ds.alpha_mask and not ds.mask_path and not result.has_alpha:
            scan.notes.append((path.name, "no transparency: trained without a mask"))
        scan.images.append(replace(result, caption=caption, caption_from_file=from_file))
    scan.skipped.sort()
    if not scan.images:
        raise DatasetError(_no_images_message(folder, files, candidates, scan.skipped, subfolders))
    return scan


def _require_folder(folder: Path, configured: str, what: str, setting: str) -> None:
    if not folder.exists():
        raise DatasetError(
            f"{what} {folder} does not exist — fix {setting} ({configured!r}) or create the folder"
        )
    if not folder.is_dir():
        raise DatasetError(f"{what} {folder} is a file, not a folder — point {setting} at a folder")


def _list_folder(folder: Path) -> tuple[list[Path], list[Path]]:
    """Visible files and sub-folders directly in ``folder``, sorted by name."""
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    return [p for p in entries if p.is_file()], [p for p in entries if p.is_dir()]


def _sort_files(files: list[Path], caption_ext: str) -> tuple[list[Path], list[tuple[str, str]]]:
    """Split into image candidates and skipped files; caption files are neither."""
    candidates: list[Path] = []
    skipped: list[tuple[str, str]] = []
    for path in files:
        ext = path.suffix.lower()
        if ext in IMAGE_EXTENSIONS:
            candidates.append(path)
        elif ext == caption_ext:
            continue  # matched with its image later
        elif ext in OTHER_IMAGE_EXTENSIONS:
            skipped.append((path.name, f"unsupported image format {ext} — convert to png or jpg"))
        else:
            skipped.append((path.name, "not an image file"))
    return candidates, skipped


def _refuse_duplicate_stems(folder: Path, candidates: list[Path]) -> None:
    by_stem: dict[str, list[str]] = {}
    for path in candidates:
        by_stem.setdefault(path.stem, []).append(path.name)
    clashes = [names for names in by_stem.values() if len(names) > 1]
    if clashes:
        listed = "; ".join(" + ".join(names) for names in clashes[:5])
        more = f" (and {len(clashes) - 5} more)" if len(clashes) > 5 else ""
        raise DatasetError(
            f"{len(clashes)} name(s) in {folder} are used by more than one image, so their "
            f"captions would be ambiguous: {listed}{more} — rename or remove one of each"
        )


def _mask_index(ds: DatasetConfig) -> dict[str, Path] | None:
    """Mask files by stem when ``mask_path`` is set (first by name when a stem repeats)."""
    if not ds.mask_path:
        return None
    folder = Path(ds.mask_path)
    _require_folder(folder, ds.mask_path, "mask folder", "mask_path")
    index: dict[str, Path] = {}
    for path in _list_folder(folder)[0]:
        if path.suffix.lower() in IMAGE_EXTENSIONS:
            index.setdefault(path.stem, path)
    return index


def _inspect_all(
    candidates: list[Path], masks: dict[str, Path] | None, ds: DatasetConfig
) -> list[ImageInfo | str]:
    # Decoding dominates the scan and PIL releases the GIL while decoding: threads help.
    workers = max(1, min(8, os.cpu_count() or 1, len(candidates)))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda p: _inspect_image(p, masks, ds), candidates))


def _inspect_image(path: Path, masks: dict[str, Path] | None, ds: DatasetConfig) -> ImageInfo | str:
    """The image's details, or why it cannot be trained on."""
    try:
        data = path.read_bytes()
    except OSError as err:
        return f"cannot be read ({err.strerror or err})"
    problem = _decode_problem(data)
    if isinstance(problem, str):
        return problem
    width, height, has_alpha = problem
    mask_path = None
    if masks is not None:
        mask_path = masks.get(path.stem)
        if mask_path is None:
            return f"no mask named {path.stem}.* in {ds.mask_path}"
        mask_problem = _decode_problem(_read_or_empty(mask_path))
        if isinstance(mask_problem, str):
            return f"its mask {mask_path.name} is unusable: {mask_problem}"
    content_hash = hashlib.sha256(data).hexdigest()
    return ImageInfo(path, "", width, height, content_hash, False, mask_path, has_alpha)


def _read_or_empty(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""  # reported like an empty file


def _decode_problem(data: bytes) -> tuple[int, int, bool] | str:
    """(width, height, has_alpha) of an image that fully decodes, else the reason it does not."""
    if not data:
        return "empty file (0 bytes)"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                image.verify()  # structure and checksums, without decoding
            with Image.open(io.BytesIO(data)) as image:
                width, height = _oriented_size(image)
                if width * height > MAX_PIXELS:
                    return _too_large(width, height)
                image.load()  # a real decode: catches truncated pixel data verify() misses
                return width, height, _alpha_channel(image) is not None
    except Image.DecompressionBombError:
        return "too large to open safely (over 170 megapixels) — downscale it"
    except Image.UnidentifiedImageError:
        return "not an image (its contents are no known image format)"
    except Exception as err:  # PIL raises many types on malformed data; all mean "corrupt"
        return f"corrupt or truncated image ({err})"


def _too_large(width: int, height: int) -> str:
    megapixels = width * height / 1e6
    return (
        f"too large: {width}×{height} = {megapixels:.1f} megapixels (limit "
        f"{MAX_PIXELS / 1e6:.0f}) — downscale it"
    )


def _oriented_size(image: Image.Image) -> tuple[int, int]:
    # Phone photos store rotation in EXIF; buckets must use the size as the image is shown.
    orientation = image.getexif().get(0x0112, 1)
    width, height = image.size
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def _read_caption(path: Path | None, default: str) -> tuple[str, bool, str | None]:
    """(caption, read from a file?, note). Empty files and unreadable text fall back to default."""
    if path is None:
        return default, False, None
    try:
        text = path.read_bytes().decode("utf-8-sig")  # -sig: a BOM must not reach the caption
    except UnicodeDecodeError:
        note = "caption is not UTF-8 text: default caption used — re-save as UTF-8"
        return default, False, note
    except OSError as err:
        return default, False, f"caption cannot be read ({err.strerror or err}): default used"
    text = " ".join(text.split())
    return (text, True, None) if text else (default, False, None)


def _no_images_message(
    folder: Path,
    files: list[Path],
    candidates: list[Path],
    skipped: list[tuple[str, str]],
    subfolders: list[Path],
) -> str:
    hint = ""
    if subfolders:
        hint = (
            f"; images in sub-folders are not read ({_names([p.name + '/' for p in subfolders])})"
            " — point folder_path at the folder that holds the images"
        )
    if not files:
        where = "no files directly in the folder" if subfolders else "the folder is empty"
        return (
            f"no images found in {folder}: {where}{hint} — add images "
            f"({', '.join(e[1:] for e in IMAGE_EXTENSIONS)}) with a caption file of the same name"
        )
    if not candidates:
        return (
            f"no images found in {folder}: {len(files)} files, none of them images "
            f"({_names([p.name for p in files])}){hint} — add png, jpg, jpeg, webp or bmp images"
        )
    image_names = {p.name for p in candidates}
    unusable = [f"{name}: {reason}" for name, reason in skipped if name in image_names]
    return (
        f"no usable images in {folder}: {len(candidates)} image files, none usable "
        f"({_names(unusable, limit=4)}) — replace or re-export them"
    )


def _names(names: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def check_enough(scans: Sequence[DatasetScan], batch: int, accum: int) -> None:
    """Refuse to start when one epoch holds fewer items than one optimizer step consumes."""
    needed = batch * accum
    total = sum(scan.items_per_epoch for scan in scans)
    if total >= needed:
        return
    parts = [
        f"{scan.folder}: {len(scan.images)} usable images × {scan.config.num_repeats} repeats"
        + (
            f" × {len(scan.config.resolution)} resolutions"
            if len(scan.config.resolution) > 1
            else ""
        )
        for scan in scans
    ]
    raise DatasetError(
        f"not enough images for one training step: {'; '.join(parts) or 'no datasets'} = {total} "
        f"per epoch, but batch_size {batch} × gradient_accumulation_steps {accum} needs {needed} "
        "— add images, raise num_repeats, or lower batch_size / gradient_accumulation_steps"
    )


# ------------------------------------------------------------------------------------- captions
def build_caption(raw: str, ds: DatasetConfig, rng: random.Random, *, trigger: str | None) -> str:
    """The caption one training step sees.

    In order: caption dropout (whole caption -> ""), ``[trigger]`` replaced, the trigger put in
    front when the caption lacks it, then the comma-separated tags after the first
    ``keep_tokens`` shuffled and/or dropped. ``keep_tokens`` counts the caption's own tags; a
    prepended trigger is kept in front of them. Tags that contain the trigger are never dropped
    by token dropout (it would teach the LoRA without its trigger).
    """
    if rng.random() < ds.caption_dropout_rate:
        return ""
    text = _fill_trigger(raw, trigger)
    tags = _split_tags(text)
    head, tail = tags[: ds.keep_tokens], tags[ds.keep_tokens :]
    if trigger and not _mentions(text, trigger):
        head = [trigger, *head]
    if ds.shuffle_tokens:
        rng.shuffle(tail)
    if ds.token_dropout_rate > 0:
        tail = [tag for tag in tail if _keep_tag(tag, trigger, ds.token_dropout_rate, rng)]
    return ", ".join(head + tail)


def _fill_trigger(text: str, trigger: str | None) -> str:
    pattern = re.compile(re.escape(TRIGGER_PLACEHOLDER), re.IGNORECASE)
    return pattern.sub(lambda _: trigger or "", text)


def _split_tags(text: str) -> list[str]:
    tags = (" ".join(tag.split()) for tag in text.split(","))
    return [tag for tag in tags if tag]


def _mentions(text: str, trigger: str) -> bool:
    # As a whole word, so a trigger "sks" is not "found" inside "tasks".
    return re.search(rf"(?<!\w){re.escape(trigger)}(?!\w)", text, re.IGNORECASE) is not None


def _keep_tag(tag: str, trigger: str | None, rate: float, rng: random.Random) -> bool:
    return bool(trigger and _mentions(tag, trigger)) or rng.random() >= rate


# -------------------------------------------------------------------------------------- buckets
def make_buckets(
    resolution: int, multiple: int, max_ratio: float = 2.0, *, step: int | None = None
) -> list[Bucket]:
    """Bucket sizes (width, height) with area ≈ resolution², sides multiples of ``multiple``.

    Widths grow from the square in ``step`` pixels (default: resolution/16 rounded to the
    multiple, e.g. 32 at 512 px) until the aspect ratio passes ``max_ratio``; each wide bucket
    has its tall mirror. A coarser step than ``multiple`` keeps buckets few, so batches fill.
    Sorted from tallest to widest.
    """
    side = _floor_to(resolution, multiple)
    step = step or max(multiple, _floor_to(side // 16, multiple))
    area = side * side
    found = {(side, side)}
    width = side + step
    while True:
        height = max(multiple, round(area / width / multiple) * multiple)
        if width / height > max_ratio + 1e-9:
            break
        found |= {(width, height), (height, width)}
        width += step
    return sorted(found, key=lambda bucket: bucket[0] / bucket[1])


def assign_bucket(width: int, height: int, buckets: Sequence[Bucket]) -> Bucket:
    """The bucket whose aspect ratio is closest to the image's (compared as log ratios)."""
    ratio = math.log(width / height)
    return min(buckets, key=lambda b: abs(math.log(b[0] / b[1]) - ratio))


def bucket_for(
    width: int,
    height: int,
    resolution: int,
    multiple: int,
    *,
    enable_bucketing: bool = True,
    no_upscale: bool = False,
    buckets: Sequence[Bucket] | None = None,
) -> Bucket:
    """The training size of one image at one resolution.

    Without bucketing everything is a ``resolution`` square (with ``no_upscale``, a smaller
    square when the image's short side is smaller). With ``no_upscale``, an image that would have
    to be enlarged to cover its bucket trains at its own size instead (same aspect ratio, area
    at most resolution², sides rounded down to the multiple).
    """
    side = _floor_to(resolution, multiple)
    if not enable_bucketing:
        if no_upscale:
            side = min(side, _floor_to(min(width, height), multiple))
        return (side, side)
    bucket = assign_bucket(width, height, buckets or make_buckets(side, multiple))
    if no_upscale and (bucket[0] > width or bucket[1] > height):
        return _own_size(width, height, side * side, multiple)
    return bucket


def _own_size(width: int, height: int, max_area: int, multiple: int) -> Bucket:
    scale = min(1.0, math.sqrt(max_area / (width * height)))
    return (_floor_to(width * scale, multiple), _floor_to(height * scale, multiple))


def _floor_to(value: float, multiple: int) -> int:
    return max(multiple, int(value) // multiple * multiple)


def batches_per_epoch(bucket_counts: Mapping[Any, int] | Iterable[int], batch_size: int) -> int:
    """Σ over buckets of ceil(items in bucket / batch): a batch never mixes buckets."""
    counts = bucket_counts.values() if isinstance(bucket_counts, Mapping) else bucket_counts
    return sum(math.ceil(count / batch_size) for count in counts if count > 0)


def steps_per_epoch(
    bucket_counts: Mapping[Any, int] | Iterable[int],
    batch_size: int,
    grad_accum: int = 1,
    repeats: int = 1,
) -> int:
    """Optimizer steps per epoch: Σ_buckets ceil(n × repeats / batch), then ceil(/ grad_accum).

    ``bucket_counts`` are images per bucket; pass ``repeats`` when they do not include repeats
    (BucketBatches' counts already do). The last step of an epoch may accumulate fewer batches.
    """
    counts = bucket_counts.values() if isinstance(bucket_counts, Mapping) else bucket_counts
    batches = batches_per_epoch([count * repeats for count in counts], batch_size)
    return math.ceil(batches / grad_accum)


# ----------------------------------------------------------------------------------- transforms
@dataclass(frozen=True)
class Plan:
    """Every random choice for one use of one image, drawn before any pixel is touched."""

    bucket: Bucket
    resized: tuple[int, int]  # (width, height) the image is resized to before cropping
    crop_left: int
    crop_top: int
    flip_x: bool
    flip_y: bool
    augmentations: tuple[tuple[str, tuple[float, ...]], ...] = ()  # (type, drawn params) applied

    @property
    def variant(self) -> str:
        """The geometric variant as text: part of the cache key."""
        (width, height), (rw, rh) = self.bucket, self.resized
        text = f"{width}x{height}<{rw}x{rh}+{self.crop_left},{self.crop_top}"
        text += f"|fx{int(self.flip_x)}fy{int(self.flip_y)}"
        if self.augmentations:
            text += "|" + ";".join(
                f"{k}{','.join(f'{v:.4f}' for v in p)}" for k, p in self.augmentations
            )
        return text


GEOMETRIC = ("rotate", "crop_scale", "flip_x", "flip_y")  # also moved in masks and unaugmented


def plan_transform(
    width: int, height: int, bucket: Bucket, ds: DatasetConfig, rng: random.Random
) -> Plan:
    """Draw the crop, flips and augmentations for an image of this size in this bucket."""
    bucket_w, bucket_h = bucket
    scale = max(bucket_w / width, bucket_h / height)
    if ds.random_scale:
        scale *= 1.0 + MAX_RANDOM_ZOOM * rng.random()
    resized = (max(bucket_w, round(width * scale)), max(bucket_h, round(height * scale)))
    left = _crop_offset(resized[0] - bucket_w, ds.random_crop, rng)
    top = _crop_offset(resized[1] - bucket_h, ds.random_crop, rng)
    flip_x = ds.flip_x and rng.random() < 0.5
    flip_y = ds.flip_y and rng.random() < 0.5
    drawn = (_draw_augmentation(aug, bucket, rng) for aug in ds.augmentations)
    augmentations = tuple(aug for aug in drawn if aug is not None)
    return Plan(bucket, resized, left, top, flip_x, flip_y, augmentations)


def _crop_offset(slack: int, random_crop: bool, rng: random.Random) -> int:
    return rng.randint(0, slack) if random_crop else slack // 2


def _draw_augmentation(
    aug: Augmentation, bucket: Bucket, rng: random.Random
) -> tuple[str, tuple[float, ...]] | None:
    if rng.random() >= aug.probability:
        return None
    strength = aug.strength
    if aug.type == "color_jitter":  # brightness, contrast, saturation factors
        return aug.type, tuple(1.0 + strength * rng.uniform(-1.0, 1.0) for _ in range(3))
    if aug.type == "blur":
        sigma = strength * MAX_BLUR_SHARE * min(bucket) * rng.uniform(0.5, 1.0)
        return aug.type, (sigma,)
    if aug.type == "rotate":
        return aug.type, (MAX_ROTATION_DEGREES * strength * rng.uniform(-1.0, 1.0),)
    if aug.type == "crop_scale":  # zoom factor, then where the zoomed window sits (0-1)
        return aug.type, (1.0 + strength * rng.random(), rng.random(), rng.random())
    return aug.type, ()  # flip_x / flip_y


@dataclass
class Rendered:
    pixels: torch.Tensor  # (3, H, W) in [-1, 1]
    mask: torch.Tensor | None  # (1, H, W) in [mask_min_value, 1]
    unaugmented: torch.Tensor | None  # (3, H, W) in [-1, 1]: same geometry, no colour changes


def render(
    info: ImageInfo, plan: Plan, ds: DatasetConfig, *, want_unaugmented: bool = False
) -> Rendered:
    """Load one image and apply a plan: resize to cover, crop, flips, augmentations.

    Geometric changes (crop, flips, rotate, crop_scale) move the mask and the unaugmented copy
    too, so they stay pixel-aligned with the input; colour changes (color_jitter, blur) touch
    the input only.
    """
    try:
        with Image.open(info.path) as opened:
            image = ImageOps.exif_transpose(opened)
        mask_image = _mask_image(info, image, ds)
    except (OSError, ValueError) as err:  # the file changed or vanished after the scan
        raise DatasetError(
            f"{info.path} could not be read during training ({err}); it was fine when the run "
            "started — restore the file or remove it and restart"
        ) from err
    pixels = _pil_to_tensor(_cover_crop(_to_rgb(image), plan, Image.Resampling.LANCZOS))
    mask = None
    if mask_image is not None:
        mask = _pil_to_tensor(_cover_crop(mask_image, plan, Image.Resampling.BILINEAR))
    unaugmented = pixels.clone() if want_unaugmented else None
    pixels, mask, unaugmented = _flip_all(plan.flip_x, plan.flip_y, pixels, mask, unaugmented)
    for kind, params in plan.augmentations:
        if kind in GEOMETRIC:
            pixels, mask, unaugmented = _geometric(kind, params, pixels, mask, unaugmented)
        else:
            pixels = _photometric(kind, params, pixels)
    return Rendered(
        _to_signed(pixels),
        _finish_mask(mask, ds) if mask is not None else None,
        _to_signed(unaugmented) if unaugmented is not None else None,
    )


def _cover_crop(image: Image.Image, plan: Plan, resample: Image.Resampling) -> Image.Image:
    if image.size != plan.resized:
        # reducing_gap: a cheap integer pre-shrink first, so big photos resize fast.
        image = image.resize(plan.resized, resample, reducing_gap=3.0)
    width, height = plan.bucket
    return image.crop(
        (plan.crop_left, plan.crop_top, plan.crop_left + width, plan.crop_top + height)
    )


def _to_rgb(image: Image.Image) -> Image.Image:
    # Transparent areas hold arbitrary colours; white is what viewers show and users expect.
    if _alpha_channel(image) is not None:
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        return _to_gray8(image).convert("RGB")
    return image.convert("RGB")


def _to_gray8(image: Image.Image) -> Image.Image:
    # PIL's convert("L") clips 16-bit values at 255 instead of scaling them.
    array = np.asarray(image, dtype=np.float32)
    top = 65535.0 if array.max() > 255 else 255.0
    return Image.fromarray(np.clip(array / top * 255.0, 0, 255).astype(np.uint8), "L")


def _alpha_channel(image: Image.Image) -> Image.Image | None:
    if "A" in image.getbands():
        return image.getchannel("A")
    if image.mode == "P" and "transparency" in image.info:
        return image.convert("RGBA").getchannel("A")
    return None


def _mask_image(info: ImageInfo, image: Image.Image, ds: DatasetConfig) -> Image.Image | None:
    """The mask as an "L" image at the image's size, or None when this dataset has none."""
    if info.mask_path is not None:
        with Image.open(info.mask_path) as opened:
            mask = ImageOps.exif_transpose(opened)
        mask = _to_gray8(mask) if mask.mode.startswith(("I", "F")) else mask.convert("L")
    elif ds.alpha_mask:
        alpha = _alpha_channel(image)
        mask = alpha if alpha is not None else Image.new("L", image.size, 255)
    else:
        return None
    if mask.size != image.size:
        mask = mask.resize(image.size, Image.Resampling.BILINEAR)
    return mask


def _pil_to_tensor(image: Image.Image) -> torch.Tensor:
    array = np.asarray(image, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


def _to_signed(pixels: torch.Tensor) -> torch.Tensor:
    return pixels.mul(2.0).sub_(1.0).clamp_(-1.0, 1.0)


def _finish_mask(mask: torch.Tensor, ds: DatasetConfig) -> torch.Tensor:
    mask = mask.clamp(0.0, 1.0)
    if ds.invert_mask:
        mask = 1.0 - mask
    # mask_min_value keeps some loss weight in masked-out areas.
    return ds.mask_min_value + (1.0 - ds.mask_min_value) * mask


def _flip_all(
    flip_x: bool, flip_y: bool, *tensors: torch.Tensor | None
) -> tuple[torch.Tensor | None, ...]:
    dims = [d for d, flip in ((-1, flip_x), (-2, flip_y)) if flip]
    if not dims:
        return tensors
    return tuple(t.flip(dims) if t is not None else None for t in tensors)


def _geometric(
    kind: str, params: tuple[float, ...], *tensors: torch.Tensor | None
) -> tuple[Any, ...]:
    if kind == "flip_x":
        return _flip_all(True, False, *tensors)
    if kind == "flip_y":
        return _flip_all(False, True, *tensors)
    if kind == "rotate":
        return tuple(_rotate(t, params[0]) if t is not None else None for t in tensors)
    zoom, fx, fy = params
    return tuple(_crop_scale(t, zoom, fx, fy) if t is not None else None for t in tensors)


def _rotate(tensor: torch.Tensor, degrees: float) -> torch.Tensor:
    """Rotate about the centre, zoomed just enough that no empty corner shows."""
    _, height, width = tensor.shape
    angle = math.radians(degrees)
    cos, sin = math.cos(angle), math.sin(angle)
    zoom = abs(cos) + max(width / height, height / width) * abs(sin)
    # Output->source mapping in normalised coordinates, corrected for the aspect ratio.
    theta = torch.tensor(
        [
            [cos / zoom, -sin * height / (width * zoom), 0.0],
            [sin * width / (height * zoom), cos / zoom, 0.0],
        ],
        dtype=tensor.dtype,
    )
    grid = F.affine_grid(theta[None], [1, *tensor.shape], align_corners=False)
    out = F.grid_sample(
        tensor[None], grid, mode="bilinear", padding_mode="border", align_corners=False
    )
    return out[0]


def _crop_scale(tensor: torch.Tensor, zoom: float, fx: float, fy: float) -> torch.Tensor:
    """Crop a window 1/zoom of the size at (fx, fy) of the free space and scale it back up."""
    _, height, width = tensor.shape
    crop_w, crop_h = max(1, round(width / zoom)), max(1, round(height / zoom))
    left, top = round((width - crop_w) * fx), round((height - crop_h) * fy)
    window = tensor[:, top : top + crop_h, left : left + crop_w]
    return F.interpolate(window[None], size=(height, width), mode="bilinear", align_corners=False)[
        0
    ]


def _photometric(kind: str, params: tuple[float, ...], pixels: torch.Tensor) -> torch.Tensor:
    if kind == "color_jitter":
        return _color_jitter(pixels, *params)
    return _gaussian_blur(pixels, params[0])


def _color_jitter(
    pixels: torch.Tensor, brightness: float, contrast: float, saturation: float
) -> torch.Tensor:
    pixels = (pixels * brightness).clamp(0.0, 1.0)
    mean = _gray(pixels).mean()
    pixels = ((pixels - mean) * contrast + mean).clamp(0.0, 1.0)
    gray = _gray(pixels)
    return ((pixels - gray) * saturation + gray).clamp(0.0, 1.0)


def _gray(pixels: torch.Tensor) -> torch.Tensor:
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=pixels.dtype).view(3, 1, 1)
    return (pixels * weights).sum(0, keepdim=True)


def _gaussian_blur(pixels: torch.Tensor, sigma: float) -> torch.Tensor:
    if sigma <= 0.05:
        return pixels
    _, height, width = pixels.shape
    radius = min(math.ceil(3 * sigma), (min(height, width) - 1) // 2)
    if radius < 1:
        return pixels
    offsets = torch.arange(-radius, radius + 1, dtype=pixels.dtype)
    kernel = torch.exp(-(offsets**2) / (2 * sigma * sigma))
    kernel = kernel / kernel.sum()
    channels = pixels.shape[0]
    out = F.pad(pixels[None], (radius, radius, radius, radius), mode="reflect")
    out = F.conv2d(out, kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), groups=channels)
    out = F.conv2d(out, kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels)
    return out[0]


FLIPS = ("flip_x", "flip_y")


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

    def _build_entries(self) -> list[Entry]:
        entries: list[Entry] = []
        for d, scan in enumerate(self.scans):
            ds = scan.config
            for resolution in ds.resolution:
                side = _floor_to(resolution, self.size_multiple)
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
        }

    def __getitem__(self, key: ItemKey | int) -> dict[str, Any]:
        item = self.describe(key)
        *_, scan, info = self._locate(key)
        rendered = render(info, item["plan"], scan.config, want_unaugmented=self.want_unaugmented)
        item.update(pixels=rendered.pixels, mask=rendered.mask, unaugmented=rendered.unaugmented)
        return item


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
    so batches mixing datasets with and without them still stack."""
    pixels = torch.stack([item["pixels"] for item in items])
    masks = None
    if any(item["mask"] is not None for item in items):
        ones = torch.ones_like(pixels[0, :1])
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
