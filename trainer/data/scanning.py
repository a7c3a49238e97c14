"""Folder scanning and image checks: which files of a dataset folder can be trained on, and why not.

``scan_dataset(ds, folder)`` lists, verifies and captions the images of one folder and names every
file it leaves out; ``check_enough`` stops a run whose epoch cannot fill one optimizer step.

Choices worth knowing:

- Scanning is NOT recursive: only files directly in the folder are read. Sub-folders are named in
  the "no images" error, because kohya-style ``10_name`` sub-folders are a common layout mistake.
  Hidden files (``.name``) are ignored silently.
- Every image is decoded once during the scan (``verify()`` and then a full ``load()``), so corrupt,
  truncated, zero-byte and oversize files are skipped up front and reported, never met mid-run.

Needs PIL, not torch.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from PIL import Image

from trainer.config.sections.datasets import DatasetConfig

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
# Image formats people drop into datasets that we do not train on: named in the skip reason.
OTHER_IMAGE_EXTENSIONS = (".gif", ".tif", ".tiff", ".heic", ".heif", ".avif", ".jxl", ".psd")
MAX_PIXELS = 40_000_000  # bigger images are almost always mistakes and cost seconds per load


class DatasetError(ValueError):
    """A data problem that stops a run before training; the message names the folder and fix."""


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
    problem = decode_problem(data)
    if isinstance(problem, str):
        return problem
    width, height, has_alpha = problem
    mask_path = None
    if masks is not None:
        mask_path = masks.get(path.stem)
        if mask_path is None:
            return f"no mask named {path.stem}.* in {ds.mask_path}"
        mask_problem = decode_problem(_read_or_empty(mask_path))
        if isinstance(mask_problem, str):
            return f"its mask {mask_path.name} is unusable: {mask_problem}"
    content_hash = hashlib.sha256(data).hexdigest()
    return ImageInfo(path, "", width, height, content_hash, False, mask_path, has_alpha)


def _read_or_empty(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""  # reported like an empty file


def decode_problem(data: bytes, *, limit_pixels: bool = True) -> tuple[int, int, bool] | str:
    """(width, height, has_alpha) of an image that fully decodes, else the reason it does not.

    The one image check of the studio: the trainer's scan and the dataset imports both use it
    (imports with ``limit_pixels`` False: a big image is flagged there, not refused; PIL's own
    decompression-bomb limit still holds).
    """
    if not data:
        return "empty file (0 bytes)"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                image.verify()  # structure and checksums, without decoding
            with Image.open(io.BytesIO(data)) as image:
                width, height = _oriented_size(image)
                if limit_pixels and width * height > MAX_PIXELS:
                    return _too_large(width, height)
                image.load()  # a real decode: catches truncated pixel data verify() misses
                return width, height, alpha_channel(image) is not None
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


def alpha_channel(image: Image.Image) -> Image.Image | None:
    """The image's transparency as an "L" image, or None when it has none."""
    if "A" in image.getbands():
        return image.getchannel("A")
    if image.mode == "P" and "transparency" in image.info:
        return image.convert("RGBA").getchannel("A")
    return None


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
