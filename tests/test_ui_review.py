"""The review page in AppTest: one-click fixes, YAML import/export, launch locked while errors."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from ui_support import all_nodes, draft, go_to_step, open_page, texts, widget

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


# ------------------------------------------------------------------ launch near the top, banner
def _fake_launch(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Launch without a trainer process, and stay on the review page (no monitor switch)."""
    import ui.review as review

    launched: list[str] = []

    def launch_draft(cfg):
        launched.append(cfg.name)
        return SimpleNamespace(name=cfg.name, run_id=f"run{len(launched)}")

    monkeypatch.setattr(review, "launch_draft", launch_draft)
    monkeypatch.setattr(review, "open_monitor", lambda run_id=None: None)
    return launched


def _launch_banners(at) -> list[str]:
    return [str(s.value) for s in at.success if "Launched" in str(s.value)]


def test_launch_sits_under_the_summary_and_again_at_the_bottom() -> None:
    at = open_page("pages/review.py")
    launches = [b for b in at.button if b.key in ("rv:launch", "rv:launch_bottom")]
    assert [(b.key, b.label) for b in launches] == [
        ("rv:launch", "Launch training"),  # drawn first: right under the summary header
        ("rv:launch_bottom", "Launch this config"),
    ]
    assert all(b.proto.type == "primary" and not b.disabled for b in launches)
    top = next(c for c in at.get("flex_container") if getattr(c, "key", None) == "rv_launch_top")
    assert [b.key for b in top.button] == ["rv:launch", "rv:queue"]  # Add to queue beside it
    marks = {"summary_header", "rv:launch", "rv:launch_bottom"}
    heads = {"Validation", "Settings", "Config file"}
    order = []
    for node in all_nodes(at):
        if getattr(node, "key", None) in marks:
            order.append(node.key)
        elif node.type == "subheader" and node.value in heads:
            order.append(node.value)
    assert order == [
        "summary_header",
        "rv:launch",
        "Validation",
        "Settings",
        "Config file",
        "rv:launch_bottom",
    ]


def test_the_top_launch_names_why_it_is_locked() -> None:
    at = open_page("pages/wizard.py")
    go_to_step(at, "memory")
    widget(at, "cfg:runtime.persistent_workers").set_value(True).run()
    at.switch_page("pages/review.py").run()
    assert at.button(key="rv:launch").disabled and at.button(key="rv:launch_bottom").disabled
    locked = [m.value for m in at.markdown if "Launch is locked" in m.value]
    assert len(locked) == 2 and "in Validation below" in locked[0] and "above" in locked[1]
    first_lines = at.markdown[[m.value for m in at.markdown].index(locked[0]) + 1].value
    assert "needs num_workers above 0" in first_lines  # the reason itself, at the top


def test_the_launched_banner_goes_once_the_draft_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    launched = _fake_launch(monkeypatch)
    at = open_page("pages/review.py")
    at.button(key="rv:launch").click().run()
    assert launched == ["my_lora"]
    assert _launch_banners(at) == ["**Launched** `my_lora` (run `run1`)."]
    at.run()  # still the same draft: still true
    assert len(_launch_banners(at)) == 1
    widget(at, "cfg:train.lr").set_value("0.0003").run()
    assert draft(at)["train"]["lr"] == pytest.approx(3e-4)
    assert _launch_banners(at) == []
    widget(at, "cfg:train.lr").set_value("0.0001").run()  # the same values again: still gone
    assert _launch_banners(at) == []


def test_the_launched_banner_goes_when_launch_is_locked(monkeypatch: pytest.MonkeyPatch) -> None:
    import ui.review as review

    _fake_launch(monkeypatch)
    at = open_page("pages/review.py")
    at.button(key="rv:launch_bottom").click().run()
    bottom = [s.value for s in at.success]
    assert bottom == ["**Launched** `my_lora` (run `run1`)."]
    monkeypatch.setattr(review, "launch_blockers", lambda context: ["the dataset folder is gone"])
    at.run()
    assert at.button(key="rv:launch").disabled
    assert _launch_banners(at) == [] and "the dataset folder is gone" in texts(at)


