"""The datasets section: image folders, captions, masks, resolutions, buckets, augmentations
and latent caching, per dataset (a config may hold several)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from trainer.config.fields import Section, opt


class Augmentation(Section):
    type: Literal["color_jitter", "blur", "rotate", "crop_scale", "flip_x", "flip_y"] = opt(
        ...,
        "The change applied to a training image: colour jitter, Gaussian blur, small rotation, "
        "random crop-and-scale, or a horizontal / vertical flip.",
        step="resolution",
    )
    probability: float = opt(
        0.5,
        "Chance (0-1) that this augmentation is applied to an image each time it is used.",
        step="resolution",
        ge=0.0,
        le=1.0,
    )
    strength: float = opt(
        0.1,
        "How strong the change is (0-1): jitter amount, blur radius share, rotation share of "
        "30 degrees, crop share.",
        step="resolution",
        ge=0.0,
        le=1.0,
    )


class DatasetConfig(Section):
    folder_path: str = opt(
        "demo:dataset",
        "Folder of images with a caption file beside each (same name, e.g. 'cat.png' + "
        "'cat.txt'). 'demo:dataset' is the small generated demo set.",
        step="dataset",
        level="basic",
        min_length=1,
    )
    trigger_word: str | None = opt(
        None,
        "A rare word that will call up what you train (e.g. 'sks'). It is put in front of each "
        "caption that lacks it, and '[trigger]' in prompts is replaced by it.",
        step="dataset",
        level="basic",
        affects=("quality",),
    )
    caption_ext: str = opt(
        "txt",
        "Extension of the caption files next to the images (txt, caption...).",
        step="dataset",
        level="basic",
        pattern=r"^[A-Za-z0-9_.-]{1,16}$",
    )
    default_caption: str = opt(
        "",
        "Caption used for images that have no caption file.",
        step="dataset",
        level="basic",
    )
    num_repeats: int = opt(
        1,
        "How many times each image is seen per epoch. Balances small datasets against large "
        "ones in the same run (like kohya's '10_name' folders).",
        step="dataset",
        level="basic",
        affects=("quality", "speed"),
        ge=1,
        le=1000,
    )
    keep_tokens: int = opt(
        0,
        "Number of leading comma-separated tags never shuffled or dropped (keep the trigger "
        "word first).",
        step="dataset",
        ge=0,
        le=64,
    )
    shuffle_tokens: bool = opt(
        False,
        "Shuffle comma-separated tags in each caption every time, so no tag order is learned.",
        step="dataset",
        affects=("quality",),
    )
    token_dropout_rate: float = opt(
        0.0,
        "Chance (0-1) of dropping each tag (after keep_tokens) each time a caption is used.",
        step="dataset",
        affects=("quality",),
        ge=0.0,
        le=1.0,
    )
    caption_dropout_rate: float = opt(
        0.05,
        "Chance (0-1) of training an image with an empty caption, which helps the LoRA work "
        "without exact prompts.",
        step="regularization",
        level="basic",
        affects=("quality",),
        ge=0.0,
        le=1.0,
    )
    is_reg: bool = opt(
        False,
        "This dataset holds regularisation images (generic images of the class) that keep the "
        "model from forgetting what the class looks like.",
        step="regularization",
        affects=("quality", "speed"),
    )
    loss_multiplier: float = opt(
        1.0,
        "Weight of this dataset's images in the loss (e.g. 0.5 for regularisation images).",
        step="regularization",
        ge=0.0,
        le=10.0,
    )
    resolution: list[Annotated[int, Field(ge=64, le=4096)]] = opt(
        [512],
        "Training resolution(s) in pixels. Several values train at several sizes. Use the "
        "model's native size (512 SD1.5, 1024 SDXL/Flux) unless memory is short.",
        step="resolution",
        level="basic",
        affects=("quality", "memory", "speed"),
        min_length=1,
        max_length=8,
    )
    enable_bucketing: bool = opt(
        True,
        "Group images by aspect ratio instead of cropping everything square.",
        step="resolution",
        affects=("quality",),
    )
    bucket_no_upscale: bool = opt(
        False,
        "Never upscale small images to fill a bucket; they train at their own size.",
        step="resolution",
        level="expert",
        affects=("quality",),
    )
    flip_x: bool = opt(
        False,
        "Also train on left-right mirrored images (doubles variety). Off for asymmetric "
        "subjects: faces with a parting, text, logos.",
        step="resolution",
        level="basic",
        affects=("quality",),
    )
    flip_y: bool = opt(
        False,
        "Also train on upside-down images. Rarely wanted except for textures.",
        step="resolution",
        affects=("quality",),
    )
    random_crop: bool = opt(
        False,
        "Crop a random region instead of the centre when an image does not fit its bucket.",
        step="resolution",
        affects=("quality",),
    )
    random_scale: bool = opt(
        False,
        "Randomly zoom in (up to 25%) before cropping, for variety in framing.",
        step="resolution",
        affects=("quality",),
    )
    augmentations: list[Augmentation] = opt(
        [],
        "Extra random changes to images while training. Turns latent caching off for this "
        "dataset, because cached latents cannot change (flips alone are cached per variant); "
        "the run log says which.",
        step="resolution",
        affects=("quality", "speed"),
        max_length=16,
    )
    cache_latents: bool = opt(
        False,
        "Encode each image with the VAE once and reuse it: much faster steps and the VAE can "
        "leave the GPU.",
        step="resolution",
        level="basic",
        affects=("speed", "memory"),
    )
    cache_latents_to_disk: bool = opt(
        False,
        "Keep the latent cache on disk so later runs reuse it and RAM stays free. Implies "
        "cache_latents.",
        step="memory",
        affects=("speed", "disk"),
    )
    mask_path: str | None = opt(
        None,
        "Folder of mask images (same names as the images; white = learn, black = ignore) for "
        "masked training.",
        step="dataset",
        level="expert",
        affects=("quality",),
    )
    alpha_mask: bool = opt(
        False,
        "Use each image's transparency as its mask (transparent = ignore).",
        step="dataset",
        level="expert",
        affects=("quality",),
    )
    invert_mask: bool = opt(
        False,
        "Swap learned and ignored areas of the masks.",
        step="dataset",
        level="expert",
    )
    mask_min_value: float = opt(
        0.0,
        "Loss weight (0-1) kept in masked-out areas; 0 ignores them entirely.",
        step="dataset",
        level="expert",
        ge=0.0,
        le=1.0,
    )
    control_path: str | list[str] | None = opt(
        None,
        "Control images (pose, depth, edges...) paired with the training images, for "
        "control or edit models. Up to three folders.",
        step="dataset",
        level="expert",
    )

    @field_validator("control_path")
    @classmethod
    def _at_most_three_controls(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > 3:
            raise ValueError("at most three control folders")
        return value
