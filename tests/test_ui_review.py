"""The review page in AppTest: one-click fixes, YAML import/export, launch locked while errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from ui_support import draft, go_to_step, open_page, texts, widget

from trainer.config.io import loads_config


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("STUDIO_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path / "home"


def _fix_button(at, words: str):
    found = [b for b in at.button if b.key and b.key.startswith("rv:fix:") and words in b.label]
    assert found, [b.label for b in at.button]
    return found[0]


def test_a_valid_draft_can_launch_and_shows_its_yaml() -> None:
    at = open_page("pages/review.py")
    assert "Launch is locked" not in texts(at)
    assert not at.button(key="rv:launch").disabled
    yaml_text = at.code[0].value
    assert yaml_text.startswith("# LoRA Studio training config")
    assert loads_config(yaml_text).model.arch == "sd15"
    assert at.get("download_button")


def test_applying_a_fix_changes_the_draft_and_the_finding_disappears() -> None:
    at = open_page("pages/wizard.py")
    go_to_step(at, "memory")
    widget(at, "cfg:runtime.persistent_workers").set_value(True).run()  # needs workers > 0
    at.switch_page("pages/review.py").run()
    assert at.button(key="rv:launch").disabled
    assert "Launch is locked" in texts(at)
    assert "needs num_workers above 0" in texts(at)
    _fix_button(at, "Reset to the default").click().run()
    assert draft(at)["runtime"]["persistent_workers"] is False
    assert "needs num_workers above 0" not in texts(at)
    assert not at.button(key="rv:launch").disabled
    assert not at.exception


def test_an_unresolved_auto_locks_launch_until_its_fix_is_applied() -> None:
    at = open_page("pages/wizard.py")
    go_to_step(at, "training")
    at.checkbox(key="auto:train.steps").check().run()
    assert draft(at)["train"]["steps"] == "auto"
    at.switch_page("pages/review.py").run()
    assert at.button(key="rv:launch").disabled
    assert "still 'auto'" in texts(at)
    _fix_button(at, "steps").click().run()
    assert isinstance(draft(at)["train"]["steps"], int)
    assert "still 'auto'" not in texts(at)
    assert not at.button(key="rv:launch").disabled


def test_apply_all_fixes_leaves_no_fixable_error() -> None:
    at = open_page("pages/wizard.py")
    go_to_step(at, "training")
    at.checkbox(key="auto:train.steps").check().run()
    go_to_step(at, "optimizer")
    at.checkbox(key="auto:train.lr").check().run()
    at.switch_page("pages/review.py").run()
    at.button(key="rv:fix_all").click().run()
    assert "still 'auto'" not in texts(at)
    assert not at.button(key="rv:launch").disabled
    assert not at.exception


def test_importing_broken_yaml_shows_the_problems_and_loses_nothing() -> None:
    at = open_page("pages/review.py")
    before = draft(at)["train"]["lr"]
    bad = b"model:\n  arch: sd15\ntrain:\n  lr: fast\n  stepz: 10\n"
    at.file_uploader(key="rv:import").upload("bad.yaml", bad, "application/x-yaml").run()
    shown = texts(at)
    assert "Import refused" in shown and "draft is unchanged" in shown
    assert "train.lr" in shown and "train.stepz" in shown and "did you mean 'steps'" in shown
    assert draft(at)["train"]["lr"] == before
    at.file_uploader(key="rv:import").clear().run()
    at.file_uploader(key="rv:import").upload("worse.yaml", b"train: [lr: 1\n", "text/yaml").run()
    assert "is not valid YAML" in texts(at)
    assert not at.exception


def test_importing_a_good_file_replaces_the_draft_and_can_be_undone() -> None:
    at = open_page("pages/review.py")
    good = (Path(__file__).parent.parent / "presets" / "style_sdxl.yaml").read_bytes()
    at.file_uploader(key="rv:import").upload("style_sdxl.yaml", good, "application/x-yaml").run()
    assert draft(at)["model"]["arch"] == "sdxl"
    assert "Imported" in texts(at)
    at.button(key="rv:undo_import").click().run()
    assert draft(at)["model"]["arch"] == "sd15"


def test_review_fields_are_editable() -> None:
    at = open_page("pages/review.py")
    at.text_input(key="cfg:name").set_value("edited_here").run()
    assert draft(at)["name"] == "edited_here"
    assert "name: edited_here" in at.code[0].value


def test_launch_hands_the_config_to_the_job_runner(monkeypatch: pytest.MonkeyPatch) -> None:
    review = pytest.importorskip("ui.review")
    launched = []

    def fake_launch(cfg):
        launched.append(cfg)
        return type("Job", (), {"run_id": "run123", "name": "my_lora_2"})()

    monkeypatch.setattr(review, "launch_draft", fake_launch)
    monkeypatch.setattr(review, "open_monitor", lambda run_id=None: None)
    at = open_page("pages/review.py")
    at.button(key="rv:launch").click().run()
    assert len(launched) == 1 and launched[0].model.arch == "sd15"
    assert "run123" in texts(at) and "my_lora_2" in texts(at)


def _comparison(at):
    return next(d.value for d in at.dataframe if "Reason" in d.value.columns)


def test_comparison_shows_yours_vs_recommended_with_reasons() -> None:
    at = open_page("pages/review.py")
    table = _comparison(at)
    assert {"Setting", "Yours", "Recommended", "Status", "Reason"} <= set(table.columns)
    assert table["Reason"].str.len().min() > 0
    differing = (table["Status"] != "✓ matches").sum()
    assert differing > 0  # the schema defaults are not what the advisor would pick
    at.button(key="rv:apply_recs").click().run()
    table = _comparison(at)
    assert (table["Status"] == "✓ matches").all()