def test_a_refused_launch_shows_its_reason_under_the_button_clicked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import ui.review as review

    def refuse(cfg):
        raise review.LaunchRefused("a run is already training")

    monkeypatch.setattr(review, "launch_draft", refuse)
    at = open_page("pages/review.py")
    at.button(key="rv:launch").click().run()
    assert [e.value for e in at.error] == ["**Not launched:** a run is already training"]
    top = next(c for c in at.get("flex_container") if getattr(c, "key", None) == "rv_launch_top")
    assert [e.value for e in top.error] == ["**Not launched:** a run is already training"]


# ------------------------------------------------ the severity scale: information is no problem
def _validation_of_findings() -> None:
    """Review's Validation part for the findings of the severities in session state."""
    from types import SimpleNamespace

    import streamlit as st

    from ui.advice import Finding
    from ui.review import render_validation

    found = [Finding(s, f"a {s} note", ["train.lr"]) for s in st.session_state["severities"]]
    errors = [f for f in found if f.severity == "error"]
    context = SimpleNamespace(
        findings=found, errors=errors, model=None, validated=SimpleNamespace(config=None)
    )
    render_validation(context)


def _validation(*severities: str):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_function(_validation_of_findings, default_timeout=30)
    at.session_state["severities"] = list(severities)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_information_alone_is_no_problem_and_shows_no_warning_icon() -> None:
    at = _validation("info", "info")
    shown = texts(at)
    assert "No problems found." in shown and shown.count("a info note") == 2
    assert ":material/warning:" not in shown and "warning(s)" not in shown


def test_the_validation_counts_problems_and_information_apart() -> None:
    shown = texts(_validation("warning", "info", "suggestion", "error"))
    assert "No problems found." not in shown
    assert (
        ":material/error: **1 error(s)** · :material/warning: **1 warning(s)** · "
        ":material/lightbulb: **1 suggestion(s)** · :material/info: **1 note(s) for your "
        "information** (errors must be fixed)"
    ) in shown
    assert "a info note" in shown


# ------------------------------------------------- the lock says exactly what blocks the launch
def _locked(at) -> list[str]:
    return [m.value for m in at.markdown if "Launch is locked" in m.value]


def test_an_error_alone_locks_launch_without_mentioning_auto() -> None:
    at = open_page("pages/wizard.py")
    go_to_step(at, "memory")
    widget(at, "cfg:runtime.persistent_workers").set_value(True).run()
    at.switch_page("pages/review.py").run()
    assert _locked(at) == [
        ":material/block: **Launch is locked:** 1 error to fix. Fix it in Validation below.",
        ":material/block: **Launch is locked:** 1 error to fix. Fix it above.",
    ]


def test_settings_still_auto_are_named_and_not_counted_as_errors() -> None:
    at = open_page("pages/wizard.py")
    go_to_step(at, "training")
    at.checkbox(key="auto:train.steps").check().run()
    go_to_step(at, "optimizer")
    at.checkbox(key="auto:train.lr").check().run()
    at.switch_page("pages/review.py").run()
    top = _locked(at)[0]
    assert top == (  # in the order of the config's decisions (trainer.config.fields)
        ":material/block: **Launch is locked:** Training steps and Learning rate are still "
        "'auto'. Let the advisor choose (Fix in Validation below) or set them in the wizard."
    )
    assert "error" not in top


def test_lock_message_names_errors_and_autos_together() -> None:
    from ui.review import lock_message

    both = lock_message(["no folder at /x", "a bad rank", "Learning rate is still 'auto'"], "top")
    assert both == (
        ":material/block: **Launch is locked:** 2 errors to fix and Learning rate is still "
        "'auto'. Fix them in Validation below."
    )
    assert lock_message(["the config does not validate"], "bottom").endswith(
        "1 error to fix. Fix it above."
    )
