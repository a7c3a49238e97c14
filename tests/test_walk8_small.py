"""A newcomer's walk, the smaller finds: settings of one scheduler, loss or adapter type are
greyed out under another; Home keeps a way back to the demo once a draft exists; the demo's
model card says it is the tiny demo; a preset saved from a draft or run describes itself without
the YAML's instructions; a resize says what its error means."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from ui_support import draft, go_to_step, new_app, open_page, texts, widget

CYCLES = "cfg:train.lr_scheduler_params.num_cycles"
CYCLES_NOTE = "Applies only when **LR scheduler** is cosine_with_restarts."


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("STUDIO_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path / "home"


def _link_demo_models(demo_home: Path, home: Path) -> None:
    """The session's demo models in this test's home, as hard links (no build, no copy)."""
    from trainer.demo.tiny import _demo_target, _valid_demo_names

    def link(source: str, target: str) -> None:
        try:
            os.link(source, target)
        except OSError:
            shutil.copy2(source, target)

    for what in _valid_demo_names():
        shutil.copytree(_demo_target(demo_home, what), _demo_target(home, what), copy_function=link)


def _confirm_preflight(at: Any) -> Any:
    at.switch_page("pages/preflight.py").run()
    at.button(key="pf:confirm").click().run()
    assert not at.exception, [e.value for e in at.exception]
    return at


# ------------------------------------------------ 1. settings of another value are greyed out
def test_the_number_of_cycles_is_greyed_out_unless_the_schedule_restarts() -> None:
    at = _confirm_preflight(new_app().run())  # the advisor picks plain cosine for SD1.5
    assert draft(at)["train"]["lr_scheduler"] == "cosine"
    at.switch_page("pages/wizard.py").run()
    go_to_step(at, "optimizer")
    assert widget(at, CYCLES).disabled
    assert CYCLES_NOTE in texts(at)
    assert "one decay" not in texts(at)  # no advice on a setting without effect
    widget(at, "cfg:train.lr_scheduler").set_value("cosine_with_restarts").run()
    assert not widget(at, CYCLES).disabled
    assert CYCLES_NOTE not in texts(at)
    assert "one decay" in texts(at)  # in force again: the advisor's word on it is back


def _gate(values: dict[str, Any], path: str, monkeypatch: pytest.MonkeyPatch) -> str | None:
    from ui import field_gates

    monkeypatch.setattr(field_gates.state, "get_value", lambda p, default=None: values.get(p))
    gate = field_gates.off_switch(path)
    return None if gate is None else field_gates.gate_note(gate)


def test_value_gates_name_the_values_that_bring_a_setting_into_play(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sched = {"train.lr_scheduler": "cosine", "model.arch": "sd15"}
    assert _gate(sched, "train.lr_scheduler_params.power", monkeypatch) == (
        ":material/info: Applies only when **LR scheduler** is polynomial."
    )
    assert _gate(sched, "train.lr_scheduler_params.min_lr_ratio", monkeypatch) is None  # decays
    assert _gate(
        {"train.lr_scheduler": "constant"}, "train.lr_scheduler_params.min_lr_ratio", monkeypatch
    ) == (
        ":material/info: Applies only when **LR scheduler** is linear, cosine, "
        "cosine_with_restarts, polynomial or rex."
    )
    assert _gate({"train.loss_type": "mse"}, "train.huber_delta", monkeypatch)
    assert _gate({"train.loss_type": "huber"}, "train.huber_delta", monkeypatch) is None
    assert _gate({"network.type": "lora"}, "network.lokr_factor", monkeypatch)
    assert _gate({"network.type": "lokr"}, "network.lokr_full_rank", monkeypatch) is None
    # 'auto' timesteps are the architecture's own: Flux's shift, SD's uniform
    auto = {"train.timestep_type": "auto"}
    assert _gate({**auto, "model.arch": "flux"}, "train.timestep_shift", monkeypatch) is None
    assert _gate({**auto, "model.arch": "sd15"}, "train.timestep_shift", monkeypatch) == (
        ":material/info: Applies only when **Timestep type** is shift."
    )
    # the on/off switches keep their words
    assert _gate({"model.quantize": False}, "model.qtype", monkeypatch) == (
        ":material/info: Applies only when **Quantize the model** is on."
    )


def test_every_gate_is_one_the_advisor_also_calls_without_effect() -> None:
    from advisor.checks_unused import UNUSED
    from ui.field_gates import GATES

    assert len(GATES) > 4
    assert set(GATES) <= {path for path, _switch, _active in UNUSED}


# ---------------------------------------------------------------- 2. back to the demo from Home
def test_home_offers_to_start_over_with_the_demo_and_undo_brings_the_draft_back(
    home: Path, demo_home: Path
) -> None:
    _link_demo_models(demo_home, home)
    at = _confirm_preflight(new_app().run())
    at.switch_page("pages/wizard.py").run()
    at.text_input(key="cfg:model.name_or_path").set_value("owner/broken-model").run()
    at.session_state["draft"]["train"]["lr"] = 5.0  # something else gone wrong
    at.switch_page("pages/home.py").run()
    assert at.button(key="home:demo").label == "Start over with the demo"
    at.button(key="home:demo").click().run()
    question = texts(at)
    assert "Replace your draft with the demo?" in question
    assert "`owner/broken-model`" in question and "**Undo last change**" in question
    at.button(key="home:demo_no").click().run()  # cancel: nothing changed
    assert "Replace your draft with the demo?" not in texts(at)
    assert draft(at)["model"]["name_or_path"] == "owner/broken-model"
    at.button(key="home:demo").click().run()
    at.button(key="home:demo_yes").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert [t.value for t in at.title] == ["Review & launch"]
    data = draft(at)
    assert data["model"]["name_or_path"] == "demo:sd15"
    assert data["datasets"][0]["folder_path"] == "demo:dataset"
    assert data["train"]["lr"] != 5.0  # a new draft, not the demo over the broken one
    assert not at.button(key="rv:launch").disabled
    at.switch_page("pages/wizard.py").run()
    at.button(key="wiz:undo").click().run()  # one undo: the replaced draft, whole
    assert draft(at)["model"]["name_or_path"] == "owner/broken-model"
    assert draft(at)["train"]["lr"] == 5.0


def test_a_fresh_browser_session_with_a_draft_still_offers_the_demo() -> None:
    _confirm_preflight(new_app().run())
    fresh = open_page("pages/home.py")  # a new session: the autosaved draft is restored
    assert fresh.session_state["draft_meta"]["preflight_done"] is True
    assert fresh.button(key="home:demo").label == "Start over with the demo"


# ------------------------------------------------------------------ 3. the demo's model card
def test_the_demo_model_card_says_it_is_the_tiny_demo() -> None:
    at = open_page("pages/wizard.py")
    card = next(m.value for m in at.markdown if m.value.startswith("**Model card · "))
    assert card.splitlines()[0] == "**Model card · SD1.5 tiny demo (random weights)**"
    assert "real SD1.5 trains at 512 px" in card
    at.text_input(key="cfg:model.name_or_path").set_value("owner/model").run()  # a real model
    card = next(m.value for m in at.markdown if m.value.startswith("**Model card · "))
    assert card.splitlines()[0] == "**Model card · Stable Diffusion 1.5**"
    assert "- **Native resolution:** 512 px" in card.splitlines()
    assert "demo" not in card


# ------------------------------------------------------ 4. a saved preset's own description
def test_a_saved_preset_is_described_without_the_yaml_instructions(home: Path) -> None:
    from trainer.config.io import dump_yaml
    from trainer.config.schema import TrainingConfig
    from trainer.settings import load_settings
    from ui.presets import Preset, comment_parts, save_preset

    settings = load_settings(home=home, tracking_uri_override=None)
    path = save_preset(settings, "mine", dump_yaml(TrainingConfig()), "the wizard's draft")
    preset = Preset("mine", "user", path)
    assert "Check it with" in preset.text  # the file keeps them for whoever opens it
    parts = comment_parts(preset.text)
    assert parts.intro.startswith("Preset 'mine': the wizard's draft, saved ")
    assert "Check it with" not in parts.intro and "LoRA Studio training config" not in parts.intro
    assert preset.comment == parts.intro
    # as Compare writes one: its own line, then the run's saved config
    run_preset = "# Preset 'best': config of run 'r1' (abc, 2025-01-01 10:00 UTC).\n"
    run_preset += dump_yaml(TrainingConfig())
    intro = comment_parts(run_preset).intro
    assert intro == "Preset 'best': config of run 'r1' (abc, 2025-01-01 10:00 UTC)."


def test_the_presets_page_shows_a_saved_drafts_description_only() -> None:
    at = open_page("pages/presets.py")
    at.text_input(key="pre:save_name").set_value("mine").run()
    at.button(key="pre:save").click().run()
    at.selectbox(key="pre:choice").set_value("mine (user)").run()
    shown = [m.value for m in at.markdown]
    assert any(m.startswith("Preset 'mine': the wizard's draft, saved ") for m in shown), shown
    assert not [m for m in shown if "Check it with" in m]


# ----------------------------------------------------------------- 5. what a resize's error means
def test_the_resize_result_says_what_its_error_means() -> None:
    from ui.lora_utilities import resize_result

    stats = {"mean_rank": 3.0, "mean_error": 0.0911, "max_error": 0.142}
    text = resize_result(Path("/out/a.safetensors"), stats)
    assert text.startswith("/out/a.safetensors: mean rank 3. ")
    assert "differ from the original's by 9.1% on average (at most 14.2% in one layer)" in text
    assert "0% means nothing was lost" in text
    assert "0.0911" not in text


def test_review_compares_no_recommendation_for_a_setting_without_effect() -> None:
    """Review's table listed 'Number of cycles: 1' under plain cosine."""
    at = _confirm_preflight(new_app().run())
    at.switch_page("pages/review.py").run()

    def compared() -> list[str]:
        return [s for df in at.dataframe for s in df.value.get("Setting", [])]

    assert compared() and not [s for s in compared() if "cycles" in s.lower()]
    data = at.session_state["draft"]
    data["train"]["lr_scheduler"] = "cosine_with_restarts"
    at.session_state["draft"] = data
    at.run()
    assert [s for s in compared() if "cycles" in s.lower()]


def test_labels_tell_the_two_precisions_and_the_negative_prompt_apart() -> None:
    from ui.advice import label_of

    assert label_of("train.dtype") == "Training precision"
    assert label_of("save.dtype") == "Save precision"
    assert label_of("sample.prompts.0.neg") == label_of("sample.neg") == "Negative prompt"
    assert label_of("model.lora_path") == "Start from a LoRA file"


def test_one_differing_value_is_offered_in_the_singular() -> None:
    at = _confirm_preflight(new_app().run())  # every recommendation applied
    data = at.session_state["draft"]
    data["train"]["lr"] = 0.0123
    at.session_state["draft"] = data
    at.switch_page("pages/review.py").run()
    assert at.button(key="rv:apply_recs").label == "Use the recommended value"  # not "all 1"
