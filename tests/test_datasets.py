"""Dataset manager: safe uploads, analysis, near-duplicates, undoable removal, atomic captions."""

from __future__ import annotations

import io
import json
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trainer.config.sections.datasets import DatasetConfig
from trainer.data import library as dm
from trainer.data.scanning import scan_dataset


def png(width: int, height: int, seed: int = 0, mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(seed)
    # smooth random image (blocks), so resizing keeps its structure
    small = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
    image = Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC)
    if mode != "RGB":
        image = image.convert(mode)
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def make_zip(entries: dict[str, bytes], symlink: str | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in entries.items():
            z.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            z.writestr(info, "/etc/passwd")
    return buf.getvalue()


def empty(root: Path) -> bool:
    return not root.exists() or list(root.iterdir()) == []


@pytest.fixture()
def dataset(tmp_path: Path) -> Path:
    files = {
        "sub/a.png": png(640, 512, 1),
        "sub/a.txt": "sks, dog, grass",
        "b.png": png(512, 768, 2),
        "b.txt": "cat, sks",
        "c.png": png(256, 256, 3, "L"),
        "d.png": png(600, 600, 4, "RGBA"),
        "notes.pdf": b"%PDF-1.4",
    }
    result = dm.import_zip(tmp_path / "datasets", "pets", make_zip(files))
    assert sorted(result.images) == ["a.png", "b.png", "c.png", "d.png"]
    assert result.skipped == [("notes.pdf", "not an image or caption file")]
    return result.folder


@pytest.mark.parametrize(
    "bad", ["../evil.png", "/abs/evil.png", "ok/../../evil.png", "C:/evil.png", "a\\..\\e.png"]
)
def test_zip_slip_is_refused_and_nothing_is_written(tmp_path: Path, bad: str) -> None:
    upload = make_zip({"fine.png": png(64, 64), bad: png(64, 64)})
    with pytest.raises(dm.DatasetUploadError, match="unsafe path"):
        dm.import_zip(tmp_path / "datasets", "x", upload)
    assert not (tmp_path / "evil.png").exists()
    assert empty(tmp_path / "datasets")


def test_symlinks_oversized_and_too_many_files_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "datasets"
    with pytest.raises(dm.DatasetUploadError, match="symlink"):
        dm.import_zip(root, "x", make_zip({"a.png": png(64, 64)}, symlink="link.png"))
    big = png(64, 64)
    limits = dm.Limits(max_files=3, max_file_bytes=len(big) - 1, max_total_bytes=10**9)
    with pytest.raises(dm.DatasetUploadError, match="file limit"):
        dm.import_zip(root, "x", make_zip({"a.png": big}), limits)
    with pytest.raises(dm.DatasetUploadError, match="file limit"):
        dm.import_files(root, "x", [("a.png", big)], limits)
    limits = dm.Limits(max_files=3, max_file_bytes=10**9, max_total_bytes=2 * len(big))
    with pytest.raises(dm.DatasetUploadError, match="MB limit"):
        dm.import_zip(root, "x", make_zip({f"{i}.png": png(64, 64, i) for i in range(3)}), limits)
    limits = dm.Limits(max_files=2)
    with pytest.raises(dm.DatasetUploadError, match="more than 2 files"):
        dm.import_files(root, "x", [(f"{i}.png", png(64, 64, i)) for i in range(3)], limits)
    with pytest.raises(dm.DatasetUploadError, match="dataset name"):
        dm.import_files(root, "../up", [("a.png", big)])
    assert empty(root)


def test_folder_import_and_listing(tmp_path: Path, dataset: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "x.png").write_bytes(png(64, 64))
    (source / "x.txt").write_text("hello")
    (source / "broken.png").write_bytes(b"not a png")
    (source / "link.png").symlink_to(source / "x.png")
    result = dm.import_folder(tmp_path / "datasets", "copy", source)
    assert result.images == ["x.png"]
    assert ("broken.png", "not a readable image") in result.skipped
    assert ("link.png", "symlink") in result.skipped
    (tmp_path / "datasets" / "bare").mkdir()  # a folder put there by hand: listed too
    (tmp_path / "datasets" / ".pets.staging").mkdir()  # an upload being built: not listed
    names = [d["name"] for d in dm.list_datasets(tmp_path / "datasets")]
    assert names == ["bare", "copy", "pets"]
    with pytest.raises(dm.DatasetUploadError, match="already exists"):
        dm.import_folder(tmp_path / "datasets", "copy", source)


def test_analysis_counts_captions_and_flags(dataset: Path) -> None:
    report = dm.analyse(dataset, min_side=300)
    assert report["images"] == 4
    assert report["captioned"] == 2
    assert report["caption_coverage"] == 0.5
    assert report["caption_style"] == "tags"
    assert report["tag_frequency"]["sks"] == 2
    rows = {r["image"]: r for r in report["rows"]}
    assert rows["a.png"]["aspect"] == 1.25
    assert "buckets" not in rows["a.png"]  # buckets follow the training settings: ui.datasets
    assert report["flagged"] == {"c.png": ["too small", "grayscale"], "d.png": ["alpha"]}


def test_near_duplicates_find_a_resized_copy(tmp_path: Path) -> None:
    base = Image.open(io.BytesIO(png(512, 512, 7)))
    copy = io.BytesIO()
    base.resize((300, 300)).save(copy, "JPEG", quality=85)
    files = [("orig.png", png(512, 512, 7)), ("copy.jpg", copy.getvalue())]
    files += [(f"other{i}.png", png(512, 512, 20 + i)) for i in range(4)]
    folder = dm.import_files(tmp_path / "datasets", "d", files).folder
    for method in ("phash", "dhash"):
        pairs = dm.near_duplicates(folder, threshold=6, method=method)
        assert [(p["a"], p["b"]) for p in pairs] == [("copy.jpg", "orig.png")], method
        assert pairs[0]["distance"] <= 4


def test_removal_moves_aside_and_undo_restores(dataset: Path) -> None:
    before = sorted(p.name for p in dataset.iterdir())
    batch = dm.remove_images(dataset, ["a.png", "c.png"])
    assert not (dataset / "a.png").exists() and not (dataset / "a.txt").exists()
    assert sorted(p.name for p in (dataset / ".removed" / batch).iterdir()) == [
        "a.png",
        "a.txt",
        "c.png",
    ]
    assert [p.name for p in dm.images_in(dataset)] == ["b.png", "d.png"]
    assert sorted(dm.undo_removal(dataset)) == ["a.png", "a.txt", "c.png"]
    assert sorted(p.name for p in dataset.iterdir() if p.name != ".removed") == before
    scan = scan_dataset(DatasetConfig(folder_path=str(dataset)), dataset)  # what training sees
    assert (len(scan.images), scan.skipped) == (4, [])
    assert json.loads((dataset / dm.MANIFEST).read_text())["removals"] == []
    assert dm.undo_removal(dataset) == []
    with pytest.raises(dm.DatasetUploadError):
        dm.remove_images(dataset, ["../x.png"])


def test_caption_edits(dataset: Path) -> None:
    assert dm.bulk_edit(dataset, lambda c: dm.insert_trigger(c, "sks")) == 2  # c and d were empty
    caps = dm.read_captions(dataset)
    assert caps == {"a.png": "sks, dog, grass", "b.png": "cat, sks", "c.png": "sks", "d.png": "sks"}
    dm.bulk_edit(dataset, lambda c: dm.replace_text(c, "dog", "puppy"))
    dm.bulk_edit(dataset, lambda c: dm.remove_tags(c, ["GRASS"]))
    dm.bulk_edit(dataset, lambda c: dm.sort_tags(c))
    dm.set_caption(dataset, "d.png", "  a red ball  ")
    caps = dm.read_captions(dataset)
    assert caps == {
        "a.png": "puppy, sks",
        "b.png": "cat, sks",
        "c.png": "sks",
        "d.png": "a red ball",
    }
    assert dm.sort_tags("sks, b, a", keep_first=1) == "sks, a, b"


def test_a_crash_mid_save_leaves_the_caption_intact(dataset: Path, monkeypatch) -> None:
    original = (dataset / "a.txt").read_text()

    def crash(src, dst):
        raise OSError("power cut")

    monkeypatch.setattr(dm.os, "replace", crash)
    with pytest.raises(OSError, match="power cut"):
        dm.set_caption(dataset, "a.png", "something else")
    assert (dataset / "a.txt").read_text() == original
    assert [p.name for p in dataset.iterdir() if p.name.endswith(".tmp")] == []
