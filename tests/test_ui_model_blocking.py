"""Review blocks Launch when the base model or a dataset folder cannot be used, and says the
fix: a missing folder or file, an unknown Hub id, a folder without a component, a file of another
architecture, a missing dataset folder. An available model (demo, complete folder, matching file
with its components) launches."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import streamlit as st
from ui_support import go_to_step, open_page, texts, widget

pytest_plugins = ["hub_server"]  # the fixtures: hub_server, hub_env

from hub_server import HubEnv  # noqa: E402

from trainer.demo.tiny import ensure_demo  # noqa: E402


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("STUDIO_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    st.cache_data.clear()
    return tmp_path / "home"


def review_with_model(ref: str, source: str, arch: str = "sd15"):
    at = open_page("pages/wizard.py")
    go_to_step(at, "model")
    if arch != "sd15":
        widget(at, "cfg:model.arch").set_value(arch).run()
    widget(at, "wiz:model_source").set_value(source).run()
    at.text_input(key="cfg:model.name_or_path").set_value(ref).run()
    at.switch_page("pages/review.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def assert_blocked(at, *words: str) -> None:
    assert at.button(key="rv:launch").disabled
    shown = texts(at)
    assert "Launch is locked" in shown
    for word in words:
        assert word in shown, f"{word!r} not in the review"


def test_a_missing_folder_blocks_launch(tmp_path: Path) -> None:
    at = review_with_model(str(tmp_path / "no_such_model"), "folder")
    assert_blocked(at, "no folder at", "no_such_model", "Fix:")


def test_a_missing_file_blocks_launch(tmp_path: Path) -> None:
    at = review_with_model(str(tmp_path / "model.safetensors"), "file")
    assert_blocked(at, "no file at", "model.safetensors")


def test_an_unknown_hub_id_blocks_launch(hub_env: HubEnv) -> None:
    at = review_with_model("studio-test/no-such-model", "hub")
    assert_blocked(at, "studio-test/no-such-model", "no such model on the Hugging Face Hub")


def test_a_folder_without_a_component_names_it(demo_home: Path, tmp_path: Path) -> None:
    folder = tmp_path / "sd15_without_vae"
    shutil.copytree(ensure_demo(demo_home, "sd15"), folder)
    shutil.rmtree(folder / "vae")
    at = review_with_model(str(folder), "folder")
    assert_blocked(at, "lacks what a sd15 run loads: vae")


def test_a_file_of_another_architecture_is_refused(demo_home: Path, tmp_path: Path) -> None:
    from single_file_support import write_sdxl_checkpoint

    file = write_sdxl_checkpoint(ensure_demo(demo_home, "sdxl"), tmp_path / "xl.safetensors")
    at = review_with_model(str(file), "file")
    assert_blocked(at, "SDXL")


def test_a_complete_folder_can_launch(demo_home: Path) -> None:
    at = review_with_model(str(ensure_demo(demo_home, "sd15")), "folder")
    assert "Launch is locked" not in texts(at) and not at.button(key="rv:launch").disabled


def test_a_matching_file_needs_its_components_source(demo_home: Path, tmp_path: Path) -> None:
    """Offline, the file's default components (the usual SD1.5 repo) are not cached: blocked,
    naming model.components_from; pointing it to a local model opens Launch."""
    from single_file_support import write_sd15_checkpoint

    file = write_sd15_checkpoint(ensure_demo(demo_home, "sd15"), tmp_path / "sd15.safetensors")
    at = review_with_model(str(file), "file")
    assert_blocked(at, "model.components_from", "stable-diffusion-v1-5/stable-diffusion-v1-5")
    at.switch_page("pages/wizard.py").run()
    go_to_step(at, "model")
    at.toggle(key="wiz:expert").set_value(True).run()
    widget(at, "cfg:model.components_from").set_value("demo:sd15").run()
    at.switch_page("pages/review.py").run()
    assert "Launch is locked" not in texts(at) and not at.button(key="rv:launch").disabled


def test_a_missing_dataset_folder_blocks_launch(tmp_path: Path) -> None:
    at = open_page("pages/wizard.py")
    go_to_step(at, "dataset")
    at.toggle(key="wiz:ds_demo:0").set_value(False).run()
    widget(at, "cfg:datasets.0.folder_path").set_value(str(tmp_path / "no_images")).run()
    at.switch_page("pages/review.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert_blocked(at, "dataset 1: no folder at", "no_images")
