"""Dataset manager (engine side): list, analyse, de-duplicate, curate and caption datasets.

``analyse`` describes each image and how the captions are written (tags or sentences); buckets
and steps per epoch depend on the training settings and are counted by ``ui.datasets.analyse``
(the wizard's and the Datasets page's one analysis).

Datasets live in ``<studio home>/datasets/<name>/`` as a flat folder of images and caption files
(what ``trainer.data.scanning.scan_dataset`` reads) plus a hidden ``.manifest.json``. They are
created by ``trainer.data.uploads`` (a zip upload, many uploaded files, or a local folder; its
names are re-exported here, the Datasets page's one entry point).

Near-duplicates are found with ``imagehash``'s 64-bit perceptual (phash) or difference (dhash)
hashes. An image that cannot be decoded (imported before imports decoded fully, or replaced on
disk) is listed by ``broken_images`` and left out of the analysis, never a crash. Removing images
never deletes them: they move to ``.removed/<batch>/`` and ``undo_removal`` puts the last batch
back. Caption and manifest edits are written atomically (``trainer.files.atomic_write_text``,
fsynced).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import imagehash
import numpy as np
from PIL import Image

from trainer.data.uploads import (  # noqa: F401  (re-exported: the Datasets page's one entry)
    CAPTION_EXTS,
    MANIFEST,
    DatasetUploadError,
    ImportResult,
    Limits,
    file_kind,
    image_problem,
    import_files,
    import_folder,
    import_zip,
    safe_member,
    validate_name,
)
from trainer.files import atomic_write_text

REMOVED = ".removed"


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
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and file_kind(p.name) == "image")


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


# Words every English caption uses: left out of the word counts of sentence captions.
_FILLER_WORDS = frozenset(
    {"a", "an", "the", "of", "on", "in", "at", "with", "and", "or", "to", "by", "for", "from"}
    | {"is", "are", "it", "its", "this", "that", "there"}
)
SENTENCE_MIN_WORDS = 4  # "sks" or "red dress" is one tag; "a photo of sks" is a sentence


def caption_style(captions: Iterable[str]) -> str:
    """How a dataset's captions are written: "tags" (comma-separated, e.g. "sks, red dress,
    smiling"), "sentences" (most captions are one comma-free phrase of several words, e.g. "a
    photo of sks on a beach") or "none" (no captions)."""
    written = [c for c in captions if c.strip()]
    if not written:
        return "none"
    sentences = sum("," not in c and len(c.split()) >= SENTENCE_MIN_WORDS for c in written)
    return "sentences" if sentences * 2 > len(written) else "tags"


def word_frequency(captions: Iterable[str]) -> dict[str, int]:
    """In how many captions each word appears (filler words left out), most used first."""
    counts: Counter[str] = Counter()
    for caption in captions:
        words = {w.strip(".,;:!?()[]\"'").lower() for w in caption.split()}
        counts.update(w for w in words if w and w not in _FILLER_WORDS)
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def analyse(
    folder: Path,
    *,
    caption_ext: str = ".txt",
    min_side: int = 512,
    max_pixels: int = 40_000_000,
) -> dict[str, Any]:
    """What each image is (size, aspect ratio, caption, flags) and how the captions are written.

    Buckets and steps per epoch are not counted here: they depend on the training settings, and
    the studio counts them in one place (``ui.datasets.analyse``, with ``trainer.data.buckets``).
    """
    rows: list[dict[str, Any]] = []
    broken: dict[str, str] = {}
    for path in images_in(folder):
        try:
            with Image.open(path) as image:
                image.load()
                width, height = image.size
                flags = _flags(image, min_side, max_pixels)
        except Exception as err:  # PIL raises many types on undecodable data: all mean "broken"
            broken[path.name] = file_problem(path) or f"cannot be decoded ({err})"
            continue
        cap_file = caption_path(path, caption_ext)
        caption = cap_file.read_text(encoding="utf-8").strip() if cap_file.is_file() else ""
        rows.append(
            {
                "image": path.name,
                "width": width,
                "height": height,
                "aspect": round(width / height, 3),
                "caption": caption,
                "caption_words": len(caption.split()),
                "tags": len(_tags(caption)),
                "flags": flags,
            }
        )
    captions = [row["caption"] for row in rows]
    style = caption_style(captions)
    tag_counts: Counter[str] = Counter()
    if style == "tags":
        for caption in captions:
            tag_counts.update(dict.fromkeys(_tags(caption), 1))  # in how many captions
    captioned = sum(1 for caption in captions if caption)
    return {
        "images": len(rows),
        "rows": rows,
        "captioned": captioned,
        "caption_coverage": captioned / len(rows) if rows else 0.0,
        "mean_caption_words": sum(r["caption_words"] for r in rows) / len(rows) if rows else 0.0,
        "caption_style": style,
        "tag_frequency": dict(tag_counts.most_common()),
        "word_frequency": word_frequency(captions) if style == "sentences" else {},
        "flagged": {row["image"]: row["flags"] for row in rows if row["flags"]},
        "broken": broken,
    }


def _flags(image: Image.Image, min_side: int, max_pixels: int) -> list[str]:
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
    return flags


def file_problem(path: Path) -> str | None:
    """Why the image file at ``path`` cannot be used (``image_problem``), or None."""
    try:
        data = path.read_bytes()
    except OSError as err:
        return f"cannot be read ({err.strerror or err})"
    return image_problem(data)


def broken_images(folder: Path) -> dict[str, str]:
    """The images of a dataset that cannot be used, with the reason; removable like any other."""
    return {path.name: why for path in images_in(folder) if (why := file_problem(path))}


# ---------------------------------------------------------------------------------- duplicates


def near_duplicates(folder: Path, threshold: int = 6, method: str = "phash") -> list[dict]:
    """Pairs of images whose 64-bit hashes differ in at most ``threshold`` bits, closest first.

    ``method`` "phash" (DCT perceptual hash) or "dhash" (difference hash), both 8x8 bits.
    """
    hasher = imagehash.phash if method == "phash" else imagehash.dhash
    hashes = []
    for path in images_in(folder):
        try:
            with Image.open(path) as image:
                hashes.append((path.name, hasher(image, hash_size=8)))
        except Exception:  # a broken image has no hash; broken_images lists it for removal
            continue
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
        if safe_member(name) != name:
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
    if safe_member(image) != image or not (Path(folder) / image).is_file():
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
