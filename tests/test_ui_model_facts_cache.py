"""The base model's facts are read from disk once per state of the folder or file (issue 15):
every page run asks for them, so a rerun must cost a few ``stat`` calls, not a walk of the model
folder or a read of a checkpoint; a changed folder or file is read again at once."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import streamlit as st
from ui_support import open_page

from advisor.model_facts import FILE, FOLDER
from trainer.demo.tiny import build_tiny_pipeline
from ui import model_status

UNET_WEIGHTS = Path("unet") / "diffusion_pytorch_model.safetensors"


@pytest.fixture(scope="module")
def tiny_sd15(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_pipeline("sd15", tmp_path_factory.mktemp("tiny") / "sd15")


@pytest.fixture()
def model_folder(tiny_sd15: Path, tmp_path: Path) -> Path:
    """A copy of the tiny pipeline that the test may change."""
    return Path(shutil.copytree(tiny_sd15, tmp_path / "model"))


@pytest.fixture()
def reads(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """How often the folder and checkpoint readers behind ``model_facts`` ran."""
    st.cache_data.clear()
    counts = {"folder": 0, "checkpoint": 0}

    def counted(name: str, real):
        def wrapper(*args, **kwargs):
            counts[name] += 1
            return real(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(
        model_status, "component_problems", counted("folder", model_status.component_problems)
    )
    monkeypatch.setattr(
        model_status, "detect_checkpoint", counted("checkpoint", model_status.detect_checkpoint)
    )
    return counts


def later(path: Path) -> None:
    """Move ``path``'s modification time one second on (a clock tick is not always enough)."""
    info = path.stat()
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns + 1_000_000_000))


def test_an_unchanged_folder_is_read_once(model_folder: Path, reads: dict[str, int]) -> None:
    first = model_status.model_facts(str(model_folder), "sd15")
    again = model_status.model_facts(str(model_folder), "sd15")
    assert reads["folder"] == 1
    assert again == first and first.kind == FOLDER and not first.problem
    assert first.total_bytes == sum(
        p.stat().st_size for p in model_folder.rglob("*") if p.is_file()
    )


def test_a_touched_folder_is_read_again(model_folder: Path, reads: dict[str, int]) -> None:
    model_status.model_facts(str(model_folder), "sd15")
    later(model_folder)
    model_status.model_facts(str(model_folder), "sd15")
    assert reads["folder"] == 2


def test_a_changed_component_is_seen_at_once(model_folder: Path, reads: dict[str, int]) -> None:
    before = model_status.model_facts(str(model_folder), "sd15")
    weights = model_folder / UNET_WEIGHTS
    with weights.open("ab") as handle:  # rewritten in place: the folders' times stay
        handle.write(b"\0" * 1000)
    grown = model_status.model_facts(str(model_folder), "sd15")
    assert grown.total_bytes == before.total_bytes + 1000
    weights.unlink()
    broken = model_status.model_facts(str(model_folder), "sd15")
    assert "unet" in broken.problem and broken.problem.startswith("Base model folder")
    assert reads["folder"] == 3


def test_a_checkpoint_file_is_read_once_per_version(
    model_folder: Path, tmp_path: Path, reads: dict[str, int]
) -> None:
    single = tmp_path / "model.safetensors"
    shutil.copyfile(model_folder / UNET_WEIGHTS, single)
    facts = [model_status.model_facts(str(single), "sd15", components_from="demo:sd15")]
    facts.append(model_status.model_facts(str(single), "sd15", components_from="demo:sd15"))
    assert reads["checkpoint"] == 1 and facts[0] == facts[1] and facts[0].kind == FILE
    single.write_bytes(b"not a checkpoint")
    for _ in range(2):  # an unreadable file is remembered too
        broken = model_status.model_facts(str(single), "sd15", components_from="demo:sd15")
        assert "not a readable .safetensors file" in broken.problem
    assert reads["checkpoint"] == 2


def test_wizard_reruns_do_not_walk_the_model_folder(
    model_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reads: dict[str, int]
) -> None:
    monkeypatch.setenv("STUDIO_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    at = open_page("pages/wizard.py")
    at.session_state["draft"]["model"]["name_or_path"] = str(model_folder)
    at.session_state["draft_rev"] += 1
    at.run()
    assert at.session_state["_studio_context"][1].model.kind == FOLDER
    read_once = reads["folder"]
    assert read_once >= 1
    at.run()
    at.run()
    assert reads["folder"] == read_once and not at.exception
    (model_folder / UNET_WEIGHTS).unlink()
    at.run()
    assert reads["folder"] == read_once + 1
    assert "unet" in at.session_state["_studio_context"][1].model.problem
