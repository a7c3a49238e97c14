"""Faults (issue 16, item 2): what a user uploads or types gives a plain message, never a
traceback in the browser. Damaged zips, an image that passes ``verify()`` but cannot be decoded
(imported, or already in a dataset), a non-LoRA file in the utilities; and the mechanism behind
them: one error boundary per page, and Streamlit told to show no error details."""

from __future__ import annotations

import io
import logging
import struct
import subprocess
import sys
import tomllib
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from streamlit.testing.v1 import AppTest
from ui_support import run_ok as run
from ui_support import texts

from trainer.cli import main
from trainer.data import library as dm

ROOT = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------------ the bad inputs
def png(seed: int = 0, size: int = 64) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def undecodable_png(size: int = 64) -> bytes:
    """A valid PNG structure with correct checksums whose IDAT holds far too few pixels: PIL's
    ``verify()`` passes, decoding fails ("image file is truncated")."""
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00" * 10)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", pixels)
        + _chunk(b"IEND", b"")
    )


def test_the_png_passes_verify_but_does_not_decode() -> None:
    data = undecodable_png()
    with Image.open(io.BytesIO(data)) as image:
        image.verify()
    with pytest.raises(OSError, match="truncated"), Image.open(io.BytesIO(data)) as image:
        image.load()


def zipped(members: dict[str, bytes], method: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=method) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _patch(data: bytes, offset: int, value: bytes) -> bytes:
    return data[:offset] + value + data[offset + len(value) :]


