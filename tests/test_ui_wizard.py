"""The wizard in AppTest: every schema field reachable, edits reach the draft, arch hides fields."""

from __future__ import annotations

from pathlib import Path

import pytest
from ui_support import draft, go_to_step, keys, new_app, open_page, texts, widget

from trainer.config.fields import WIZARD_STEPS
from trainer.config.introspection import field_meta, iter_fields
from ui.wizard import STEPS


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("STUDIO_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path / "home"


def _set_arch(at, arch: str) -> None:
    go_to_step(at, "model")
    widget(at, "cfg:model.arch").set_value(arch).run()
    assert draft(at)["model"]["arch"] == arch


@pytest.mark.parametrize("arch", ["sd15", "sdxl", "flux"])
def test_every_schema_field_has_a_widget(arch: str) -> None:
    at = open_page("pages/wizard.py")
    _set_arch(at, arch)
    at.toggle(key="wiz:expert").set_value(True).run()
    seen: set[str] = set()
    for step in WIZARD_STEPS:
        go_to_step(at, step)
        seen |= keys(at)
    expected = {
        path
        for path, info in iter_fields()
        if not field_meta(info).get("archs") or arch in field_meta(info)["archs"]
    }
    missing = sorted(path for path in expected if f"cfg:{path}" not in seen)
    assert not missing, f"no widget for {missing} on {arch}"
    assert len(expected) > 100


def test_a_widget_change_updates_the_draft(home: Path) -> None:
    at = open_page("pages/wizard.py")
    go_to_step(at, "network")
    at.text_input(key="cfg:network.linear").set_value("32").run()
    widget(at, "cfg:network.type").set_value("lokr").run()
    assert draft(at)["network"]["linear"] == 32
    assert draft(at)["network"]["type"] == "lokr"
    go_to_step(at, "optimizer")
    at.text_input(key="cfg:train.lr").set_value("3e-4").run()
    assert draft(at)["train"]["lr"] == pytest.approx(3e-4)
    at.toggle(key="wiz:expert").set_value(True).run()
    at.text_area(key="cfg:train.optimizer_params").set_value("betas: [0.9, 0.99]").run()
    assert draft(at)["train"]["optimizer_params"] == {"betas": [0.9, 0.99]}
    # the Auto checkbox writes "auto" and gives the number back when unticked
    at.checkbox(key="auto:train.lr").check().run()
    assert draft(at)["train"]["lr"] == "auto"
    at.checkbox(key="auto:train.lr").uncheck().run()
    assert draft(at)["train"]["lr"] == pytest.approx(3e-4)
    assert not at.exception


def test_unreadable_input_is_explained_and_the_draft_keeps_its_value() -> None:
    at = open_page("pages/wizard.py")
    go_to_step(at, "resolution")
    at.text_input(key="cfg:datasets.0.resolution").set_value("512, big").run()
    assert draft(at)["datasets"][0]["resolution"] == [512]
    assert "'big' is not a whole number" in texts(at)
    at.text_input(key="cfg:datasets.0.resolution").set_value("512, 768").run()
    assert draft(at)["datasets"][0]["resolution"] == [512, 768]
    # a value the schema refuses is kept in the draft and explained under the field
    at.text_input(key="cfg:datasets.0.resolution").set_value("500").run()
    assert draft(at)["datasets"][0]["resolution"] == [500]
    assert "not a multiple of 8" in texts(at)
    go_to_step(at, "optimizer")
    at.toggle(key="wiz:expert").set_value(True).run()
    at.text_area(key="cfg:train.optimizer_params").set_value("betas: [0.9").run()
    assert "is not valid YAML" in texts(at)
    assert not at.exception


def test_arch_switch_hides_fields_that_do_not_apply() -> None:
    at = open_page("pages/wizard.py")
    go_to_step(at, "model")
    assert "cfg:model.is_v_pred" in keys(at)
    widget(at, "cfg:model.arch").set_value("flux").run()
    assert "cfg:model.is_v_pred" not in keys(at)
    assert "Hidden for Flux" in texts(at) and "V-prediction model" in texts(at)
    assert draft(at)["model"]["name_or_path"] == "demo:flux"  # the demo follows the arch
    go_to_step(at, "network")
    assert "cfg:network.conv" not in keys(at)
    at.toggle(key="wiz:expert").set_value(True).run()
    go_to_step(at, "advanced")
    assert "cfg:model.attn_masking" in keys(at)
    _set_arch(at, "sdxl")
    go_to_step(at, "advanced")
    assert "cfg:model.attn_masking" not in keys(at)
    assert "Attention masking (Flux only)" in texts(at)


def test_expert_fields_wait_behind_the_toggle() -> None:
    at = open_page("pages/wizard.py")
    go_to_step(at, "network")
    assert "cfg:network.dropout" not in keys(at)
    assert "expert setting(s) hidden" in texts(at)
    at.toggle(key="wiz:expert").set_value(True).run()
    assert "cfg:network.dropout" in keys(at)


def test_the_draft_survives_a_new_session(home: Path) -> None:
    at = open_page("pages/wizard.py")
    go_to_step(at, "network")
    at.text_input(key="cfg:network.linear").set_value("48").run()
    go_to_step(at, "save")
    at.text_input(key="cfg:name").set_value("my_cat").run()
    saved = home / "drafts" / "current.yaml"
    assert saved.exists() and "my_cat" in saved.read_text()
    fresh = new_app()  # a browser refresh is a new session
    fresh.run()
    assert draft(fresh)["network"]["linear"] == 48
    assert draft(fresh)["name"] == "my_cat"
    fresh.switch_page("pages/wizard.py").run()
    assert "Restored your draft" in texts(fresh)
    assert fresh.selectbox(key="wiz:step").value == "save"  # the wizard reopens where it was


def test_page_switch_keeps_values() -> None:
    at = open_page("pages/wizard.py")
    go_to_step(at, "training")
    at.text_input(key="cfg:train.seed").set_value("7").run()
    at.switch_page("pages/home.py").run()
    at.switch_page("pages/wizard.py").run()
    assert at.text_input(key="cfg:train.seed").value == "7"


def test_model_step_offers_every_source() -> None:
    at = open_page("pages/wizard.py")
    source = widget(at, "wiz:model_source")
    assert "Tiny demo model" in texts(at)
    source.set_value("hub").run()
    assert draft(at)["model"]["name_or_path"] == ""
    at.text_input(key="cfg:model.name_or_path").set_value("owner/model").run()
    assert "owner/model is not in the local Hugging Face cache" in texts(at)  # tests: offline
    assert "No cached copy on this machine" in texts(at)
    at.text_input(key="cfg:model.name_or_path").set_value("/nowhere/model.safetensors").run()
    assert widget(at, "wiz:model_source").value == "file"
    assert "no file at" in texts(at)
    widget(at, "wiz:model_source").set_value("demo").run()
    assert draft(at)["model"]["name_or_path"] == "demo:sd15"


def test_dataset_step_analyses_the_demo_dataset() -> None:
    at = open_page("pages/wizard.py")
    go_to_step(at, "dataset")
    assert at.toggle(key="wiz:ds_demo:0").value is True
    if any(b.key == "wiz:analyse:0" for b in at.button):
        at.button(key="wiz:analyse:0").click().run()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Images"] == "12"
    assert metrics["With captions"] == "12 / 12"
    assert int(metrics["Steps per epoch"]) > 0
    assert "Sizes:" in texts(at)
    at.button(key="wiz:ds_add").click().run()
    assert len(draft(at)["datasets"]) == 2
    assert "cfg:datasets.1.folder_path" in keys(at)


def test_table_edits_become_config_rows() -> None:
    from trainer.config.sections.datasets import Augmentation
    from trainer.config.sections.outputs import SamplePrompt
    from ui.widgets import table_rows

    base = [{"prompt": "a [trigger]", "seed": None}, {"prompt": "old"}]
    edits = {
        "edited_rows": {0: {"seed": 7.0, "neg": ""}},
        "added_rows": [{"prompt": "new one", "width": 512.0}, {"prompt": None}],
        "deleted_rows": [1],
    }
    rows = table_rows(base, edits, SamplePrompt)
    assert rows == [{"prompt": "a [trigger]", "seed": 7}, {"prompt": "new one", "width": 512}]
    assert all(isinstance(r.get("seed", 0), int) for r in rows)
    augs = table_rows([], {"added_rows": [{"type": "blur", "probability": 0.3}]}, Augmentation)
    assert augs == [{"type": "blur", "probability": 0.3}]


def test_the_prompt_table_is_an_editor_keyed_by_its_path() -> None:
    at = open_page("pages/wizard.py")
    go_to_step(at, "sampling")
    editors = {e.key for e in at.data_editor}
    assert "cfg:sample.prompts" in editors
    go_to_step(at, "resolution")
    at.toggle(key="wiz:expert").set_value(True).run()
    assert "cfg:datasets.0.augmentations" in {e.key for e in at.data_editor}


def test_removing_a_dataset_keeps_each_switch_with_its_dataset() -> None:
    at = open_page("pages/wizard.py")
    go_to_step(at, "dataset")
    at.button(key="wiz:ds_add").click().run()
    at.text_input(key="cfg:datasets.1.folder_path").set_value("/data/cats").run()
    assert at.toggle(key="wiz:ds_demo:1").value is False
    at.button(key="wiz:ds_remove:0").click().run()
    assert [d["folder_path"] for d in draft(at)["datasets"]] == ["/data/cats"]
    assert at.toggle(key="wiz:ds_demo:0").value is False
    assert "Folder not found" in texts(at)
    assert not at.exception


def _refusals(at) -> list[str]:
    return [e.value for e in at.error if "Not accepted" in e.value]


def test_number_typos_are_refused_visibly_and_the_field_shows_the_value_in_force() -> None:
    at = open_page("pages/wizard.py")
    go_to_step(at, "training")
    at.text_input(key="cfg:train.seed").set_value("7").run()
    assert draft(at)["train"]["seed"] == 7 and not _refusals(at)
    for typed, why in [
        ("3o", "'3o' is not a whole number"),  # number_input made this 3, silently
        ("abc", "'abc' is not a whole number"),  # ... and this the old value, silently
        ("5000000000", "5000000000 is too large: it must be at most 4294967295"),
        ("-1", "-1 is too small: it must be at least 0"),
        ("1,000", "write it without commas: 1000"),
        ("", "left empty"),
    ]:
        at.text_input(key="cfg:train.seed").set_value(typed).run()
        assert draft(at)["train"]["seed"] == 7, typed  # the draft keeps its valid value
        assert at.text_input(key="cfg:train.seed").value == "7", typed  # and the box shows it
        [message] = _refusals(at)
        assert why in message and "The value in force is still 7" in message, message
    at.toggle(key="wiz:expert").set_value(True).run()  # another rerun: still explained
    assert len(_refusals(at)) == 1 and at.text_input(key="cfg:train.seed").value == "7"
    at.text_input(key="cfg:train.seed").set_value(" 8.0 ").run()  # a whole number as a float
    assert draft(at)["train"]["seed"] == 8 and not _refusals(at)
    assert at.text_input(key="cfg:train.seed").value == "8"


def test_float_fields_read_what_was_typed_and_refuse_out_of_range() -> None:
    at = open_page("pages/wizard.py")
    go_to_step(at, "optimizer")
    at.text_input(key="cfg:train.lr").set_value("3e-4").run()
    assert draft(at)["train"]["lr"] == pytest.approx(3e-4)
    assert at.text_input(key="cfg:train.lr").value == "0.0003"  # shown as the value in force
    for typed, why in [
        ("0", "0 is too small: it must be more than 0"),  # gt=0: the limit itself is refused
        ("11", "11 is too large: it must be at most 10"),
        ("0,001", "write a dot: 0.001"),
        ("nan", "'nan' is not a finite number"),
    ]:
        at.text_input(key="cfg:train.lr").set_value(typed).run()
        assert draft(at)["train"]["lr"] == pytest.approx(3e-4), typed
        assert at.text_input(key="cfg:train.lr").value == "0.0003", typed
        [message] = _refusals(at)
        assert why in message and "The value in force is still 0.0003" in message, message
    assert not at.exception


def test_number_text_formats_exactly_and_parses_strictly() -> None:
    from ui.number_text import Bounds, format_number, parse_number

    for value in (1e-4, 5e-5, 1 / 3, 16.0, 0.1, 2**32 - 1):
        assert type(parse_number(format_number(value), "float", Bounds())) is float
        assert float(format_number(value)) == value  # shown exactly
    assert [format_number(v) for v in (1e-4, 5e-5, 16.0, 1000, None, "auto")] == [
        "0.0001",
        "5e-05",
        "16",
        "1000",
        "",
        "",
    ]
    assert parse_number("1e3", "int", Bounds()) == 1000
    assert parse_number("", "int", Bounds(), optional=True) is None
    with pytest.raises(ValueError, match="not a whole number"):
        parse_number("3.5", "int", Bounds())
    with pytest.raises(ValueError, match="less than 1"):
        parse_number("1", "float", Bounds(high=1.0, high_open=True))
    assert Bounds(0, True, 10).hint("float") == "number, above 0, at most 10"
    assert Bounds(1, False, 4096).hint("int") == "whole number, 1 to 4096"


def test_the_step_picker_counts_errors_and_warnings_not_suggestions() -> None:
    from types import SimpleNamespace

    from ui.advice import Finding
    from ui.wizard import step_label

    def label(*severities: str) -> str:
        found = [Finding(s, s, ["train.lr"]) for s in severities]
        return step_label("optimizer", SimpleNamespace(findings_for=lambda paths: found))

    assert label("suggestion") == "7 · Optimizer & learning rate"
    assert label("suggestion", "warning", "error") == (
        "7 · Optimizer & learning rate · 1 error(s) · 1 warning(s)"
    )
    assert label("info", "info") == "7 · Optimizer & learning rate"  # "fine": never a problem
    assert label("info", "warning") == "7 · Optimizer & learning rate · 1 warning(s)"


def test_every_severity_has_one_style_and_information_is_no_warning() -> None:
    from advisor.findings import SEVERITIES
    from ui.advice import PLURALS, SEVERITY_STYLE, Finding, severity_badge, severity_summary

    assert list(SEVERITY_STYLE) == list(SEVERITIES) and set(PLURALS) == set(SEVERITIES)
    assert all(s.icon.startswith(":material/") for s in SEVERITY_STYLE.values())  # no emoji
    assert len({s.icon for s in SEVERITY_STYLE.values()}) == len(SEVERITIES)
    info = SEVERITY_STYLE["info"]
    assert info.icon == ":material/info:" and "warning" not in (info.word + info.icon).lower()
    assert severity_badge("error") == ":red[:material/error: **Error**]"
    found = [Finding(s, s, ["train.lr"]) for s in ("info", "warning", "info")]
    summary = severity_summary(found)
    assert summary == (
        ":material/warning: **1 warning(s)** · :material/info: **2 note(s) for your information**"
    )


def test_the_step_picker_shows_a_new_warning_on_the_same_rerun() -> None:
    """The browser shows the chosen step by the label it was last sent, and Streamlit sends a
    select box's value only when the script sets it: an edit that adds a warning must send the
    new label at once (it used to show up one action later)."""
    at = open_page("pages/wizard.py")
    go_to_step(at, "optimizer")
    index = STEPS.index("optimizer")
    widget(at, "cfg:train.optimizer").set_value("adamw").run()  # no 8-bit warning on a CPU
    assert at.selectbox(key="wiz:step").proto.options[index] == "7 · Optimizer & learning rate"
    at.text_input(key="cfg:train.lr").set_value("1e-6").run()  # lr_low: a warning on this step
    picker = at.selectbox(key="wiz:step").proto
    assert picker.options[index] == "7 · Optimizer & learning rate · 1 warning(s)"
    assert picker.set_value and picker.raw_value == picker.options[index]
    at.text_input(key="cfg:train.lr").set_value("2e-4").run()  # the warning goes again
    picker = at.selectbox(key="wiz:step").proto
    assert picker.set_value and picker.raw_value == "7 · Optimizer & learning rate"
    at.run()  # nothing changed: nothing to send
    assert not at.selectbox(key="wiz:step").proto.set_value
    assert at.selectbox(key="wiz:step").value == "optimizer"


def test_a_list_items_error_names_the_entry_not_its_index() -> None:
    from ui.widgets import _where_in

    assert _where_in("") == "" and _where_in("0") == "entry 1: " and _where_in("2") == "entry 3: "
    assert _where_in("lr") == "lr: "


# --------------------------------------------------- the last step: a primary Review button
def test_the_last_step_moves_on_with_a_primary_review_button() -> None:
    at = open_page("pages/wizard.py")
    go_to_step(at, STEPS[-2])
    next_button = at.button(key="wiz:next")
    assert next_button.proto.type == "primary" and next_button.label.endswith(" →")
    next_button.click().run()
    assert at.selectbox(key="wiz:step").value == STEPS[-1]
    review = at.button(key="wiz:review")
    assert review.label == "Review and launch →"
    assert review.proto.type == next_button.proto.type == "primary"  # same weight as Next
    assert "wiz:next" not in {b.key for b in at.button}
    assert not [p for p in at.get("page_link") if "Review" in p.proto.label]  # no faint link
    review.click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert [t.value for t in at.title] == ["Review & launch"]
    assert not at.button(key="rv:launch").disabled


def test_earlier_steps_have_no_review_button() -> None:
    at = open_page("pages/wizard.py")
    assert at.selectbox(key="wiz:step").value == STEPS[0]
    assert "wiz:review" not in {b.key for b in at.button}
    assert at.button(key="wiz:next").proto.type == "primary"


def test_leaving_the_demo_dataset_drops_its_trigger_word() -> None:
    from trainer.demo.dataset import TRIGGER_WORD

    at = open_page("pages/wizard.py")
    go_to_step(at, "dataset")
    at.session_state["draft"]["datasets"][0]["trigger_word"] = TRIGGER_WORD
    at.run()
    at.toggle(key="wiz:ds_demo:0").set_value(False).run()
    assert draft(at)["datasets"][0]["folder_path"] == ""
    assert draft(at)["datasets"][0]["trigger_word"] is None
