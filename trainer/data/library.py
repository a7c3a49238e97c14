"""Dataset manager (engine side): create, analyse, de-duplicate, curate and caption datasets.

Datasets live in ``<studio home>/datasets/<name>/`` as a flat folder of images and caption files
(what ``trainer.data.scanning.scan_dataset`` reads) plus a hidden ``.manifest.json``. Creation
sources: a zip upload, many uploaded files, or a local folder. Uploads are checked before anything
is written: entries with absolute paths, ``..`` or drive letters, and symlinks are refused (no
zip-slip); file count, per-file and total sizes are bounded (counted while reading, not trusted
from headers); non-image files are listed and skipped. A dataset is built in a temporary folder
and renamed into place.

Near-duplicates are found with ``imagehash``'s 64-bit perceptual (phash) or difference (dhash)
hashes. Removing images never deletes them: they move to ``.removed/<batch>/`` and
``undo_removal`` puts the last batch back. Caption and manifest edits are written atomically
(``trainer.files.atomic_write_text``, fsynced).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import stat
import tempfile
import time
import zipfile
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import imagehash
import numpy as np
from PIL import Image

from trainer.data.buckets import bucket_for, make_buckets, steps_per_epoch
from trainer.data.scanning import IMAGE_EXTENSIONS
from trainer.files import atomic_write_text

MANIFEST = ".manifest.json"  # hidden: the trainer's scan ignores it
REMOVED = ".removed"
CAPTION_EXTS = (".txt", ".caption")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,63}$")


class DatasetUploadError(ValueError):
    """An upload or request refused before anything was written; the message says why."""


@dataclass(frozen=True)
class Limits:
    max_files: int = 5000
    max_file_bytes: int = 50 * 1024 * 1024
    max_total_bytes: int = 2 * 1024 * 1024 * 1024


@dataclass
class ImportResult:
    folder: Path
    images: list[str]
    captions: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)


def validate_name(name: str) -> str:
    name = name.strip()
    if not NAME_RE.match(name) or name in (".", "..") or ".." in name:
        raise DatasetUploadError(
            f"dataset name {name!r}: use letters, digits, space, '_', '-', '.' (max 64)"
        )
    return name


def _safe_member(name: str) -> str:
    """The file name to keep for an archive member; refuses anything that could escape."""
    if "\\" in name or name.startswith("/") or re.match(r"^[A-Za-z]:", name) or "\x00" in name:
        raise DatasetUploadError(f"unsafe path in upload: {name!r}")
    parts = PurePosixPath(name).parts
    if any(part == ".." for part in parts):
        raise DatasetUploadError(f"unsafe path in upload: {name!r} ('..')")
    return parts[-1] if parts else ""


def _kind(name: str) -> str | None:
    ext = Path(name).suffix.lower()
    if ext in IMAGE_EXTENSIONS:
        return "image"
    if ext in CAPTION_EXTS:
        return "caption"
    return None


def _read_bounded(stream: io.BufferedIOBase, limit: int, name: str) -> bytes:
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise DatasetUploadError(f"{name} is larger than the {limit // 1_000_000} MB file limit")
    return data


def _write_dataset(
    root: Path,
    name: str,
    entries: Iterable[tuple[str, Callable[[], bytes]]],
    source: str,
    limits: Limits,
) -> ImportResult:
    """Check names/kinds/limits for every entry, then build the folder atomically."""
    name = validate_name(name)
    root.mkdir(parents=True, exist_ok=True)
    final = root / name
    if final.exists():
        raise DatasetUploadError(f"a dataset named {name!r} already exists")
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root))
    result = ImportResult(final, [], [])
    total = count = 0
    seen: set[str] = set()
    try:
        for member, read in entries:
            base = _safe_member(member)
            if not base or base.startswith(".") or "__MACOSX" in member:
                continue
            kind = _kind(base)
            if kind is None:
                result.skipped.append((member, "not an image or caption file"))
                continue
            count += 1
            if count > limits.max_files:
                raise DatasetUploadError(f"more than {limits.max_files} files in the upload")
            if base.lower() in seen:
                raise DatasetUploadError(f"two files are named {base!r} (folders are flattened)")
            seen.add(base.lower())
            data = read()
            total += len(data)
            if total > limits.max_total_bytes:
                raise DatasetUploadError(
                    f"the upload is larger than the {limits.max_total_bytes // 1_000_000} MB limit"
                )
            if kind == "image" and not _decodes(data):
                result.skipped.append((member, "not a readable image"))
                continue
            (staging / base).write_bytes(data)
            (result.images if kind == "image" else result.captions).append(base)
        if not result.images:
            raise DatasetUploadError("the upload holds no readable images")
        manifest = {
            "name": name,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "source": source,
            "images": sorted(result.images),
            "captions": sorted(result.captions),
            "skipped": result.skipped,
            "removals": [],
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))
        os.replace(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return result


def _decodes(data: bytes) -> bool:
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
        return True
    except Exception:
        return False


def import_zip(root: Path, name: str, upload: Path | bytes, limits: Limits = Limits()):
    """Create ``root/name`` from a zip (path or bytes); see the module docstring for checks."""
    handle = zipfile.ZipFile(io.BytesIO(upload) if isinstance(upload, bytes) else upload)
    with handle:
        infos = [i for i in handle.infolist() if not i.is_dir()]
        for info in infos:  # refuse the whole upload before writing anything
            _safe_member(info.filename)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise DatasetUploadError(f"symlink in upload: {info.filename!r}")
            if info.file_size > limits.max_file_bytes:
                raise DatasetUploadError(
                    f"{info.filename} is larger than the {limits.max_file_bytes // 1_000_000} MB "
                    "file limit"
                )
        if sum(i.file_size for i in infos) > limits.max_total_bytes:
            raise DatasetUploadError(
                f"the upload is larger than the {limits.max_total_bytes // 1_000_000} MB limit"
            )

        def reader(info: zipfile.ZipInfo) -> Callable[[], bytes]:
            def read() -> bytes:
                with handle.open(info) as stream:
                    return _read_bounded(stream, limits.max_file_bytes, info.filename)

            return read

        return _write_dataset(root, name, ((i.filename, reader(i)) for i in infos), "zip", limits)


def import_files(
    root: Path, name: str, files: Iterable[tuple[str, bytes]], limits: Limits = Limits()
) -> ImportResult:
    """Create ``root/name`` from uploaded (file name, bytes) pairs."""
    entries = []
    for filename, data in files:
        if len(data) > limits.max_file_bytes:
            raise DatasetUploadError(
                f"{filename} is larger than the {limits.max_file_bytes // 1_000_000} MB file limit"
            )
        entries.append((filename, lambda data=data: data))
    return _write_dataset(root, name, entries, "files", limits)


def import_folder(root: Path, name: str, folder: Path, limits: Limits = Limits()) -> ImportResult:
    """Copy the images and captions directly in ``folder`` (symlinks are skipped)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetUploadError(f"{folder} is not a folder")
    entries = []
    skipped = []
    for path in sorted(folder.iterdir()):
        if path.is_symlink():
            skipped.append((path.name, "symlink"))
            continue
        if not path.is_file():
            continue
        if path.stat().st_size > limits.max_file_bytes:
            skipped.append((path.name, "larger than the file limit"))
            continue
        entries.append((path.name, path.read_bytes))
    result = _write_dataset(root, name, entries, f"folder:{folder}", limits)
    result.skipped += skipped
    return result


