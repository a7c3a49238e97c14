"""A newcomer's walk through the wizard on the defaults (the SD1.5 demo): no step looks empty,
a setting without effect is greyed out and says why, the prompt table is readable, the model
card has no blank header row, and building the demo models says what was built where."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import streamlit as st
from ui_support import draft, go_to_step, keys, new_app, open_page, texts, widget

from trainer.config.fields import WIZARD_STEPS

GATE_NOTE = "Applies only when **{}** is on."


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("STUDIO_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path / "home"


def keys_in_sight(at) -> set[str]:
    """Keys of the settings shown without opening an expander."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if getattr(node, "type", "") == "expander":
            return
        key = getattr(node, "key", None)
        if key and key.startswith(("cfg:", "auto:")):
            found.add(key)
        for child in getattr(node, "children", {}).values():
            walk(child)

    walk(at._tree)
    return found


def expander_labels(at) -> list[str]:
    return [e.label for e in at.expander]


# ----------------------------------------------------------------- 1. no step looks empty
def test_every_step_shows_settings_without_a_click() -> None:
    at = open_page("pages/wizard.py")
    empty = []
    for step in WIZARD_STEPS:
        go_to_step(at, step)
        if not keys_in_sight(at):
            empty.append(step)
    assert not empty, f"only a closed expander on {empty}"


def test_the_last_step_shows_its_advanced_settings_openly() -> None:
    at = open_page("pages/wizard.py")
    go_to_step(at, list(WIZARD_STEPS)[-1])
    in_sight = keys_in_sight(at)
    assert {"cfg:model.low_vram", "cfg:model.layer_offloading", "cfg:runtime.device"} <= in_sight
    assert not [label for label in expander_labels(at) if label.startswith("More settings")]
    assert "expert setting(s) hidden" in texts(at)  # expert ones still wait behind the switch
    go_to_step(
        at, "quantization"
    )  # a step with basic settings keeps its advanced ones a click away
    assert "More settings (1 advanced)" in expander_labels(at)
    assert "cfg:model.quantize" in keys_in_sight(at)
    assert "cfg:model.quantize_te" in keys(at) - keys_in_sight(at)


# ------------------------------------------------- 2. a setting without effect is greyed out
def test_the_quantization_type_is_greyed_out_while_quantization_is_off() -> None:
    at = open_page("pages/wizard.py")
    go_to_step(at, "quantization")
    assert draft(at)["model"]["quantize"] is False
    assert widget(at, "cfg:model.qtype").disabled
    assert GATE_NOTE.format("Quantize the model") in texts(at)
    at.toggle(key="cfg:model.quantize").set_value(True).run()
    assert not widget(at, "cfg:model.qtype").disabled
    assert GATE_NOTE.format("Quantize the model") not in texts(at)
    widget(at, "cfg:model.qtype").set_value("nf4").run()
    assert draft(at)["model"]["qtype"] == "nf4"
    at.toggle(key="cfg:model.quantize").set_value(False).run()  # kept for when it is on again
    assert widget(at, "cfg:model.qtype").disabled and draft(at)["model"]["qtype"] == "nf4"


def test_the_offloaded_shares_are_greyed_out_without_layer_offloading() -> None:
    at = open_page("pages/wizard.py")
    go_to_step(at, "advanced")
    shares = ("transformer", "text_encoder")
    for part in shares:
        assert at.text_input(key=f"cfg:model.layer_offloading_{part}_percent").disabled
    assert texts(at).count(GATE_NOTE.format("Layer offloading")) == 2
    at.toggle(key="cfg:model.layer_offloading").set_value(True).run()
    for part in shares:
        assert not at.text_input(key=f"cfg:model.layer_offloading_{part}_percent").disabled
    assert GATE_NOTE.format("Layer offloading") not in texts(at)


def test_review_greys_out_the_quantization_type_too() -> None:
    at = open_page("pages/review.py")
    assert widget(at, "cfg:model.qtype").disabled
    assert GATE_NOTE.format("Quantize the model") in texts(at)
    title = WIZARD_STEPS["quantization"][0]
    summary = next(label for label in expander_labels(at) if label.startswith(f"{title} — "))
    assert "float8" not in summary and "Quantization type" not in summary  # not a choice made
    at.toggle(key="cfg:model.quantize").set_value(True).run()
    summary = next(label for label in expander_labels(at) if label.startswith(f"{title} — "))
    assert "Quantization type: " in summary


