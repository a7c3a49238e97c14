"""Augmentation and rendering: draw every random choice for one use of an image, then apply it.

``plan_transform`` draws a ``Plan`` (resize to cover the bucket, crop, flips, augmentations)
before any pixel is touched; ``render`` loads the image and applies the plan, moving its mask and
unaugmented copy with every geometric change. Sizes follow diffusers' SDXL convention where
they leave this module: ``crop_top_left`` is (top, left), buckets are (width, height).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from trainer.config.sections.datasets import Augmentation, DatasetConfig
from trainer.data.buckets import Bucket
from trainer.data.scanning import DatasetError, ImageInfo, alpha_channel

MAX_RANDOM_ZOOM = 0.25  # random_scale zooms in by up to 25 %
MAX_ROTATION_DEGREES = 30.0  # rotate strength 1.0 = ±30°
MAX_BLUR_SHARE = 0.02  # blur strength 1.0 = sigma of 2 % of the shorter side


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


ORIENTATION_TAG, SIDEWAYS = 0x0112, (5, 6, 7, 8)  # EXIF orientations that swap width and height
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
            _decode_small(opened, plan)
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


def _decode_small(opened: Image.Image, plan: Plan) -> None:
    """JPEG only: decode at 1/2, 1/4 or 1/8 size when the plan shrinks the photo that much
    anyway (never below the planned size; 40% faster for a 3000x2000 photo planned at 768x512)."""
    width, height = plan.resized
    if opened.getexif().get(ORIENTATION_TAG, 1) in SIDEWAYS:  # stored before its rotation
        width, height = height, width
    opened.draft(None, (width, height))


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
    if alpha_channel(image) is not None:
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


def _mask_image(info: ImageInfo, image: Image.Image, ds: DatasetConfig) -> Image.Image | None:
    """The mask as an "L" image at the image's size, or None when this dataset has none."""
    if info.mask_path is not None:
        with Image.open(info.mask_path) as opened:
            mask = ImageOps.exif_transpose(opened)
        mask = _to_gray8(mask) if mask.mode.startswith(("I", "F")) else mask.convert("L")
    elif ds.alpha_mask:
        alpha = alpha_channel(image)
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
