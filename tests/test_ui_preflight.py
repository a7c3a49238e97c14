"""Preflight in AppTest: hardware shown with marks and words, confirm fills the smart defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
from ui_support import draft, go_to_step, new_app, open_page, texts, widget

from ui.state import dget


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("STUDIO_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path / "home"


def test_preflight_shows_the_detected_hardware() -> None:
    at = open_page("pages/preflight.py")
    shown = texts(at)
    for part in ("**GPU**", "**Memory**", "**Disk**", "**CPU**"):
        assert part in shown
    assert "Detected" in shown  # a word beside every mark, not colour alone
    home = new_app()
    home.run()  # AppTest drops the sidebar after switch_page, so check it on the first page
    assert any("This machine" in m.value for m in home.sidebar.markdown)
    assert "CPU cores" in " ".join(c.value for c in home.sidebar.caption)


def test_confirm_fills_the_draft_with_marked_recommendations() -> None:
    at = open_page("pages/preflight.py")
    at.radio(key="pf:what").set_value("person").run()
    at.radio(key="pf:arch").set_value("sdxl").run()
    at.radio(key="pf:experience").set_value("advanced").run()
    at.toggle(key="pf:demo").set_value(False).run()
    at.number_input(key="pf:vram_gb").set_value(24.0).run()
    at.button(key="pf:confirm").click().run()
    assert not at.exception
    data = draft(at)
    meta = at.session_state["draft_meta"]
    assert data["intent"] == "person" and data["model"]["arch"] == "sdxl"
    assert meta["preflight_done"] and meta["intent"]["experience"] == "advanced"
    assert meta["profile_overrides"]["vram_gb"] == 24.0
    recs = meta["recommendations"]
    assert len(recs) >= 5
    for path, rec in recs.items():
        assert dget(data, path) == rec["value"], path
        assert rec["reason"]
    for path in ("train.steps", "train.lr", "train.batch_size", "network.linear"):
        assert dget(data, path) != "auto"
    assert "settings filled with recommendations" in texts(at)
    # the wizard marks them as recommendations
    at.switch_page("pages/wizard.py").run()
    go_to_step(at, "network")
    assert "Recommended" in texts(at)


def test_answers_survive_a_new_session() -> None:
    at = open_page("pages/preflight.py")
    at.radio(key="pf:what").set_value("style").run()
    at.button(key="pf:confirm").click().run()
    fresh = new_app()
    fresh.run()
    fresh.switch_page("pages/preflight.py").run()
    assert fresh.radio(key="pf:what").value == "style"
    assert "You confirmed preflight before" in texts(fresh)


def test_recommendations_follow_an_arch_change_on_request() -> None:
    at = open_page("pages/preflight.py")
    at.button(key="pf:confirm").click().run()
    at.switch_page("pages/wizard.py").run()
    go_to_step(at, "model")
    widget(at, "cfg:model.arch").set_value("flux").run()
    assert "These were made for" in texts(at)
    at.button(key="col:model:refresh").click().run()
    meta = at.session_state["draft_meta"]
    assert meta["recommended_for"] == "flux"
    assert "These were made for" not in texts(at)


def test_the_questions_and_confirm_are_drawn_while_the_hardware_is_detected(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import ui.preflight

    asked: list[bool] = []

    def still_detecting() -> None:
        asked.append(True)
        raise TimeoutError("still detecting")  # the page as it stands while detection runs

    monkeypatch.setattr(ui.preflight, "detected_hardware", still_detecting)
    at = new_app()
    at.run()
    at.switch_page("pages/preflight.py").run()
    assert asked and len(at.exception) == 1  # the page stopped inside detection
    assert [s.label for s in at.status] == ["Detecting your hardware…"]  # a running status
    assert at.radio(key="pf:what").value is None  # the questions can be answered meanwhile
    assert "Assuming **Other: something else** until you pick one." in texts(at)
    assert at.button(key="pf:confirm").label == "Confirm and fill the wizard"
    assert "**GPU**" not in texts(at)


def test_the_detecting_status_is_gone_once_the_hardware_is_shown() -> None:
    at = open_page("pages/preflight.py")
    assert "**GPU**" in texts(at)
    assert not at.status  # neither "Detecting your hardware…" nor the Hub check is left behind