def list_datasets(root: Path) -> list[dict[str, Any]]:
    """Every dataset folder in ``root``: its manifest, or a bare entry for folders placed there
    by hand (e.g. the demo dataset); hidden folders (uploads being built) are left out."""
    out = []
    root = Path(root)
    if not root.is_dir():
        return out
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            manifest = json.loads((folder / MANIFEST).read_text())
        except (OSError, ValueError):
            manifest = {"name": folder.name, "source": "folder", "removals": []}
        out.append({**manifest, "name": folder.name, "folder": str(folder)})
    return out


# ---------------------------------------------------------------------------------- analysis


def images_in(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and _kind(p.name) == "image")


def caption_path(image: Path, ext: str = ".txt") -> Path:
    return image.with_suffix(ext)


def _is_grayscale(image: Image.Image) -> bool:
    if image.mode in ("L", "LA", "1", "I", "I;16", "F"):
        return True
    small = np.asarray(image.convert("RGB").resize((32, 32)), dtype=np.int16)
    return bool(np.abs(small[..., 0] - small[..., 1]).max() <= 2) and bool(
        np.abs(small[..., 1] - small[..., 2]).max() <= 2
    )


def _tags(caption: str) -> list[str]:
    return [t.strip() for t in caption.split(",") if t.strip()]


