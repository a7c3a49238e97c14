"""The presets page in AppTest: built-in and user presets, load into the draft, save, import."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from trainer.config.io import loads_config

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    (home / "presets").mkdir(parents=True)
    monkeypatch.setenv("STUDIO_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return home


def open_presets() -> AppTest:
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=60)
    at.run()
    at.switch_page("pages/presets.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_lists_built_in_and_user_presets_with_their_source(home: Path) -> None:
    mine = (ROOT / "presets" / "demo_sd15.yaml").read_text().replace("name: demo_sd15", "name: m")
    (home / "presets" / "mine.yaml").write_text("# my own tweak\n" + mine)
    at = open_presets()
    options = at.selectbox(key="pre:choice").options
    assert options[0] == "mine (user)"
    built_in = {p.stem for p in (ROOT / "presets").glob("*.yaml")}
    assert {o.removesuffix(" (built-in)") for o in options[1:]} == built_in
    assert "my own tweak" in at.markdown[0].value
    at.selectbox(key="pre:choice").set_value("demo_sd15 (built-in)").run()
    assert "Stable Diffusion 1.5 demo" in at.markdown[0].value
    assert "name: demo_sd15" in at.code[0].value


def test_without_user_presets_a_demo_that_runs_anywhere_comes_first(home: Path) -> None:
    options = open_presets().selectbox(key="pre:choice").options
    demos = [o for o in options if o.startswith("demo_")]
    assert options[0] == "demo_sd15 (built-in)" and options[: len(demos)] == demos
    assert len(demos) == 3 and "character_flux (built-in)" in options[len(demos) :]


def test_load_a_preset_into_the_draft_and_save_the_draft(home: Path) -> None:
    at = open_presets()
    at.selectbox(key="pre:choice").set_value("style_sdxl (built-in)").run()
    at.button(key="pre:load").click().run()
    assert not at.exception
    draft = at.session_state["draft"]
    expected = loads_config((ROOT / "presets" / "style_sdxl.yaml").read_text())
    assert draft["model"]["arch"] == "sdxl" and draft["train"]["lr"] == expected.train.lr
    at.text_input(key="pre:save_name").set_value("my style").run()
    at.button(key="pre:save").click().run()
    saved = home / "presets" / "my_style.yaml"
    text = saved.read_text()
    assert text.startswith("# Preset 'my style': the wizard's draft")
    assert loads_config(text).model_dump() == expected.model_dump()
    assert "my_style (user)" in at.selectbox(key="pre:choice").options


def test_import_validates_and_stores_pasted_yaml(home: Path) -> None:
    at = open_presets()
    at.text_area(key="pre:paste").set_value("train:\n  lr: -1\n  nonsense: 3\n")
    at.text_input(key="pre:import_name").set_value("bad").run()
    at.button(key="pre:import").click().run()
    assert at.error and "train.lr" in at.error[0].value and "nonsense" in at.error[0].value
    assert not (home / "presets" / "bad.yaml").exists()
    good = (ROOT / "presets" / "demo_flux.yaml").read_text()
    at.text_area(key="pre:paste").set_value(good)
    at.text_input(key="pre:import_name").set_value("flux copy").run()
    at.button(key="pre:import").click().run()
    assert "flux_copy.yaml" in at.success[0].value
    assert loads_config((home / "presets" / "flux_copy.yaml").read_text()).model.arch == "flux"


def test_export_offers_the_preset_yaml(home: Path) -> None:
    at = open_presets()
    at.selectbox(key="pre:choice").set_value("demo_sdxl (built-in)").run()
    first = at.get("download_button")[0].proto.url
    at.selectbox(key="pre:choice").set_value("demo_flux (built-in)").run()
    second = at.get("download_button")[0].proto.url
    assert first.startswith("/mock/media/") and first != second  # the media follows the choice


def test_import_from_kohya_fills_the_draft_and_lists_what_did_not_map(home: Path) -> None:
    at = open_presets()
    toml = (Path(__file__).parent / "import_samples" / "kohya_sdxl.toml").read_text()
    at.text_area(key="pre:other_paste").set_value(toml).run()
    at.button(key="pre:other_import").click().run()
    assert not at.exception
    draft = at.session_state["draft"]
    assert draft["model"]["arch"] == "sdxl" and draft["network"]["linear"] == 32
    assert draft["train"]["epochs"] == 10  # max_train_epochs maps since epochs exist
    message = at.success[0].value
    assert "kohya-toml" in message and "7 not mapped" in message and "xformers" in message


def test_a_loaded_preset_gets_recommendations_for_its_own_model(home: Path) -> None:
    """Preflight on the demo recommends the demo's 64 px and 30 steps; a preset for a real model
    loaded after must not be offered those ("Use all recommended values" would shrink it)."""
    at = open_presets()
    at.switch_page("pages/preflight.py").run()
    at.radio(key="pf:what").set_value("style").run()
    at.toggle(key="pf:demo").set_value(True).run()
    at.button(key="pf:confirm").click().run()
    meta = at.session_state["draft_meta"]
    assert meta["recommendations"]["datasets.0.resolution"]["value"] == [64]
    assert meta["intent"]["what"] == "style"
    assert meta["recommended_for_model"] == "demo:sd15"
    at.switch_page("pages/presets.py").run()
    at.selectbox(key="pre:choice").set_value("person_sd15 (built-in)").run()
    at.button(key="pre:load").click().run()
    assert not at.exception, [e.value for e in at.exception]
    meta, data = at.session_state["draft_meta"], at.session_state["draft"]
    assert meta["recommended_for_model"] == data["model"]["name_or_path"] != "demo:sd15"
    recs = meta["recommendations"]
    assert recs["datasets.0.resolution"]["value"] != [64]
    assert "tiny demo" not in " ".join(rec["reason"] for rec in recs.values())
    # The preset trains a person: the advice is for a person now, not the preflight's style.
    assert data["intent"] == meta["intent"]["what"] == "person"
    assert "what" not in meta["intent"].get("assumed", [])
    assert "style" not in " ".join(rec["reason"] for rec in recs.values())


def test_recommendations_for_another_model_say_so_and_offer_to_recommend_again(
    home: Path,
) -> None:
    at = open_presets()
    at.switch_page("pages/preflight.py").run()
    at.toggle(key="pf:demo").set_value(True).run()
    at.button(key="pf:confirm").click().run()
    data = at.session_state["draft"]
    data["model"]["name_or_path"] = "my-org/my-sd15"  # as the model step would set it
    at.session_state["draft"] = data
    at.switch_page("pages/wizard.py").run()
    shown = " ".join(m.value for m in at.markdown)  # the model names as text: ':' escaped
    assert "These were made for **demo\\:sd15**; the draft is now my-org/my-sd15." in shown
    refresh = [b for b in at.button if b.key and b.key.endswith(":refresh")]
    assert refresh and refresh[0].label == "Recommend for my-org/my-sd15"
    refresh[0].click().run()
    assert at.session_state["draft_meta"]["recommended_for_model"] == "my-org/my-sd15"
    assert "These were made for" not in " ".join(m.value for m in at.markdown)
