"""Data options: augmentations, flips, random crop / zoom, and what they do to latent caching.

Pixel-level proofs use the data pipeline directly (small PIL images in tmp_path); the caching
proofs train the tiny SD1.5 model through `train()` and read the cache counters, the MLflow tag
and the run log line that says caching was turned off or split per variant.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from options_support import run, tiny_config
from PIL import Image
from pydantic import ValidationError

from trainer.arch.base import Arch
from trainer.config.sections.datasets import DatasetConfig
from trainer.data.batches import BucketBatches, latent_cache_mode
from trainer.data.scanning import scan_dataset

PROVES = {
    "datasets.0.augmentations": [
        "test_each_augmentation_changes_pixels_per_item",
        "test_augmentations_turn_latent_caching_off_and_say_so",
    ],
    "datasets.0.flip_x": [
        "test_flips_mirror_the_pixels",
        "test_flips_cache_latents_per_variant_and_say_so",
    ],
    "datasets.0.flip_y": [
        "test_flips_mirror_the_pixels",
        "test_flips_cache_latents_per_variant_and_say_so",
    ],
    "datasets.0.random_crop": "test_random_crop_and_random_scale_move_the_window",
    "datasets.0.random_scale": "test_random_crop_and_random_scale_move_the_window",
    "datasets.0.cache_latents": "test_augmentations_turn_latent_caching_off_and_say_so",
    "datasets.0.cache_latents_to_disk": "tests/test_trainer.py::test_disk_cache_is_reused_by_a_second_run",
    "datasets.0.folder_path": "test_dataset_settings_reach_every_item",
    "datasets.0.trigger_word": "test_dataset_settings_reach_every_item",
    "datasets.0.caption_ext": "test_dataset_settings_reach_every_item",
    "datasets.0.default_caption": "test_dataset_settings_reach_every_item",
    "datasets.0.num_repeats": "test_dataset_settings_reach_every_item",
    "datasets.0.keep_tokens": "test_dataset_settings_reach_every_item",
    "datasets.0.shuffle_tokens": "test_dataset_settings_reach_every_item",
    "datasets.0.resolution": "test_dataset_settings_reach_every_item",
    "datasets.0.enable_bucketing": "test_dataset_settings_reach_every_item",
    "datasets.0.bucket_no_upscale": "test_dataset_settings_reach_every_item",
    "datasets.0.control_path": "test_schema_refuses_control_images_for_plain_lora",
}

KINDS = ("color_jitter", "blur", "rotate", "crop_scale", "flip_x", "flip_y")


def noise_image(width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    # Smooth-ish noise: blur and rotation visibly change it, jitter changes every pixel.
    small = rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
    return Image.fromarray(small, "RGB").resize((width, height), Image.Resampling.BICUBIC)


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    """Four captioned 64 px images: one epoch is two steps of batch 2."""
    path = tmp_path / "data"
    path.mkdir()
    for i in range(4):
        noise_image(64, 64, seed=i).save(path / f"img{i}.png")
        (path / f"img{i}.txt").write_text(f"sks thing {i}")
    return path


def dataset(folder: Path, **options) -> BucketBatches:
    options = {"resolution": [64], "caption_dropout_rate": 0.0, **options}
    cfg = DatasetConfig(folder_path=str(folder), **options)
    return BucketBatches([scan_dataset(cfg, folder)], batch_size=1, seed=0)


def pixels(data: BucketBatches, epoch: int, index: int) -> torch.Tensor:
    return data[(epoch, index)]["pixels"]


# ------------------------------------------------------------------------------------- pixels
@pytest.mark.parametrize("kind", KINDS)
def test_each_augmentation_changes_pixels_per_item(kind: str, folder: Path) -> None:
    plain = dataset(folder)
    data = dataset(folder, augmentations=[{"type": kind, "probability": 1.0, "strength": 1.0}])
    for index in range(len(data)):
        assert (pixels(data, 0, index) - pixels(plain, 0, index)).abs().mean() > 0.005
    if kind in ("flip_x", "flip_y"):
        dim = -1 if kind == "flip_x" else -2
        torch.testing.assert_close(pixels(data, 0, 0), pixels(plain, 0, 0).flip(dim))
    else:  # a new random draw for every use of an image: epochs differ
        assert not torch.equal(pixels(data, 0, 0), pixels(data, 1, 0))
    half = dataset(folder, augmentations=[{"type": kind, "probability": 0.5, "strength": 1.0}])
    changed = [
        not torch.equal(pixels(half, epoch, 0), pixels(plain, epoch, 0)) for epoch in range(12)
    ]
    assert any(changed) and not all(changed)  # probability: drawn per item


def test_flips_mirror_the_pixels(folder: Path) -> None:
    plain = pixels(dataset(folder), 0, 0)
    for option, dim in (("flip_x", -1), ("flip_y", -2)):
        data = dataset(folder, **{option: True})
        seen = {
            "plain"
            if torch.equal(p, plain)
            else "flipped"
            if torch.equal(p, plain.flip(dim))
            else "other"
            for p in (pixels(data, epoch, 0) for epoch in range(12))
        }
        assert seen == {"plain", "flipped"}, option  # both variants, nothing else


def test_random_crop_and_random_scale_move_the_window(tmp_path: Path) -> None:
    path = tmp_path / "wide"
    path.mkdir()
    noise_image(128, 64, seed=9).save(path / "wide.png")
    # Without bucketing a 128x64 image is cropped to a 64 square: centred unless random_crop.
    fixed = dataset(path, enable_bucketing=False)
    moving = dataset(path, enable_bucketing=False, random_crop=True)
    lefts = {moving.describe((epoch, 0))["plan"].crop_left for epoch in range(12)}
    assert {fixed.describe((epoch, 0))["plan"].crop_left for epoch in range(12)} == {32}
    assert len(lefts) > 3 and all(0 <= left <= 64 for left in lefts)
    assert not torch.equal(pixels(moving, 0, 0), pixels(moving, 1, 0))
    zoomed = dataset(path, enable_bucketing=False, random_scale=True)
    sizes = {zoomed.describe((epoch, 0))["plan"].resized for epoch in range(12)}
    assert len(sizes) > 3 and all(64 <= h <= 80 for _, h in sizes)
    # Either makes an item's pixels unrepeatable, so it is never taken from the latent cache.
    for options in ({"random_crop": True}, {"random_scale": True}):
        cached = dataset(path, cache_latents=True, **options)
        assert cached.describe((0, 0))["cacheable"] is False
        mode, note = latent_cache_mode(cached.scans[0].config)
        assert mode == "off" and next(iter(options)) in note


# ------------------------------------------------------------------------------- caching
def cached_run(folder: Path, home: Path, job: Path, monkeypatch, **options):
    """6 steps (3 epochs) with cache_latents on; returns (tracker, pixels handed to the VAE)."""
    seen: list[torch.Tensor] = []
    real = Arch.encode_images

    def spy(self, pixels, *args, **kwargs):
        seen.append(pixels.detach().clone())
        return real(self, pixels, *args, **kwargs)

    monkeypatch.setattr(Arch, "encode_images", spy)
    ds = {"folder_path": str(folder), "cache_latents": True, **options}
    _, rec = run(tiny_config(datasets=[ds], train={"steps": 6}), home, job)
    monkeypatch.undo()
    return rec, seen


def test_augmentations_turn_latent_caching_off_and_say_so(
    folder: Path, demo_home: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    plain, plain_pixels = cached_run(folder, demo_home, tmp_path / "plain", monkeypatch)
    counters = plain.metrics[6]
    assert counters["cache/latent_misses"] == 4 and counters["cache/latent_hits"] == 8
    assert "dataset.0.latent_cache" not in plain.tags
    assert "latent caching" not in capsys.readouterr().out
    jitter = [{"type": "color_jitter", "probability": 1.0, "strength": 0.5}]
    rec, aug_pixels = cached_run(
        folder, demo_home, tmp_path / "aug", monkeypatch, augmentations=jitter
    )
    counters = rec.metrics[6]
    assert counters["cache/latent_hits"] == 0 and counters["cache/latent_misses"] == 0
    assert [len(pixels) for pixels in aug_pixels] == [2] * 6  # each step's batch, encoded live
    assert not torch.equal(aug_pixels[0], plain_pixels[0])  # the VAE saw augmented pixels
    # Said in the run log, as an MLflow tag and in the dataset report artifact.
    out = capsys.readouterr().out
    assert "latent caching turned OFF" in out and "augmentation color_jitter" in out
    assert rec.tags["dataset.0.latent_cache"] == "off"
    report = json.loads(rec.texts["dataset/report.json"])
    assert report["datasets"][0]["latent_cache"] == "off"
    assert rec.losses() != plain.losses()


def test_flips_cache_latents_per_variant_and_say_so(
    folder: Path, demo_home: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    for option in ("flip_x", "flip_y"):
        rec, _ = cached_run(folder, demo_home, tmp_path / option, monkeypatch, **{option: True})
        counters = rec.metrics[6]
        # Flipped and unflipped copies are cached under their own keys: more than one latent
        # per image is encoded (4 images), at most two, and later uses hit the cache.
        assert 4 < counters["cache/latent_misses"] <= 8, counters
        assert counters["cache/latent_hits"] == 12 - counters["cache/latent_misses"]
        assert rec.tags["dataset.0.latent_cache"] == "per_variant"
        out = capsys.readouterr().out
        assert "latents cached per variant" in out and option in out


# ------------------------------------------------------------------------------- basics
def test_dataset_settings_reach_every_item(tmp_path: Path) -> None:
    path = tmp_path / "basics"
    path.mkdir()
    noise_image(128, 64, seed=1).save(path / "wide.png")
    (path / "wide.caption").write_text("t0, t1, t2, t3, t4, t5")
    (path / "wide.txt").write_text("not this one")
    noise_image(40, 40, seed=2).save(path / "small.png")  # no caption file
    options = {
        "trigger_word": "sks",
        "caption_ext": "caption",
        "default_caption": "a default caption",
        "num_repeats": 3,
        "keep_tokens": 1,
        "shuffle_tokens": True,
        "resolution": [64, 96],
    }
    data = dataset(path, **options)
    assert {Path(e["path"]).parent for e in map(data.describe, range(len(data)))} == {path}
    assert len(data) == 2 * 3 * 2  # images x num_repeats x resolutions
    items = [data.describe((0, i)) for i in range(len(data))]
    wide = [i for i in items if i["path"].endswith("wide.png")]
    small = [i for i in items if i["path"].endswith("small.png")]
    assert {i["caption"] for i in small} == {"sks, a default caption"}
    first_wide = next(i for i in range(len(data)) if items[i]["path"].endswith("wide.png"))
    orders = {tuple(data.describe((e, first_wide))["caption"].split(", ")) for e in range(10)}
    assert all(
        o[:2] == ("sks", "t0") and sorted(o[2:]) == ["t1", "t2", "t3", "t4", "t5"] for o in orders
    )
    assert len(orders) > 3  # shuffled after the kept tag (and the trigger in front)
    assert {i["resolution"] for i in wide} == {64, 96}
    assert {i["bucket"][0] > i["bucket"][1] for i in wide} == {True}  # a wide bucket
    assert {i["bucket"] for i in small} == {(64, 64), (96, 96)}  # enlarged to the bucket
    square = dataset(path, enable_bucketing=False)
    assert {square.describe(i)["bucket"] for i in range(len(square))} == {(64, 64)}
    own = dataset(path, bucket_no_upscale=True)
    sizes = {Path(own.describe(i)["path"]).name: (i, own.describe(i)["bucket"]) for i in range(2)}
    index, bucket = sizes["small.png"]
    assert bucket == (40, 40) and pixels(own, 0, index).shape[1:] == (40, 40)  # not enlarged


def test_schema_refuses_control_images_for_plain_lora(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as info:
        tiny_config(datasets=[{"control_path": str(tmp_path)}])
    assert "datasets.0.control_path" in str(info.value)
    assert "control or edit model" in str(info.value)