def analyse(
    folder: Path,
    resolutions: Iterable[int] = (512,),
    *,
    multiple: int = 64,
    repeats: int = 1,
    batch_size: int = 1,
    grad_accum: int = 1,
    caption_ext: str = ".txt",
    min_side: int = 512,
    max_pixels: int = 40_000_000,
) -> dict[str, Any]:
    """Counts, sizes and aspect ratios, buckets per image, captions, tags, flags, steps/epoch."""
    resolutions = list(resolutions)
    rows: list[dict[str, Any]] = []
    tag_counts: Counter[str] = Counter()
    bucket_counts: dict[int, Counter] = {r: Counter() for r in resolutions}
    bucket_sets = {r: make_buckets(r, multiple) for r in resolutions}
    for path in images_in(folder):
        with Image.open(path) as image:
            width, height = image.size
            flags = []
            if min(width, height) < min_side:
                flags.append("too small")
            if width * height > max_pixels:
                flags.append("too large")
            if _is_grayscale(image):
                flags.append("grayscale")
            if "A" in image.mode or "transparency" in image.info:
                flags.append("alpha")
        cap_file = caption_path(path, caption_ext)
        caption = cap_file.read_text(encoding="utf-8").strip() if cap_file.is_file() else ""
        tags = _tags(caption)
        tag_counts.update(tags)
        buckets = {}
        for r in resolutions:
            bucket = bucket_for(width, height, r, multiple, buckets=bucket_sets[r])
            buckets[r] = f"{bucket[0]}x{bucket[1]}"
            bucket_counts[r][buckets[r]] += 1
        rows.append(
            {
                "image": path.name,
                "width": width,
                "height": height,
                "aspect": round(width / height, 3),
                "caption": caption,
                "caption_words": len(caption.split()),
                "tags": len(tags),
                "flags": flags,
                "buckets": buckets,
            }
        )
    captioned = sum(1 for row in rows if row["caption"])
    steps = sum(
        steps_per_epoch(bucket_counts[r], batch_size, grad_accum, repeats) for r in resolutions
    )
    return {
        "images": len(rows),
        "rows": rows,
        "captioned": captioned,
        "caption_coverage": captioned / len(rows) if rows else 0.0,
        "mean_caption_words": sum(r["caption_words"] for r in rows) / len(rows) if rows else 0.0,
        "tag_frequency": dict(tag_counts.most_common()),
        "bucket_counts": {r: dict(c) for r, c in bucket_counts.items()},
        "flagged": {row["image"]: row["flags"] for row in rows if row["flags"]},
        "steps_per_epoch": steps,
    }


# ---------------------------------------------------------------------------------- duplicates


def near_duplicates(folder: Path, threshold: int = 6, method: str = "phash") -> list[dict]:
    """Pairs of images whose 64-bit hashes differ in at most ``threshold`` bits, closest first.

    ``method`` "phash" (DCT perceptual hash) or "dhash" (difference hash), both 8x8 bits.
    """
    hasher = imagehash.phash if method == "phash" else imagehash.dhash
    hashes = []
    for path in images_in(folder):
        with Image.open(path) as image:
            hashes.append((path.name, hasher(image, hash_size=8)))
    pairs = []
    for i, (a, ha) in enumerate(hashes):
        for b, hb in hashes[i + 1 :]:
            distance = int(ha - hb)  # Hamming distance between the two hashes
            if distance <= threshold:
                pairs.append({"a": a, "b": b, "distance": distance})
    return sorted(pairs, key=lambda p: (p["distance"], p["a"], p["b"]))


