"""The demo dataset: coloured shapes on plain backgrounds, captioned with the trigger word ``sks``.

Drawn with PIL from a seed (bit-identical for the same seed), in three aspect ratios so the
bucketing has work to do. ``CAPTION_WORDS`` is its whole vocabulary: the tiny tokenizers of
``trainer.demo.tiny`` give each word its own token.
"""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image, ImageDraw

TRIGGER_WORD = "sks"

# Words the tokenizers get whole-word entries for: the demo captions' vocabulary.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 70),
    "blue": (40, 80, 210),
    "yellow": (235, 205, 40),
    "purple": (140, 60, 180),
    "orange": (240, 140, 30),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
SHAPES = ("circle", "square", "triangle")
SIZES = ((64, 64), (96, 64), (64, 96))  # (width, height): square, landscape, portrait
CAPTION_WORDS = ("a", "photo", "of", TRIGGER_WORD, "on", "background", *COLOURS, *SHAPES)


def _draw_shape(draw, shape: str, box: tuple[int, int, int, int], fill: tuple[int, int, int]):
    left, top, right, bottom = box
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon([((left + right) // 2, top), (right, bottom), (left, bottom)], fill=fill)


def _demo_image(rng: random.Random, size: tuple[int, int]):
    """One picture and its caption: a coloured shape on a plain background of another colour."""
    shape = rng.choice(SHAPES)
    colour, background = rng.sample(sorted(COLOURS), 2)
    width, height = size
    image = Image.new("RGB", size, COLOURS[background])
    extent = rng.randint(min(size) // 3, min(size) * 3 // 4)
    left = rng.randint(2, width - extent - 2)
    top = rng.randint(2, height - extent - 2)
    _draw_shape(
        ImageDraw.Draw(image), shape, (left, top, left + extent, top + extent), COLOURS[colour]
    )
    caption = f"a photo of {TRIGGER_WORD} {colour} {shape} on a {background} background"
    return image, caption


def build_demo_dataset(out_dir: Path, seed: int = 0, count: int = 12) -> Path:
    """Write ``count`` captioned PNGs (``img_000.png`` + ``img_000.txt``...), cycling aspects."""
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for index in range(count):
        image, caption = _demo_image(rng, SIZES[index % len(SIZES)])
        stem = out_dir / f"img_{index:03d}"
        image.save(stem.with_suffix(".png"))
        stem.with_suffix(".txt").write_text(caption + "\n", encoding="utf-8")
    return out_dir
