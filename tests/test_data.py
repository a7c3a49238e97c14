"""The data pipeline: scanning, captions, buckets, transforms, batches and the report.

Every test builds its own small images with PIL in tmp_path, so nothing here waits for the demo
models; one test also scans the generated demo dataset.
"""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from trainer.config.sections.datasets import DatasetConfig
from trainer.data import scanning
from trainer.data.batches import BucketBatches, build_report
from trainer.data.buckets import (
    assign_bucket,
    batches_per_epoch,
    bucket_for,
    make_buckets,
    steps_per_epoch,
)
from trainer.data.captions import build_caption
from trainer.data.scanning import DatasetError, DatasetScan, check_enough, scan_dataset


# ------------------------------------------------------------------------------------- helpers
def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


def x_gradient(width: int, height: int) -> np.ndarray:
    """uint8 (height, width) array whose value is 2 × the column: positions are readable."""
    return np.tile((np.arange(width) * 2).astype(np.uint8), (height, 1))


def put(folder: Path, name: str, image: Image.Image | None = None, caption: str | None = None):
    folder.mkdir(parents=True, exist_ok=True)
    (image or noise(64, 64)).save(folder / name)
    if caption is not None:
        (folder / Path(name).with_suffix(".txt").name).write_text(caption, encoding="utf-8")
    return folder / name