# ---------------------------------------------------------------------------------- removal


def _update_manifest(folder: Path, change: Callable[[dict], None]) -> None:
    path = Path(folder) / MANIFEST
    manifest = json.loads(path.read_text()) if path.is_file() else {"removals": []}
    change(manifest)
    atomic_write_text(path, json.dumps(manifest, indent=2))


def remove_images(folder: Path, names: Iterable[str]) -> str:
    """Move images (and their caption files) to ``.removed/<batch>/``; returns the batch id."""
    folder = Path(folder)
    batch = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"_{time.time_ns() % 10**6:06d}"
    target = folder / REMOVED / batch
    moved = []
    for name in names:
        if _safe_member(name) != name:
            raise DatasetUploadError(f"not a file of this dataset: {name!r}")
        image = folder / name
        if not image.is_file():
            raise DatasetUploadError(f"{name} is not in the dataset")
        target.mkdir(parents=True, exist_ok=True)
        for path in [image, *(image.with_suffix(ext) for ext in CAPTION_EXTS)]:
            if path.is_file():
                os.replace(path, target / path.name)
                moved.append(path.name)

    def record(manifest: dict) -> None:
        manifest.setdefault("removals", []).append({"batch": batch, "files": moved})

    _update_manifest(folder, record)
    return batch


def undo_removal(folder: Path) -> list[str]:
    """Put the most recent removal batch back; returns the restored file names."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return []
    if not manifest.get("removals"):
        return []
    last = manifest["removals"][-1]
    source = folder / REMOVED / last["batch"]
    for name in last["files"]:
        if (folder / name).exists():
            raise DatasetUploadError(f"{name} exists again in the dataset; not overwriting it")
    for name in last["files"]:
        os.replace(source / name, folder / name)
    source.rmdir()

    def drop(manifest: dict) -> None:
        manifest["removals"].pop()

    _update_manifest(folder, drop)
    return last["files"]


# ---------------------------------------------------------------------------------- captions


def read_captions(folder: Path, ext: str = ".txt") -> dict[str, str]:
    out = {}
    for image in images_in(folder):
        cap = caption_path(image, ext)
        # errors="replace": a caption saved in another encoding is shown (and can be re-saved
        # as UTF-8), never a crash of the captions page.
        text = cap.read_bytes().decode("utf-8-sig", errors="replace") if cap.is_file() else ""
        out[image.name] = text.strip()
    return out


def set_caption(folder: Path, image: str, text: str, ext: str = ".txt") -> None:
    if _safe_member(image) != image or not (Path(folder) / image).is_file():
        raise DatasetUploadError(f"{image!r} is not an image of this dataset")
    atomic_write_text(caption_path(Path(folder) / image, ext), text.strip() + "\n")


def insert_trigger(caption: str, trigger: str) -> str:
    tags = _tags(caption)
    if trigger in tags:
        return caption
    return ", ".join([trigger, *tags]) if tags else trigger


def replace_text(caption: str, find: str, replace: str, regex: bool = False) -> str:
    return re.sub(find, replace, caption) if regex else caption.replace(find, replace)


def remove_tags(caption: str, tags: Iterable[str]) -> str:
    drop = {t.strip().lower() for t in tags}
    return ", ".join(t for t in _tags(caption) if t.lower() not in drop)


def sort_tags(caption: str, keep_first: int = 0) -> str:
    tags = _tags(caption)
    return ", ".join(tags[:keep_first] + sorted(tags[keep_first:], key=str.lower))


def bulk_edit(folder: Path, edit: Callable[[str], str], ext: str = ".txt") -> int:
    """Apply ``edit`` to every caption; each changed file is saved atomically. Returns count."""
    changed = 0
    for name, caption in read_captions(folder, ext).items():
        new = edit(caption)
        if new != caption:
            set_caption(folder, name, new, ext)
            changed += 1
    return changed
