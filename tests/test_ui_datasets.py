"""The datasets page in AppTest: create from a folder, analysis, captions, duplicates + undo."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from trainer.data import library as dm

ROOT = Path(__file__).resolve().parent.parent


def png(seed: int, size: int = 512) -> bytes:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("STUDIO_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    return tmp_path / "home"


def page() -> AppTest:
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=60)
    at.switch_page("pages/datasets.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def run(target) -> AppTest:
    """Rerun the app (given the AppTest, or a widget just changed / clicked)."""
    at = target.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_create_analyse_caption_dedupe_and_undo(home: Path, tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    for i in range(3):
        (source / f"img{i}.png").write_bytes(png(i))
    (source / "img0.txt").write_text("dog, grass")
    (source / "copy.png").write_bytes(png(0, 300))  # a resized copy of img0
    (source / "readme.md").write_text("hi")
    at = page()
    assert "No datasets yet" in " ".join(i.value for i in at.info)
    at.text_input(key="dsm:name").set_value("pets")
    at.radio(key="dsm:source").set_value("Local folder")
    run(at)
    at.text_input(key="dsm:folder").set_value(str(source))
    run(at.button(key="dsm:create").click())
    assert "Created pets: 4 images, 1 captions." in [s.value for s in at.success]
    assert any("readme.md" in w.value for w in at.warning)
    folder = home / "datasets" / "pets"
    assert (folder / dm.MANIFEST).is_file()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Images"] == "4" and metrics["Captioned"] == "25%"
    assert metrics["Steps per epoch"] == "4"
    at.text_input(key="dsm:trigger").set_value("sks")
    run(at.button(key="dsm:do_trigger").click())
    assert dm.read_captions(folder)["img0.png"] == "sks, dog, grass"
    assert dm.read_captions(folder)["img2.png"] == "sks"
    run(at.button(key="dsm:rm:0:a").click())  # the closest pair: copy.png / img0.png
    assert not (folder / "copy.png").exists()
    assert [p.name for p in dm.images_in(folder)] == ["img0.png", "img1.png", "img2.png"]
    run(at.button(key="dsm:undo").click())
    assert (folder / "copy.png").is_file()
    assert any("Restored copy.png" in s.value for s in at.success)


def test_refused_upload_shows_the_reason(home: Path, tmp_path: Path) -> None:
    at = page()
    at.text_input(key="dsm:name").set_value("../x")
    at.radio(key="dsm:source").set_value("Local folder")
    run(at)
    at.text_input(key="dsm:folder").set_value(str(tmp_path))
    run(at.button(key="dsm:create").click())
    assert any("Not created" in e.value and "dataset name" in e.value for e in at.error)


def test_auto_caption_without_a_captioner_says_how_to_get_one(home: Path, tmp_path: Path) -> None:
    dm.import_files(home / "datasets", "d", [("a.png", png(0, 64))])
    at = page()
    assert any("No captioner installed" in i.value for i in at.info)
    run(at.text_input(key="dsm:capdir").set_value(str(tmp_path / "nothing")))
    run(at.button(key="dsm:caption").click())
    assert any("No captioner model at" in e.value for e in at.error)
    assert dm.read_captions(home / "datasets" / "d") == {"a.png": ""}