def bad_zips() -> dict[str, bytes]:
    image = png(1)
    good = zipped({"a.png": image, "a.txt": b"a caption"})
    central = good.find(b"PK\x01\x02")  # the first member's central directory entry
    at = good.find(image)  # stored, so the image's bytes are in the zip as they are
    deflated = zipped({"a.png": image}, zipfile.ZIP_DEFLATED)
    data_at = 30 + len("a.png")  # the deflate stream after the first local header
    flags = struct.unpack_from("<H", good, 6)[0] | 0x1  # bit 0: encrypted
    return {
        "truncated": good[: len(good) // 2],
        "bad crc": _patch(good, at + 100, bytes([good[at + 100] ^ 0xFF])),
        "corrupt deflate": _patch(deflated, data_at + 20, b"\xff" * 16),
        "encrypted": _patch(_patch(good, 6, struct.pack("<H", flags)), central + 8,
                            struct.pack("<H", flags)),
        "unsupported method": _patch(_patch(good, 8, struct.pack("<H", 1)), central + 10,
                                     struct.pack("<H", 1)),  # 1: "shrink", long obsolete
    }  # fmt: skip


BAD_ZIPS = bad_zips()
ZIP_MESSAGES = {
    "truncated": "photos.zip is not a readable zip file",
    "bad crc": "photos.zip: a.png cannot be read (Bad CRC-32",
    "corrupt deflate": "photos.zip: a.png cannot be read",
    "encrypted": "photos.zip: a.png is password-protected",
    "unsupported method": "photos.zip: a.png uses compression method 1",
}


@pytest.mark.parametrize("kind", sorted(BAD_ZIPS))
def test_each_bad_zip_is_a_plain_refusal_that_leaves_nothing(tmp_path: Path, kind: str) -> None:
    root = tmp_path / "datasets"
    root.mkdir()
    with pytest.raises(dm.DatasetUploadError) as err:
        dm.import_zip(root, "pets", BAD_ZIPS[kind], label="photos.zip")
    assert str(err.value).startswith(ZIP_MESSAGES[kind]), str(err.value)
    assert list(root.iterdir()) == []  # no dataset, no half-built staging folder


# ------------------------------------------------------------------------ the Datasets page
@pytest.fixture()
def home(home_with_store: Path) -> Path:
    return home_with_store


def open_page(page: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=60)
    return run(at.switch_page(page))


def create_from(at: AppTest, source: str, key: str, files) -> AppTest:
    at.text_input(key="dsm:name").set_value("pets")
    run(at.radio(key="dsm:source").set_value(source))
    at.file_uploader(key=key).set_value(files)
    return run(at.button(key="dsm:create").click())


@pytest.mark.parametrize("kind", sorted(BAD_ZIPS))
def test_a_bad_zip_upload_gives_a_message_and_no_traceback(home: Path, kind: str) -> None:
    at = open_page("pages/datasets.py")
    at = create_from(at, "Zip upload", "dsm:zip", ("photos.zip", BAD_ZIPS[kind], "application/zip"))
    errors = [e.value for e in at.error]
    assert any(e.startswith(f"Not created: {ZIP_MESSAGES[kind]}") for e in errors), errors
    assert "Traceback" not in texts(at)
    assert not (home / "datasets" / "pets").exists()


def test_an_undecodable_png_is_skipped_at_import(home: Path) -> None:
    at = open_page("pages/datasets.py")
    files = [("good.png", png(2), "image/png"), ("bad.png", undecodable_png(), "image/png")]
    at = create_from(at, "Image files", "dsm:files", files)
    assert "Created pets: 1 images, 0 captions." in [s.value for s in at.success]
    assert any("bad.png (not a readable image)" in w.value for w in at.warning)
    assert [p.name for p in dm.images_in(home / "datasets" / "pets")] == ["good.png"]
    zipped_too = zipped({"good.png": png(3), "bad.png": undecodable_png()})
    result = dm.import_zip(home / "datasets", "zipped", zipped_too)
    assert result.images == ["good.png"] and ("bad.png", "not a readable image") in result.skipped


def test_a_broken_image_already_in_a_dataset_is_listed_and_removable(home: Path) -> None:
    folder = dm.import_files(home / "datasets", "pets", [("good.png", png(4))]).folder
    (folder / "good.txt").write_text("a dog")
    (folder / "bad.png").write_bytes(undecodable_png())  # imported before imports decoded fully
    (folder / "bad.txt").write_text("its caption")
    at = open_page("pages/datasets.py")  # no crash: the page renders around the broken image
    assert any("1 image in this dataset cannot be used" in w.value for w in at.warning)
    assert any(t.value.startswith("bad.png: corrupt or truncated image") for t in at.text), [
        t.value for t in at.text
    ]
    assert {m.label: m.value for m in at.metric}["Images"] == "1"  # the analysis left it out
    run(at.button(key="dsm:rmbroken:bad.png").click())
    assert [p.name for p in dm.images_in(folder)] == ["good.png"]
    assert not (folder / "bad.txt").exists()  # its caption went with it, to .removed/
    assert not any("cannot be used" in w.value for w in at.warning)
    run(at.button(key="dsm:undo").click())  # and it can come back, like any removal
    assert (folder / "bad.png").read_bytes() == undecodable_png()


def test_the_library_lists_broken_images_and_analyses_around_them(tmp_path: Path) -> None:
    folder = dm.import_files(tmp_path, "set", [("a.png", png(5)), ("b.png", png(6))]).folder
    (folder / "c.png").write_bytes(undecodable_png())
    (folder / "d.png").write_bytes(b"")
    broken = dm.broken_images(folder)
    assert sorted(broken) == ["c.png", "d.png"]
    assert broken["d.png"] == "empty file (0 bytes)"
    report = dm.analyse(folder, min_side=64)
    assert report["images"] == 2 and sorted(report["broken"]) == ["c.png", "d.png"]
    assert {frozenset((p["a"], p["b"])) for p in dm.near_duplicates(folder, 64)} == {
        frozenset(("a.png", "b.png"))
    }


# ------------------------------------------------------------------------ the utilities page
def non_loras(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    text = folder / "notes.safetensors"
    text.write_text("these are my notes, not a LoRA")
    unet = folder / "diffusion_pytorch_model.safetensors"  # a pipeline's unet weights
    save_file({"conv_in.weight": torch.zeros(4, 4, 3, 3), "conv_in.bias": torch.zeros(4)}, unet)
    half = folder / "half.safetensors"
    save_file({"lora_unet_a.lora_down.weight": torch.zeros(2, 8)}, half)
    return {"text": text, "unet": unet, "half": half}


@pytest.mark.parametrize("kind", ["text", "unet", "half"])
def test_a_non_lora_file_in_the_path_box_gives_a_message(
    home: Path, tmp_path: Path, kind: str
) -> None:
    path = non_loras(tmp_path / "files")[kind]
    at = open_page("pages/utilities.py")
    run(at.text_input(key="lu:main:path").set_value(str(path)))
    errors = [e.value for e in at.error]
    expected = (  # a text file is no safetensors file at all; the others hold no LoRA
        f"Not a LoRA file: {path.name} is not a .safetensors LoRA (it holds text)"
        if kind == "text"
        else f"{path.name} is not a LoRA file the utilities can use"
    )
    assert errors and errors[0].startswith(expected), errors
    assert "Traceback" not in texts(at)
    assert not at.button  # nothing to resize, convert or merge


def test_the_cli_names_a_non_lora_file_plainly(tmp_path: Path, capsys) -> None:
    files = non_loras(tmp_path)
    assert main(["lora", "inspect", str(files["text"])]) == 2
    out = capsys.readouterr().out
    assert "not a LoRA file: notes.safetensors is not a .safetensors LoRA (it holds text)" in out
    assert main(["lora", "inspect", str(files["unet"])]) == 2
    assert "not a LoRA file this tool knows" in capsys.readouterr().out


# ------------------------------------------------------------------------ the mechanism
def test_an_unexpected_error_on_a_page_is_a_plain_message_with_the_traceback_logged(
    home: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("bug at /srv/secret/studio/trainer/data/library.py")

    monkeypatch.setattr("trainer.data.library.list_datasets", broken)
    monkeypatch.delenv("STUDIO_PAGE_ERRORS", raising=False)  # the boundary as users get it
    with caplog.at_level(logging.ERROR, logger="ui.boundary"):
        at = open_page("pages/datasets.py")  # asserts no exception reached the page
    errors = [e.value for e in at.error]
    assert any(e.startswith("Something went wrong on the Datasets page") for e in errors), errors
    assert "/srv/secret" not in texts(at) and "RuntimeError" not in texts(at)
    assert [t.value for t in at.title] == ["Datasets"]  # what rendered before the error stays
    assert "The Datasets page failed" in caplog.text
    assert "/srv/secret/studio" in caplog.text and "Traceback" in caplog.text


def test_tests_can_ask_the_boundary_to_let_page_errors_through(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("page bug 5678")

    monkeypatch.setattr("trainer.data.library.list_datasets", broken)
    monkeypatch.setenv("STUDIO_PAGE_ERRORS", "raise")
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=60)
    at.switch_page("pages/datasets.py").run()
    (reached,) = at.exception  # Streamlit got it: a test's "no exception" check sees the bug
    assert "page bug 5678" not in reached.message  # showErrorDetails = "none": redacted
    assert any(e.value.startswith("Something went wrong") for e in at.error)


def test_streamlit_shows_no_error_details_and_sends_no_usage_stats() -> None:
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text(encoding="utf-8"))
    assert config["client"]["showErrorDetails"] == "none"
    assert config["browser"]["gatherUsageStats"] is False
    # Streamlit itself reads the values (an unknown value would fall back or fail here).
    code = (
        "from streamlit import config; "
        "print(config.get_option('client.showErrorDetails'), "
        "config.get_option('browser.gatherUsageStats'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["none", "False"], out.stdout + out.stderr
