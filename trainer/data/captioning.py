"""Auto-captioning through a pluggable captioner loaded from a local model folder.

A captioner is anything with ``caption(images: list[PIL.Image]) -> list[str]``. Built in:

- **BLIP** (``config.json`` with ``model_type`` "blip"): transformers' BlipForConditionalGeneration.
- **Florence-2** (``model_type`` "florence2"): runs the folder's own code, so only with
  ``allow_remote_code=True``.
- **WD14-style taggers** (``model.onnx`` + ``selected_tags.csv``): need ``onnxruntime``.

``register_captioner(kind, detect, factory)`` adds others. Nothing is downloaded: when no usable
model is found, ``CaptionerUnavailable`` says what to put where.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from trainer.data.library import read_captions, set_caption

HOW_TO = (
    "Download a captioner to a local folder first (e.g. Salesforce/blip-image-captioning-base "
    "with `hf download ... --local-dir <home>/models/captioners/blip`), then give that folder."
)


class CaptionerUnavailable(RuntimeError):
    """No usable captioner: the message says why and how to install one."""


class Captioner(Protocol):
    def caption(self, images: list[Any]) -> list[str]: ...


def _model_type(folder: Path) -> str:
    try:
        return str(json.loads((folder / "config.json").read_text()).get("model_type", ""))
    except (OSError, ValueError):
        return ""


class BlipCaptioner:
    def __init__(self, folder: Path, max_new_tokens: int = 40) -> None:
        from transformers import (  # transformers: seconds to import, only for BLIP
            BlipForConditionalGeneration,
            BlipProcessor,
        )

        self.processor = BlipProcessor.from_pretrained(str(folder))
        self.model = BlipForConditionalGeneration.from_pretrained(str(folder)).eval()
        self.max_new_tokens = max_new_tokens

    def caption(self, images: list[Any]) -> list[str]:
        import torch  # torch: 1-2 s to import, only when BLIP captions

        inputs = self.processor(images=[i.convert("RGB") for i in images], return_tensors="pt")
        with torch.no_grad():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens)
        return [t.strip() for t in self.processor.batch_decode(out, skip_special_tokens=True)]


class FlorenceCaptioner:
    def __init__(self, folder: Path, task: str = "<DETAILED_CAPTION>") -> None:
        from transformers import (  # transformers: seconds to import, only for Florence-2
            AutoModelForCausalLM,
            AutoProcessor,
        )

        self.processor = AutoProcessor.from_pretrained(str(folder), trust_remote_code=True)
        self.model = AutoModelForCausalLM.from_pretrained(str(folder), trust_remote_code=True)
        self.task = task

    def caption(self, images: list[Any]) -> list[str]:
        out = []
        for image in images:
            inputs = self.processor(
                text=self.task, images=image.convert("RGB"), return_tensors="pt"
            )
            ids = self.model.generate(**inputs, max_new_tokens=80)
            out.append(self.processor.batch_decode(ids, skip_special_tokens=True)[0].strip())
        return out


class WD14Tagger:
    def __init__(self, folder: Path, threshold: float = 0.35) -> None:
        try:
            import onnxruntime  # optional dependency, only for WD14 taggers
        except ImportError as exc:
            raise CaptionerUnavailable(
                f"{folder} is a WD14-style tagger, which needs onnxruntime (not installed here): "
                "`pip install onnxruntime`, or use a BLIP folder instead."
            ) from exc
        self.session = onnxruntime.InferenceSession(str(folder / "model.onnx"))
        with open(folder / "selected_tags.csv", newline="", encoding="utf-8") as handle:
            self.tags = [row["name"] for row in csv.DictReader(handle)]
        self.threshold = threshold

    def caption(self, images: list[Any]) -> list[str]:
        model_input = self.session.get_inputs()[0]
        size = int(model_input.shape[1])
        out = []
        for image in images:
            rgb = np.asarray(image.convert("RGB").resize((size, size)), dtype=np.float32)
            probs = self.session.run(None, {model_input.name: rgb[None, ..., ::-1].copy()})[0][0]
            tags = [t for t, p in zip(self.tags, probs, strict=False) if p >= self.threshold]
            out.append(", ".join(t.replace("_", " ") for t in tags))
        return out


_REGISTRY: list[tuple[str, Callable[[Path], bool], Callable[..., Captioner]]] = [
    ("blip", lambda f: _model_type(f) == "blip", BlipCaptioner),
    ("florence2", lambda f: _model_type(f) == "florence2", FlorenceCaptioner),
    (
        "wd14",
        lambda f: (f / "model.onnx").is_file() and (f / "selected_tags.csv").is_file(),
        WD14Tagger,
    ),
]


def register_captioner(
    kind: str, detect: Callable[[Path], bool], factory: Callable[..., Captioner]
) -> None:
    """Add a captioner kind, tried before the built-in ones."""
    _REGISTRY.insert(0, (kind, detect, factory))


def detect_kind(folder: Path) -> str | None:
    folder = Path(folder)
    for kind, detect, _ in _REGISTRY:
        if detect(folder):
            return kind
    return None


def load_captioner(folder: str | Path | None, allow_remote_code: bool = False) -> Captioner:
    """The captioner in a local model folder, or CaptionerUnavailable with how to get one."""
    if not folder:
        raise CaptionerUnavailable(f"No captioner model folder given. {HOW_TO}")
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise CaptionerUnavailable(f"No captioner model at {folder}. {HOW_TO}")
    kind = detect_kind(folder)
    if kind is None:
        raise CaptionerUnavailable(
            f"{folder} is not a captioner this studio knows (BLIP, Florence-2 or a WD14 tagger "
            f"with model.onnx + selected_tags.csv). {HOW_TO}"
        )
    if kind == "florence2" and not allow_remote_code:
        raise CaptionerUnavailable(
            f"{folder} is Florence-2, which runs code from the model folder; allow remote code "
            "explicitly if you trust it."
        )
    factory = next(f for k, _, f in _REGISTRY if k == kind)
    return factory(folder)


def captioner_folders(home: Path) -> list[Path]:
    """Model folders under ``<home>/models/captioners`` that look like a known captioner."""
    root = Path(home) / "models" / "captioners"
    if not root.is_dir():
        return []
    return [p for p in sorted(root.iterdir()) if p.is_dir() and detect_kind(p)]


def auto_caption(
    folder: Path,
    captioner: Captioner,
    *,
    overwrite: bool = False,
    prefix: str = "",
    batch_size: int = 4,
    ext: str = ".txt",
) -> dict[str, str]:
    """Caption the dataset's images (those without captions unless ``overwrite``), saved
    atomically; ``prefix`` (e.g. the trigger word) goes first. Returns what was written."""
    existing = read_captions(folder, ext)
    todo = [name for name, text in existing.items() if overwrite or not text]
    written: dict[str, str] = {}
    for start in range(0, len(todo), batch_size):
        names = todo[start : start + batch_size]
        images = []
        for name in names:
            with Image.open(Path(folder) / name) as image:
                images.append(image.convert("RGB"))
        for name, text in zip(names, captioner.caption(images), strict=True):
            caption = ", ".join(p for p in (prefix.strip(), text.strip()) if p)
            set_caption(folder, name, caption, ext)
            written[name] = caption
    return written
