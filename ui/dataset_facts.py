"""What the advisor is told about a draft's images, counted cheaply from its dataset folders.

Image files, caption files and sizes from the image headers: no torch import, cached per folder
state. Apart from ``ui.advice`` (which asks the advisor) because this part reads the disk, and
the dataset analysis (``ui.datasets``) and the run-length step (``ui.steps_epochs``) count
through it as well.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from PIL import Image

from advisor.dataset import DatasetInfo, FolderInfo, caption_trigger
from trainer.config.schema import TrainingConfig
from trainer.demo.tiny import ensure_demo
from trainer.settings import load_settings
from ui.access import refusal


def dataset_info(draft: dict[str, Any], cfg: TrainingConfig | None) -> DatasetInfo | None:
    """What the advisor knows about the images, counted cheaply from the folders (image files,
    caption files, sizes from the image headers; no torch import, cached per folder state).
    Served to a network, a folder outside the allowed roots is not looked at: the advisor hears
    why (``FolderInfo.refused``), the same whether it exists or not."""
    if cfg is None:
        return None
    folders = []
    for ds in cfg.datasets:
        facts = _folder_facts(ds.folder_path, ds.caption_ext)
        if facts is None:
            return None
        folders.append(facts)
    named = cfg.validation.folder_path
    validation = _folder_facts(named, cfg.datasets[0].caption_ext) if named else None
    return DatasetInfo(tuple(folders), validation=validation)


def _folder_facts(ref: str, caption_ext: str) -> FolderInfo | None:
    """One folder's counts; a refused or missing folder says so; None: the demo is not built."""
    refused = None if ref.startswith("demo:") else refusal(ref)
    if refused:
        return FolderInfo(0, folder=ref, missing=True, refused=refused)
    folder = _folder_of(ref)
    if folder is None and not ref.startswith("demo:"):
        return FolderInfo(0, folder=str(Path(ref).expanduser().absolute()), missing=True)
    if folder is None:
        return None
    return _count_folder(str(folder), folder.stat().st_mtime_ns, caption_ext)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def _folder_of(ref: str) -> Path | None:
    if ref.startswith("demo:"):
        return ensure_demo(load_settings().home, "dataset") if ref == "demo:dataset" else None
    path = Path(ref).expanduser()
    return path if path.is_dir() else None


@functools.lru_cache(maxsize=32)
def _count_folder(name: str, stamp: int, caption_ext: str) -> FolderInfo:
    folder = Path(name)
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    sizes = []
    for path in images[:2000]:
        try:
            with Image.open(path) as image:
                sizes.append(image.size)
        except Exception:  # an unreadable image is not counted (the trainer skips it too)
            continue
    ext = "." + caption_ext.lstrip(".")
    captions = [_read_caption(p.with_suffix(ext)) for p in images[:2000]]
    captioned = sum(c is not None for c in captions)
    trigger = caption_trigger(c for c in captions if c is not None)
    texts = tuple(c for c in captions if c is not None)  # for the rules on the captions' words
    return FolderInfo(
        len(sizes),
        tuple(sizes),
        captioned,
        folder=str(folder),
        caption_trigger=trigger,
        captions=texts,
    )


def _read_caption(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
