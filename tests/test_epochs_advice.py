"""Epochs chosen in the wizard stay the run's length through the advisor's recommendations: no
steps value the epochs would override is recommended or applied, applying recommendations keeps
steps and epochs one length, and the header and the sampling reason quote the resolved steps
(the demo dataset: 12 images, 2 held out for validation, batch 2: 5 steps per epoch)."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_advisor_cases import PROFILES
from ui_support import draft, go_to_step, open_page, texts

from advisor.dataset import DatasetInfo
from advisor.defaults import recommend
from advisor.draft import UserIntent
from trainer.config.schema import TrainingConfig
from ui.steps_epochs import linked_patch, offered


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("STUDIO_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path / "home"


def _demo(epochs: int | None) -> TrainingConfig:
    data = TrainingConfig().model_dump(mode="json")
    data["model"]["name_or_path"] = "demo:sd15"
    data["train"]["epochs"] = epochs
    data["validation"]["holdout"] = 2
    return TrainingConfig.model_validate(data)


def test_with_epochs_the_advisor_recommends_no_steps_and_quotes_the_resolved_length() -> None:
    found = recommend(UserIntent(), "sd15", PROFILES["rtx4090"], DatasetInfo.counts(12), _demo(3))
    paths = {r.path for r in found.recommendations}
    assert "train.steps" not in paths and "train.epochs" not in paths
    assert found.config.train.epochs == 3 and found.config.train.batch_size == 2
    every = found.get("sample.sample_every")
    assert every.value == 10
    assert every.reason.startswith("2 previews over the 15 steps (one every 10)")
    plain = recommend(
        UserIntent(), "sd15", PROFILES["rtx4090"], DatasetInfo.counts(12), _demo(None)
    )
    assert plain.get("train.steps").value == 30  # without epochs the steps are recommended
    assert plain.get("sample.sample_every").reason.startswith("3 previews over the 30 steps")


def test_applying_values_keeps_steps_and_epochs_one_length() -> None:
    data = _demo(3).model_dump(mode="json")
    data["train"]["batch_size"], data["train"]["steps"] = 2, 15
    # steps applied while epochs are set clear the epochs; a batch size brings the steps along
    assert linked_patch({"train.steps": 30}, data) == {"train.steps": 30, "train.epochs": None}
    assert linked_patch({"train.batch_size": 1}, data) == {
        "train.batch_size": 1,
        "train.steps": 30,  # 10 trained images, one per step, 3 epochs
    }
    recs = {"train.steps": {"value": 30}, "train.lr": {"value": 1e-4}}
    assert offered(recs, data) == {"train.lr": {"value": 1e-4}}
    data["train"]["epochs"] = None
    assert offered(recs, data) == recs


def _steps_in_header(at) -> str:
    captions = [c.value for c in at.caption]
    assert "Steps" in captions, captions
    found = [m.value for m in at.markdown if m.value.startswith("**") and "steps" not in m.value]
    return " ".join(found)


def test_the_wizard_with_epochs_offers_no_contradicting_steps(home: Path) -> None:
    at = open_page("pages/preflight.py")
    at.button(key="pf:confirm").click().run()  # the demo: 30 steps, batch 2
    assert not at.exception, [e.value for e in at.exception]
    at = open_page("pages/wizard.py")
    go_to_step(at, "dataset")
    at.text_input(key="cfg:validation.holdout").set_value("2").run()
    go_to_step(at, "training")
    at.text_input(key="cfg:train.epochs").set_value("3").run()
    assert not at.exception, [e.value for e in at.exception]
    assert (draft(at)["train"]["steps"], draft(at)["train"]["epochs"]) == (15, 3)
    shown = texts(at)
    assert "15 steps = 3 epochs** of 5 steps" in shown
    assert "Recommended: 30" not in shown and "(yours: 15)" not in shown
    assert "**15**" in shown  # the header's Steps
    go_to_step(at, "sampling")
    shown = texts(at)
    assert "2 previews over the 15 steps (one every 10)" in shown
    assert "over the 30 steps" not in shown
    go_to_step(at, "memory")
    at.text_input(key="cfg:train.batch_size").set_value("1").run()  # not the recommended 2
    assert (draft(at)["train"]["steps"], draft(at)["train"]["epochs"]) == (30, 3)
    at.switch_page("pages/review.py").run()
    assert not at.exception, [e.value for e in at.exception]
    (rows,) = [d.value for d in at.dataframe if "Path" in d.value.columns]  # yours vs recommended
    assert (
        "train.steps" not in rows["Path"].tolist() and "train.batch_size" in rows["Path"].tolist()
    )
    at.button(key="rv:apply_recs").click().run()  # the batch size of 2 brings the steps along
    assert not at.exception, [e.value for e in at.exception]
    data = draft(at)
    assert (data["train"]["batch_size"], data["train"]["steps"], data["train"]["epochs"]) == (
        2,
        15,
        3,
    )
    assert "**15**" in texts(at)


def test_more_steps_move_the_recommended_previews_with_them(home: Path) -> None:
    """Set to 120 steps, the sampling step still recommended '3 previews over the 30 steps' (the
    advisor's own length) while its warning said every 10 was too often for 120."""
    at = open_page("pages/preflight.py")
    at.button(key="pf:confirm").click().run()  # the demo: 30 steps, a preview every 10
    at = open_page("pages/wizard.py")
    go_to_step(at, "training")
    at.text_input(key="cfg:train.steps").set_value("120").run()
    assert not at.exception, [e.value for e in at.exception]
    recs = at.session_state["draft_meta"]["recommendations"]
    assert recs["train.steps"]["value"] == 30  # the advisor's length stays its advice
    assert recs["sample.sample_every"]["value"] == recs["save.save_every"]["value"] == 15
    go_to_step(at, "sampling")
    shown = texts(at)
    assert "8 previews over the 120 steps (one every 15)" in shown
    assert "over the 30 steps" not in shown
