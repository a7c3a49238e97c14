"""The datasets page on a newcomer's path: checks at the draft's resolution, named charts, honest
save messages and the new dataset picked after creation."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from trainer.data import library as dm

ROOT = Path(__file__).resolve().parent.parent


def png(seed: int, size: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("STUDIO_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    return tmp_path / "home"


def with_draft_resolution(home: Path, resolution: list[int]) -> None:
    """An autosaved draft (restored when the session starts) that trains at ``resolution``."""
    drafts = home / "drafts"
    drafts.mkdir(parents=True, exist_ok=True)
    draft = {"model": {"arch": "sd15"}, "datasets": [{"resolution": resolution}]}
    (drafts / "current.yaml").write_text(json.dumps(draft), encoding="utf-8")  # JSON is YAML


def page() -> AppTest:
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=60)
    at.switch_page("pages/datasets.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def flagged(at: AppTest) -> str:
    return " ".join(w.value for w in at.warning if w.value.startswith("Flagged"))


def test_size_checks_follow_the_drafts_resolution(home: Path) -> None:
    dm.import_files(home / "datasets", "shapes", [(f"{i}.png", png(i, 64)) for i in range(3)])
    with_draft_resolution(home, [64])
    at = page()
    assert any("At the draft's settings (64 px, batch size 1" in c.value for c in at.caption)
    assert at.number_input(key="dsm:min").value == 64
    assert "too small" not in flagged(at)  # 64-px demo images at a 64-px draft are fine
    assert any("Buckets: 64x64 (3)" in c.value for c in at.caption)


def test_a_draft_at_512_flags_64_px_images(home: Path) -> None:
    dm.import_files(home / "datasets", "shapes", [("a.png", png(0, 64))])
    with_draft_resolution(home, [512])
    at = page()
    assert any("At the draft's settings (512 px" in c.value for c in at.caption)
    assert any("Buckets: 512x512 (1)" in c.value for c in at.caption)
    assert "a.png: too small" in flagged(at)


def test_charts_have_titles_and_named_axes(home: Path) -> None:
    dm.import_files(home / "datasets", "d", [(f"{i}.png", png(i, 64 + 8 * i)) for i in range(3)])
    at = page()
    charts = at.get("arrow_vega_lite_chart") or at.get("vega_lite_chart")
    specs = [json.loads(c.proto.spec) for c in charts]
    text = json.dumps(specs)
    assert "Count of Records" not in text
    assert [spec.get("title") for spec in specs] == ["Aspect ratios", "Image sizes"]
    axes = {
        channel.get("title")
        for spec in specs
        for channel in spec["encoding"].values()
        if isinstance(channel, dict)
    }
    assert {"Width ÷ height", "Images", "Width (px)", "Height (px)"} <= axes


def test_saving_nothing_is_not_a_success(home: Path) -> None:
    dm.import_files(home / "datasets", "d", [("a.png", png(0, 64)), ("a.txt", b"sks")])
    at = page()
    at.button(key="dsm:save").click().run()
    assert not at.success
    assert any("No caption file changed" in i.value for i in at.info)
    at.button(key="dsm:do_sort").click().run()  # one tag: sorting changes nothing either
    assert not at.success and dm.read_captions(home / "datasets" / "d") == {"a.png": "sks"}
    at.text_input(key="dsm:trigger").set_value("ohwx")
    at.button(key="dsm:do_trigger").click().run()
    assert [s.value for s in at.success] == ["Saved 1 caption file."]


def test_a_new_dataset_is_selected_after_creation(home: Path, tmp_path: Path) -> None:
    dm.import_files(home / "datasets", "aaa_first", [("a.png", png(0, 64))])
    source = tmp_path / "src"
    source.mkdir()
    (source / "b.png").write_bytes(png(1, 64))
    at = page()
    assert at.selectbox(key="dsm:pick").value == "aaa_first"
    at.text_input(key="dsm:name").set_value("zzz_new")
    at.radio(key="dsm:source").set_value("Local folder").run()
    at.text_input(key="dsm:folder").set_value(str(source))
    at.button(key="dsm:create").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.selectbox(key="dsm:pick").value == "zzz_new"
    assert at.metric[0].label == "Images" and at.metric[0].value == "1"
    at.run()  # and it stays picked
    assert at.selectbox(key="dsm:pick").value == "zzz_new"