# ----------------------------------------------------------------- 3. the prompt table
def test_the_prompt_table_shows_empty_cells_blank_with_room_for_its_columns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import json

    calls: list[dict[str, Any]] = []
    editor = st.data_editor

    def recording(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return editor(*args, **kwargs)

    monkeypatch.setattr(st, "data_editor", recording)
    from ui.widgets import table_height

    at = open_page("pages/wizard.py")
    go_to_step(at, "sampling")
    table = next(e for e in at.data_editor if e.key == "cfg:sample.prompts")
    assert table.proto.placeholder == ""  # an unset cell is blank, not "None"
    columns = json.loads(table.proto.columns)
    assert columns["prompt"]["width"] == 280 and columns["neg"]["width"] == 160
    assert columns["neg"]["label"] == "Negative prompt"
    assert columns["network_multiplier"]["label"] == "LoRA strength"
    assert {columns[n]["width"] for n in ("seed", "width", "height", "sample_steps")} == {"small"}
    prompts = next(c for c in calls if c.get("key") == "cfg:sample.prompts")
    assert prompts["width"] == "stretch"
    assert prompts["height"] == table_height(len(draft(at)["sample"]["prompts"]))


def test_the_table_height_has_room_for_three_rows_and_scrolls_past_twelve() -> None:
    from ui.widgets import TABLE_ROW_PX, table_height

    header_and_new_row = 2 * TABLE_ROW_PX
    assert table_height(0) == table_height(3) == 3 * TABLE_ROW_PX + header_and_new_row + 3
    assert table_height(5) == 5 * TABLE_ROW_PX + header_and_new_row + 3
    assert table_height(40) == table_height(12)


# ------------------------------------------------------------------------- 4. the model card
def test_the_model_card_is_a_list_without_a_blank_header_row() -> None:
    at = open_page("pages/wizard.py")
    card = next(m.value for m in at.markdown if m.value.startswith("**Model card · "))
    assert card.startswith("**Model card · SD1.5 tiny demo (random weights)**")
    assert "|" not in card  # no table, so no header row to leave blank
    resolution = "64 px: the tiny demo's size (the real SD1.5 trains at 512 px)"
    assert f"- **Native resolution:** {resolution}" in card.splitlines()
    assert "- **Download:** none: built on this machine" in card.splitlines()


def test_a_model_card_value_shows_as_text() -> None:
    from ui.model_panel import model_card_markdown

    card = model_card_markdown("SD", [("Licence", "**any** <b>use</b>")])
    assert card.endswith("- **Licence:** \\*\\*any\\*\\* \\<b\\>use\\</b\\>")


# ------------------------------------------------------------------ 5. building the demo
def test_building_the_demo_models_says_what_was_built_where(
    monkeypatch: pytest.MonkeyPatch, home: Path
) -> None:
    import ui.demo_build

    built = {
        "sd15": home / "models" / "demo" / "sd15",
        "sdxl": home / "models" / "demo" / "sdxl",
        "flux": home / "models" / "demo" / "flux",
        "dataset": home / "datasets" / "demo",
    }
    monkeypatch.setattr(ui.demo_build, "build_all", lambda folder: built)  # no real build
    at = new_app()
    at.run()
    assert not at.success
    at.button(key="build_demo").click().run()
    assert not at.exception, [e.value for e in at.exception]
    [notice] = [s.value for s in at.success]
    assert notice.startswith("**Built:** the demo models sd15, sdxl, flux")
    assert f"in `{home / 'models' / 'demo'}`" in notice
    assert f"the demo dataset in `{home / 'datasets' / 'demo'}`" in notice
    at.run()  # said once: the next run of the page has moved on
    assert not at.success


def test_the_built_message_names_each_folder_when_they_differ(tmp_path: Path) -> None:
    from ui.demo_build import built_message

    text = built_message({"sd15": tmp_path / "a" / "sd15", "flux": tmp_path / "b" / "flux"})
    assert f"sd15 in `{tmp_path / 'a' / 'sd15'}`" in text
    assert f"flux in `{tmp_path / 'b' / 'flux'}`" in text
    assert "dataset" not in text
