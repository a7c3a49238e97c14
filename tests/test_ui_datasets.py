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
    assert metrics["Images"] == "4" and metrics["With captions"] == "1 / 4"
    assert metrics["Steps per epoch"] == "4"  # the draft's batch size 1, one bucket at 512 px
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


# ------------------------------------------------------------- "Train on this dataset" (item 10)
def dataset(home: Path, name: str, captions: list[str]) -> Path:
    files = [(f"img{i}.png", png(i, 64)) for i in range(len(captions))]
    files += [(f"img{i}.txt", text.encode()) for i, text in enumerate(captions) if text]
    return dm.import_files(home / "datasets", name, files).folder


def test_caption_trigger_word_is_the_first_tag_every_caption_shares(tmp_path: Path) -> None:
    from ui.dataset_handoff import caption_trigger_word

    cases = {
        "tagged": (["ohwx man, smiling", "ohwx man, outdoors"], "ohwx man"),
        "differs": (["ohwx, smiling", "sks, outdoors"], None),
        "uncaptioned": (["ohwx, smiling", ""], None),
        "sentences": (["a photo of a dog on grass", "a photo of a dog on grass"], None),
    }
    for name, (captions, expected) in cases.items():
        assert caption_trigger_word(dataset(tmp_path, name, captions)) == expected, name


def test_train_on_this_dataset_leaves_the_demo_and_opens_the_dataset_step(home: Path) -> None:
    from trainer.demo.dataset import TRIGGER_WORD

    folder = dataset(home, "pets", ["a dog", "a cat"])  # no shared trigger in the captions
    at = page()
    at.session_state["draft"]["datasets"][0]["trigger_word"] = TRIGGER_WORD
    at.session_state["draft"]["network"]["rank"] = 8
    button = at.button(key="dsm:train")
    assert (button.label, button.proto.icon) == (
        "Train on this dataset",
        ":material/model_training:",
    )
    run(button.click())
    ds = at.session_state["draft"]["datasets"][0]
    assert ds["folder_path"] == str(folder) and ds["trigger_word"] is None
    assert at.session_state["draft"]["network"]["rank"] == 8  # the other settings stay
    assert [t.value for t in at.title] == ["Wizard"]
    assert at.selectbox(key="wiz:step").value == "dataset"
    assert at.text_input(key="cfg:datasets.0.folder_path").value == str(folder)
    assert not at.toggle(key="wiz:ds_demo:0").value


def test_train_on_this_dataset_suggests_the_captions_trigger_word(home: Path) -> None:
    folder = dataset(home, "me", ["ohwx, smiling", "ohwx, outdoors"])
    at = page()
    assert "Trigger word from the captions: `ohwx`" in [c.value for c in at.caption]
    run(at.button(key="dsm:train").click())
    ds = at.session_state["draft"]["datasets"][0]
    assert (ds["folder_path"], ds["trigger_word"]) == (str(folder), "ohwx")
    assert at.selectbox(key="wiz:step").value == "dataset"


def test_train_on_this_dataset_keeps_the_users_trigger_and_regularisation(home: Path) -> None:
    folder = dataset(home, "pets", ["a dog", "a cat"])
    at = page()
    reg = {**at.session_state["draft"]["datasets"][0], "folder_path": "/reg", "is_reg": True}
    at.session_state["draft"]["datasets"][0].update(folder_path="/old", trigger_word="mine")
    at.session_state["draft"]["datasets"].insert(0, reg)
    run(at.button(key="dsm:train").click())
    reg_after, train = at.session_state["draft"]["datasets"]
    assert (reg_after["folder_path"], reg_after["is_reg"]) == ("/reg", True)
    assert (train["folder_path"], train["trigger_word"]) == (str(folder), "mine")


def _switch_folder_after_a_caption_fact() -> None:
    import streamlit as st

    from advisor.draft import DATASET_SOURCE
    from ui import state

    state.init_state()
    recs = state.meta()["recommendations"]
    recs["datasets.0.trigger_word"] = {
        "value": "sks",
        "reason": "every caption has it",
        "source": DATASET_SOURCE,
    }
    recs["datasets.0.repeats"] = {"value": 2, "reason": "few images", "source": "studio"}
    recs["datasets.1.trigger_word"] = {"value": "x", "reason": "", "source": DATASET_SOURCE}
    state.use_dataset_folder(0, "/no/such/folder")
    st.write(sorted(state.meta()["recommendations"]))


def test_facts_read_from_a_folder_go_when_the_folder_changes(tmp_path, monkeypatch) -> None:
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("STUDIO_HOME", str(tmp_path / "home"))
    at = AppTest.from_function(_switch_folder_after_a_caption_fact, default_timeout=30).run()
    assert not at.exception, at.exception
    kept = at.markdown[0].value if at.markdown else str(at.json[0].value)
    assert "datasets.0.trigger_word" not in kept  # "every caption has 'sks'": the old folder's
    assert "datasets.0.repeats" in kept and "datasets.1.trigger_word" in kept