def png_bytes(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def config(folder: Path, **overrides) -> DatasetConfig:
    values = {"folder_path": str(folder), "resolution": [64], "caption_dropout_rate": 0.0}
    return DatasetConfig(**(values | overrides))


def scan(folder: Path, **overrides) -> DatasetScan:
    return scan_dataset(config(folder, **overrides), folder)


def mixed_folder(folder: Path, square: int = 5, wide: int = 3, tall: int = 1) -> Path:
    """Images in three aspect ratios, each with a caption."""
    sizes = [(64, 64)] * square + [(128, 64)] * wide + [(64, 128)] * tall
    for i, (w, h) in enumerate(sizes):
        put(folder, f"img_{i:02d}.png", noise(w, h, seed=i), caption=f"tag{i}, red, round")
    return folder


# ------------------------------------------------------------------------------------ scanning
def test_scan_skips_and_reports_every_bad_file_by_name(tmp_path, monkeypatch):
    folder = tmp_path / "ds"
    put(folder, "a.png", caption="a red square")
    put(folder, "b.jpg")
    put(folder, "c.webp", caption="third")
    put(folder, "d.bmp", caption="fourth")
    (folder / "zero.png").write_bytes(b"")
    whole_png = png_bytes(noise(64, 64, seed=1))
    (folder / "truncated.png").write_bytes(whole_png[: len(whole_png) // 2])
    whole_jpg = png_bytes(noise(64, 64, seed=2), "JPEG")
    (folder / "cut.jpg").write_bytes(whole_jpg[: len(whole_jpg) // 2])
    (folder / "garbage.jpg").write_bytes(bytes(random.Random(0).randrange(256) for _ in range(500)))
    (folder / "text_named.png").write_text("I am not a picture", encoding="utf-8")
    noise(16, 16).save(folder / "anim.gif")
    (folder / "notes.md").write_text("# notes", encoding="utf-8")
    (folder / "orphan.txt").write_text("caption of nothing", encoding="utf-8")
    (folder / ".DS_Store").write_bytes(b"\0")  # hidden: ignored, not reported
    monkeypatch.setattr(scanning, "MAX_PIXELS", 100 * 100)
    put(folder, "huge.png", noise(120, 100))

    result = scan(folder, default_caption="a photo")

    assert sorted(info.path.name for info in result.images) == ["a.png", "b.jpg", "c.webp", "d.bmp"]
    reasons = dict(result.skipped)
    assert set(reasons) == {
        "zero.png",
        "truncated.png",
        "cut.jpg",
        "garbage.jpg",
        "text_named.png",
        "anim.gif",
        "notes.md",
        "orphan.txt",
        "huge.png",
    }
    assert "0 bytes" in reasons["zero.png"]
    assert reasons["truncated.png"].startswith("corrupt or truncated")
    assert reasons["cut.jpg"].startswith("corrupt or truncated")
    assert reasons["garbage.jpg"].startswith("not an image")
    assert reasons["text_named.png"].startswith("not an image")
    assert "unsupported image format .gif" in reasons["anim.gif"]
    assert reasons["notes.md"] == "not an image file"
    assert "no image" in reasons["orphan.txt"]
    assert "120×100" in reasons["huge.png"] and "too large" in reasons["huge.png"]
    captions = {info.path.name: info.caption for info in result.images}
    assert captions == {
        "a.png": "a red square",
        "b.jpg": "a photo",
        "c.webp": "third",
        "d.bmp": "fourth",
    }
    assert {info.path.name for info in result.images if info.caption_from_file} == {
        "a.png",
        "c.webp",
        "d.bmp",
    }


def test_scan_records_size_and_content_hash(tmp_path):
    folder = tmp_path / "ds"
    put(folder, "wide.png", noise(96, 64))
    put(folder, "same.png", noise(96, 64))  # same pixels, same bytes
    put(folder, "other.png", noise(96, 64, seed=5))
    infos = {info.path.name: info for info in scan(folder).images}
    assert (infos["wide.png"].width, infos["wide.png"].height) == (96, 64)
    assert infos["wide.png"].content_hash == infos["same.png"].content_hash
    assert infos["wide.png"].content_hash != infos["other.png"].content_hash
    assert len(infos["wide.png"].content_hash) == 64


def test_exif_rotated_photo_is_measured_as_shown(tmp_path):
    folder = tmp_path / "ds"
    folder.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90°": stored 96×64, shown 64×96
    noise(96, 64).save(folder / "phone.jpg", exif=exif)
    info = scan(folder).images[0]
    assert (info.width, info.height) == (64, 96)


def test_non_utf8_caption_falls_back_to_default_and_is_reported(tmp_path):
    folder = tmp_path / "ds"
    put(folder, "a.png")
    (folder / "a.txt").write_bytes("café, naïve".encode("latin-1"))
    put(folder, "b.png")
    (folder / "b.txt").write_bytes("\ufeffbom caption,  spaced\n\nout".encode())
    result = scan(folder, default_caption="fallback")
    captions = {info.path.name: info.caption for info in result.images}
    assert captions == {"a.png": "fallback", "b.png": "bom caption, spaced out"}
    assert [name for name, _ in result.notes] == ["a.txt"]
    assert "UTF-8" in result.notes[0][1]


def test_caption_extension_is_configurable(tmp_path):
    folder = tmp_path / "ds"
    put(folder, "a.png")
    (folder / "a.caption").write_text("from caption file", encoding="utf-8")
    (folder / "a.txt").write_text("not this one", encoding="utf-8")
    result = scan(folder, caption_ext="caption")
    assert result.images[0].caption == "from caption file"
    assert ("a.txt", "not an image file") in result.skipped


# --------------------------------------------------------------------------- errors that stop
def test_missing_folder_is_an_error_naming_it(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetError, match="does not exist") as err:
        scan(missing)
    assert str(missing) in str(err.value)


def test_empty_folder_is_an_error(tmp_path):
    (tmp_path / "ds").mkdir()
    with pytest.raises(DatasetError, match=r"no images found in .*ds: the folder is empty"):
        scan(tmp_path / "ds")
    (tmp_path / "ds" / "10_cat").mkdir()
    with pytest.raises(DatasetError, match=r"no files directly in the folder.*10_cat/"):
        scan(tmp_path / "ds")


def test_folder_without_images_lists_counts_and_names(tmp_path):
    folder = tmp_path / "ds"
    folder.mkdir()
    for name in ("a.txt", "b.md", "c.csv"):
        (folder / name).write_text("x", encoding="utf-8")
    (folder / "10_cat").mkdir()
    with pytest.raises(DatasetError) as err:
        scan(folder)
    message = str(err.value)
    assert (
        f"no images found in {folder}: 3 files, none of them images (a.txt, b.md, c.csv)" in message
    )
    assert "10_cat/" in message  # images in sub-folders are not read: say so


def test_folder_of_only_broken_images_names_them_with_reasons(tmp_path):
    folder = tmp_path / "ds"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"")
    (folder / "b.jpg").write_bytes(b"nope")
    with pytest.raises(DatasetError) as err:
        scan(folder)
    message = str(err.value)
    assert "2 image files, none usable" in message
    assert "a.png: empty file" in message and "b.jpg: not an image" in message


def test_two_images_with_one_name_is_an_error(tmp_path):
    folder = tmp_path / "ds"
    put(folder, "a.png", caption="x")
    put(folder, "a.jpg")
    put(folder, "b.png")
    with pytest.raises(DatasetError, match="ambiguous") as err:
        scan(folder)
    assert "a.jpg + a.png" in str(err.value) and "1 name(s)" in str(err.value)


def test_too_small_dataset_is_an_error_with_counts(tmp_path):
    result = scan(mixed_folder(tmp_path / "ds", square=3, wide=0, tall=0))
    with pytest.raises(DatasetError) as err:
        check_enough([result], 2, 2)
    message = str(err.value)
    assert "3 usable images × 1 repeats = 3 per epoch" in message
    assert "batch_size 2 × gradient_accumulation_steps 2 needs 4" in message
    check_enough([result], 3, 1)  # exactly enough
    repeated = scan(tmp_path / "ds", num_repeats=2)
    check_enough([repeated], 2, 3)  # 3 × 2 = 6 items fill 2 × 3


# -------------------------------------------------------------------------------------- masks
def test_missing_mask_skips_the_image_and_says_where(tmp_path):
    folder, masks = tmp_path / "ds", tmp_path / "masks"
    put(folder, "a.png")
    put(folder, "b.png")
    put(masks, "a.png", Image.new("L", (64, 64), 255))
    result = scan(folder, mask_path=str(masks))
    assert [info.path.name for info in result.images] == ["a.png"]
    assert result.images[0].mask_path == masks / "a.png"
    assert result.skipped == [("b.png", f"no mask named b.* in {masks}")]
    with pytest.raises(DatasetError, match=r"mask folder .* does not exist"):
        scan(folder, mask_path=str(tmp_path / "missing"))


def test_alpha_mask_uses_transparency(tmp_path):
    folder = tmp_path / "ds"
    rgba = np.zeros((64, 64, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[:, 32:, 3] = 255  # left half transparent
    put(folder, "cut.png", Image.fromarray(rgba, "RGBA"))
    put(folder, "opaque.png")
    ds = config(folder, alpha_mask=True, mask_min_value=0.25)
    result = scan_dataset(ds, folder)
    assert result.notes == [("opaque.png", "no transparency: trained without a mask")]
    data = BucketBatches([result], batch_size=1, size_multiple=8)
    items = {Path(data[i]["path"]).name: data[i] for i in range(len(data))}
    mask = items["cut.png"]["mask"]
    assert mask.shape == (1, 64, 64)
    assert torch.allclose(mask[:, :, :32], torch.tensor(0.25))
    assert torch.allclose(mask[:, :, 32:], torch.tensor(1.0))
    assert torch.equal(items["opaque.png"]["mask"], torch.ones(1, 64, 64))
    # Transparent pixels are composited on white, not their hidden colour.
    assert torch.allclose(items["cut.png"]["pixels"][:, :, :32], torch.tensor(1.0))


# ------------------------------------------------------------------------------------ captions
def caption_config(**overrides) -> DatasetConfig:
    return DatasetConfig(**({"caption_dropout_rate": 0.0} | overrides))


def test_trigger_is_prepended_once_and_placeholders_filled():
    ds, rng = caption_config(), random.Random(0)
    assert build_caption("a dog, grass", ds, rng, trigger="sks") == "sks, a dog, grass"
    assert build_caption("photo of sks dog", ds, rng, trigger="sks") == "photo of sks dog"
    assert build_caption("[trigger] in a hat", ds, rng, trigger="sks") == "sks in a hat"
    assert build_caption("tasks, dog", ds, rng, trigger="sks") == "sks, tasks, dog"
    assert build_caption("", ds, rng, trigger="sks") == "sks"
    once = build_caption("a dog", ds, rng, trigger="sks")
    assert build_caption(once, ds, rng, trigger="sks") == once == "sks, a dog"
    assert build_caption("[trigger] dog,  grass", ds, rng, trigger=None) == "dog, grass"


def test_keep_tokens_stay_in_place_while_the_rest_shuffles():
    tags = [f"t{i}" for i in range(10)]
    ds, rng = caption_config(keep_tokens=2, shuffle_tokens=True), random.Random(1)
    orders = set()
    for _ in range(50):
        out = build_caption(", ".join(tags), ds, rng, trigger="sks").split(", ")
        assert out[:3] == ["sks", "t0", "t1"]  # prepended trigger, then the kept tags
        assert sorted(out[3:]) == sorted(tags[2:])  # same set, only the order changes
        orders.add(tuple(out))
    assert len(orders) > 30


def test_shuffle_off_keeps_order():
    ds = caption_config(shuffle_tokens=False)
    assert build_caption("c, b, a", ds, random.Random(0), trigger=None) == "c, b, a"


def test_caption_dropout_rate_is_honoured():
    ds, rng = caption_config(caption_dropout_rate=0.3), random.Random(2)
    empty = sum(build_caption("sks, dog", ds, rng, trigger="sks") == "" for _ in range(2000))
    assert 0.25 < empty / 2000 < 0.35


def test_token_dropout_spares_kept_tags_and_the_trigger():
    tags = ", ".join(["keep", "dog with sks"] + [f"t{i}" for i in range(10)])
    ds, rng = caption_config(keep_tokens=1, token_dropout_rate=0.25), random.Random(3)
    kept = 0
    for _ in range(2000):
        out = build_caption(tags, ds, rng, trigger="sks").split(", ")
        assert out[0] == "keep" and "dog with sks" in out
        kept += len(out) - 2
    assert 0.72 < kept / (2000 * 10) < 0.78


def test_captions_are_reproducible_from_the_seed():
    ds = caption_config(shuffle_tokens=True, token_dropout_rate=0.2, caption_dropout_rate=0.1)
    raw = ", ".join(f"t{i}" for i in range(8))

    def draws(seed: int) -> list[str]:
        rng = random.Random(seed)
        return [build_caption(raw, ds, rng, trigger="sks") for _ in range(20)]

    assert draws(7) == draws(7)
    assert draws(7) != draws(8)


# ------------------------------------------------------------------------------------- buckets
@pytest.mark.parametrize(
    ("resolution", "multiple"), [(64, 8), (512, 8), (768, 8), (1024, 8), (1024, 16), (512, 16)]
)
def test_buckets_are_multiples_with_the_right_area(resolution, multiple):
    buckets = make_buckets(resolution, multiple)
    assert (resolution, resolution) in buckets
    assert len(buckets) >= 5
    for width, height in buckets:
        assert width % multiple == 0 and height % multiple == 0
        assert abs(width * height / resolution**2 - 1) <= 0.15
        assert max(width / height, height / width) <= 2.0
        assert (height, width) in buckets  # every wide bucket has its tall mirror


def test_images_land_in_the_bucket_of_their_shape():
    buckets = make_buckets(512, 8)
    wide = assign_bucket(2048, 1024, buckets)
    assert wide == max(buckets, key=lambda b: b[0] / b[1])
    assert wide[0] / wide[1] > 1.8
    tall = assign_bucket(600, 1200, buckets)
    assert tall[1] / tall[0] > 1.8
    assert assign_bucket(700, 690, buckets) == (512, 512)
    assert 1.4 < (lambda b: b[0] / b[1])(assign_bucket(1500, 1000, buckets)) < 1.6


def test_bucketing_off_trains_everything_square():
    assert bucket_for(2048, 1024, 512, 8, enable_bucketing=False) == (512, 512)
    assert bucket_for(100, 300, 512, 8, enable_bucketing=False) == (512, 512)
    assert bucket_for(100, 300, 512, 8, enable_bucketing=False, no_upscale=True) == (96, 96)


def test_no_upscale_keeps_small_images_at_their_own_size():
    assert bucket_for(200, 100, 512, 8, no_upscale=True) == (200, 96)
    assert bucket_for(2048, 1024, 512, 8, no_upscale=True) == bucket_for(2048, 1024, 512, 8)
    width, _ = bucket_for(200, 100, 512, 8)
    assert width > 200  # without no_upscale the small image is enlarged to a full bucket


def test_steps_per_epoch_matches_hand_computation():
    counts = {(64, 64): 5, (72, 56): 3, (56, 72): 1}
    # batch 2: ceil(5/2) + ceil(3/2) + ceil(1/2) = 3 + 2 + 1 = 6 batches
    assert batches_per_epoch(counts, 2) == 6
    assert steps_per_epoch(counts, 2) == 6
    assert steps_per_epoch(counts, 2, grad_accum=4) == 2  # ceil(6 / 4)
    # repeats 3: ceil(15/2) + ceil(9/2) + ceil(3/2) = 8 + 5 + 2 = 15; accum 2 -> 8
    assert steps_per_epoch(counts, 2, grad_accum=2, repeats=3) == 8
    assert steps_per_epoch([4, 4], 4) == 2  # a plain list of counts works too


def test_batches_match_the_step_arithmetic(tmp_path):
    result = scan(mixed_folder(tmp_path / "ds"), num_repeats=2)
    data = BucketBatches([result], batch_size=2, seed=0, size_multiple=8)
    assert sorted(data.bucket_counts.values()) == [2, 6, 10]  # (1, 3, 5 images) × 2 repeats
    assert data.batches_per_epoch == 1 + 3 + 5 == len(data.batches_for_epoch(0))
    assert data.steps_per_epoch(grad_accum=2) == 5


# ---------------------------------------------------------------------------------- transforms
def test_items_have_their_bucket_shape_and_range(tmp_path):
    result = scan(mixed_folder(tmp_path / "ds"))
    data = BucketBatches([result], batch_size=2, size_multiple=8)
    for index in range(len(data)):
        item = data[index]
        width, height = item["bucket"]
        assert item["pixels"].shape == (3, height, width)
        assert item["pixels"].dtype == torch.float32
        assert item["pixels"].min() >= -1.0 and item["pixels"].max() <= 1.0
        assert item["target_size"] == (height, width)
        assert item["mask"] is None and item["unaugmented"] is None


def test_pixels_are_the_image_scaled_to_minus_one_one(tmp_path):
    image = noise(64, 64, seed=3)
    put(tmp_path / "ds", "a.png", image)
    item = BucketBatches([scan(tmp_path / "ds")], batch_size=1)[0]
    expected = torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255 * 2 - 1
    assert torch.allclose(item["pixels"], expected, atol=1e-6)
    assert item["original_size"] == (64, 64) and item["crop_top_left"] == (0, 0)


def test_flip_x_output_is_the_mirrored_input(tmp_path):
    put(tmp_path / "ds", "a.png", noise(64, 64, seed=4))
    data = BucketBatches([scan(tmp_path / "ds", flip_x=True)], batch_size=1, seed=0)
    by_flip = {}
    for epoch in range(20):
        item = data[(epoch, 0)]
        by_flip.setdefault(item["plan"].flip_x, item["pixels"])
    assert set(by_flip) == {False, True}  # flipped about half the time
    assert torch.equal(by_flip[True], by_flip[False].flip(-1))


def crop_and_mask_folder(tmp_path: Path) -> tuple[Path, Path]:
    """A 128×64 image whose red channel and mask both encode the column: x * 2."""
    folder, masks = tmp_path / "ds", tmp_path / "masks"
    gradient = x_gradient(128, 64)
    rgb = np.stack([gradient, np.zeros_like(gradient), np.full_like(gradient, 77)], axis=-1)
    put(folder, "a.png", Image.fromarray(rgb, "RGB"))
    put(masks, "a.png", Image.fromarray(gradient, "L"))
    return folder, masks


def test_mask_follows_the_same_crop_and_flip(tmp_path):
    folder, masks = crop_and_mask_folder(tmp_path)
    ds = config(folder, mask_path=str(masks), random_crop=True, flip_x=True, enable_bucketing=False)
    data = BucketBatches([scan_dataset(ds, folder)], batch_size=1, seed=0)
    lefts, flips = set(), set()
    for epoch in range(12):
        item = data[(epoch, 0)]
        red, mask = (item["pixels"][0] + 1) / 2, item["mask"][0]
        assert mask.shape == (64, 64)
        assert torch.allclose(mask, red, atol=1e-6)  # same pixels moved the same way
        top, left = item["crop_top_left"]
        flipped = item["plan"].flip_x
        first_column = left + (63 if flipped else 0)  # source column now at output x = 0
        assert red[0, 0].item() == pytest.approx(first_column * 2 / 255, abs=1e-6)
        assert top == 0
        lefts.add(left)
        flips.add(flipped)
    assert len(lefts) > 3 and flips == {False, True}


def test_mask_follows_rotation_and_crop_scale(tmp_path):
    folder, masks = crop_and_mask_folder(tmp_path)
    augmentations = [
        {"type": "rotate", "probability": 1.0, "strength": 0.5},
        {"type": "crop_scale", "probability": 1.0, "strength": 0.5},
    ]
    ds = config(folder, mask_path=str(masks), augmentations=augmentations, invert_mask=True)
    item = BucketBatches([scan_dataset(ds, folder)], batch_size=1, seed=0)[0]
    red = (item["pixels"][0] + 1) / 2
    assert torch.allclose(item["mask"][0], 1 - red, atol=1e-5)  # inverted, but aligned


AUGMENTATIONS = ["color_jitter", "blur", "rotate", "crop_scale", "flip_x", "flip_y"]


def augmented(tmp_path: Path, kind: str, probability: float, unaugmented: bool = False):
    folder = tmp_path / "ds"
    if not folder.exists():
        put(folder, "a.png", noise(64, 64, seed=6))
    aug = {"type": kind, "probability": probability, "strength": 1.0}
    result = scan(folder, augmentations=[aug])
    return BucketBatches([result], batch_size=1, seed=0, want_unaugmented=unaugmented)[0]


@pytest.mark.parametrize("kind", AUGMENTATIONS)
def test_augmentations_change_pixels_only_when_drawn(tmp_path, kind):
    baseline = augmented(tmp_path, kind, 0.0)
    changed = augmented(tmp_path, kind, 1.0)
    plain = BucketBatches([scan(tmp_path / "ds")], batch_size=1)[0]
    assert torch.equal(baseline["pixels"], plain["pixels"])
    assert (changed["pixels"] - plain["pixels"]).abs().mean() > 0.01
    assert changed["key"] != plain["key"]  # different pixels must never share a cache key
    assert changed["pixels"].min() >= -1.0 and changed["pixels"].max() <= 1.0


def test_unaugmented_skips_colour_changes_but_keeps_geometry(tmp_path):
    plain = augmented(tmp_path, "color_jitter", 0.0)
    jittered = augmented(tmp_path, "color_jitter", 1.0, unaugmented=True)
    assert torch.equal(jittered["unaugmented"], plain["pixels"])
    assert not torch.equal(jittered["pixels"], plain["pixels"])
    rotated = augmented(tmp_path, "rotate", 1.0, unaugmented=True)
    assert torch.equal(rotated["unaugmented"], rotated["pixels"])  # still pixel-aligned
    assert not torch.equal(rotated["unaugmented"], plain["pixels"])


def test_random_scale_zooms_in_at_most_a_quarter(tmp_path):
    put(tmp_path / "ds", "a.png", noise(64, 64))
    data = BucketBatches([scan(tmp_path / "ds", random_scale=True)], batch_size=1, seed=0)
    sizes = {data.describe((epoch, 0))["plan"].resized for epoch in range(20)}
    assert len(sizes) > 3
    assert all(64 <= w <= 80 and w == h for w, h in sizes)


# ------------------------------------------------------------------------------------- batches
def test_every_batch_shares_one_bucket_and_every_entry_appears_once(tmp_path):
    result = scan(mixed_folder(tmp_path / "ds"), num_repeats=2)
    data = BucketBatches([result], batch_size=2, seed=0)
    for epoch in range(3):
        batches = data.batches_for_epoch(epoch)
        for batch in batches:
            assert len({data.entries[index].bucket for _, index in batch}) == 1
            assert all(e == epoch for e, _ in batch) and len(batch) <= 2
        assert sorted(index for batch in batches for _, index in batch) == list(range(len(data)))
    for batch in data.loader(0):
        assert batch["pixels"].shape[0] == len(batch["captions"])  # stacks: one size per batch


def test_batches_are_deterministic_given_seed_and_epoch(tmp_path):
    result = scan(mixed_folder(tmp_path / "ds"), shuffle_tokens=True, flip_x=True)
    first = BucketBatches([result], batch_size=2, seed=3)
    again = BucketBatches([result], batch_size=2, seed=3)
    other = BucketBatches([result], batch_size=2, seed=4)
    assert first.batches_for_epoch(0) == again.batches_for_epoch(0)
    assert first.batches_for_epoch(1) == again.batches_for_epoch(1)
    assert first.batches_for_epoch(0) != first.batches_for_epoch(1)
    assert first.batches_for_epoch(0) != other.batches_for_epoch(0)

    def groups(epoch: int) -> set[frozenset[int]]:
        return {frozenset(i for _, i in batch) for batch in first.batches_for_epoch(epoch)}

    assert groups(0) != groups(1)  # items meet different batch-mates each epoch
    a, b = first[(1, 4)], again[(1, 4)]
    assert a["caption"] == b["caption"] and torch.equal(a["pixels"], b["pixels"])
    assert a["key"] == b["key"]


def test_resume_skips_exactly_the_batches_already_done(tmp_path):
    data = BucketBatches([scan(mixed_folder(tmp_path / "ds"))], batch_size=2, seed=0)
    per_epoch = data.batches_per_epoch
    assert data.resume_position(per_epoch + 2) == (1, 2)
    expected = data.batches_for_epoch(1)[2:]
    seen = [batch["keys"] for batch in data.loader(1, skip_batches=2)]
    assert seen == [[data.describe(key)["key"] for key in batch] for batch in expected]


def test_each_image_appears_once_per_resolution(tmp_path):
    result = scan(mixed_folder(tmp_path / "ds", square=2, wide=1, tall=0), resolution=[64, 96])
    data = BucketBatches([result], batch_size=1)
    assert len(data) == 3 * 2
    per_image = {}
    for entry in data.entries:
        per_image.setdefault(entry.image, set()).add(entry.resolution)
    assert all(resolutions == {64, 96} for resolutions in per_image.values())
    sizes = {data[i]["pixels"].shape[1:] for i in range(len(data))}
    assert (64, 64) in sizes and (96, 96) in sizes


def test_datasets_are_concatenated_with_their_weights(tmp_path):
    main = scan(mixed_folder(tmp_path / "main", square=2, wide=0, tall=0))
    reg = scan(
        mixed_folder(tmp_path / "reg", square=3, wide=0, tall=0), is_reg=True, loss_multiplier=0.5
    )
    data = BucketBatches([main, reg], batch_size=5, seed=0)
    (batch,) = list(data.loader(0))
    by_folder = {
        Path(path).parent.name: (m.item(), r.item())
        for path, m, r in zip(
            batch["paths"], batch["loss_multiplier"], batch["is_reg"], strict=True
        )
    }
    assert by_folder == {"main": (1.0, False), "reg": (0.5, True)}
    assert batch["is_reg"].sum().item() == 3
    assert batch["masks"] is None and batch["unaugmented"] is None


def test_item_keys_follow_content_bucket_and_flip(tmp_path):
    folder = mixed_folder(tmp_path / "ds", square=2, wide=0, tall=0)
    data = BucketBatches([scan(folder, resolution=[64, 96])], batch_size=1)
    keys = [data.describe((0, i))["key"] for i in range(len(data))]
    assert len(set(keys)) == 4  # 2 images × 2 resolutions
    assert data.describe((5, 0))["key"] == keys[0]  # nothing random: the same every epoch
    assert data.describe((0, 0))["cacheable"] is True
    flipping = BucketBatches([scan(folder, flip_x=True)], batch_size=1)
    flip_keys = {flipping.describe((epoch, 0))["key"] for epoch in range(12)}
    assert len(flip_keys) == 2  # plain and mirrored variants


def test_report_summarises_for_mlflow(tmp_path):
    folder = mixed_folder(tmp_path / "ds")
    (folder / "broken.png").write_bytes(b"")
    data = BucketBatches([scan(folder, num_repeats=2)], batch_size=2)
    report = build_report(data, grad_accum=2).to_dict()
    json.dumps(report)  # loggable as-is
    assert report["datasets"][0]["images"] == 9
    assert report["datasets"][0]["items_per_epoch"] == 18
    assert report["skipped"] == [{"file": "ds/broken.png", "reason": "empty file (0 bytes)"}]
    assert sum(report["buckets"].values()) == 18 and "64x64" in report["buckets"]
    assert (report["batches_per_epoch"], report["steps_per_epoch"]) == (9, 5)
    assert "broken.png" in build_report(data).summary()


def test_the_generated_demo_dataset_scans_cleanly(tmp_path):
    tiny = pytest.importorskip("trainer.demo.tiny")
    folder = tiny.build_demo_dataset(tmp_path / "demo")
    result = scan_dataset(config(folder, trigger_word="sks"), folder)
    assert len(result.images) >= 3 and result.skipped == []
    data = BucketBatches([result], batch_size=2)
    assert len(data.bucket_counts) >= 2  # the demo set has several aspect ratios
    assert all(data.describe(i)["caption"].count("sks") == 1 for i in range(len(data)))
