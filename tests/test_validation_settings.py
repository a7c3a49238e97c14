"""The validation settings: all on the Dataset step (held-out images and folder first, how often
and how it is scored under More settings), each with its own label and explanation, and named in
the summary header of the wizard and Review while validation is on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ui_support import go_to_step, open_page, texts

from advisor.explain import explain_field
from trainer.config.introspection import field_meta, iter_fields
from trainer.config.schema import TrainingConfig
from ui.advice import label_of
from ui.summary import validation_text

VALIDATION = ("holdout", "folder_path", "every", "draws", "seed")


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("STUDIO_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    return tmp_path / "home"


def with_draft(home: Path, **validation: object) -> None:
    draft = TrainingConfig().model_dump(mode="json")
    draft["validation"].update(validation)
    (home / "drafts").mkdir(parents=True, exist_ok=True)
    (home / "drafts" / "current.yaml").write_text(json.dumps(draft), encoding="utf-8")


def test_every_validation_setting_is_on_the_dataset_step_basics_first() -> None:
    meta = {p: field_meta(i) for p, i in iter_fields() if p.startswith("validation.")}
    assert {p.split(".")[1] for p in meta} == set(VALIDATION)
    assert {p: m["step"] for p, m in meta.items()} == {p: "dataset" for p in meta}
    levels = {p.split(".")[1]: m["level"] for p, m in meta.items()}
    assert levels == {
        "holdout": "basic",
        "folder_path": "basic",
        "every": "advanced",
        "draws": "advanced",
        "seed": "advanced",
    }


def test_each_validation_setting_has_its_own_label_and_explanation() -> None:
    labels = {name: label_of(f"validation.{name}") for name in VALIDATION}
    assert all(label.startswith("Validation") for label in labels.values()), labels
    assert "0 = at each save" in labels["every"]
    beginner = {name: explain_field(f"validation.{name}", "beginner") for name in VALIDATION}
    for name, explained in beginner.items():
        assert "works on its own" not in explained.interactions, name
        assert "It changes what the results look like" not in explained.what, name
        assert "Changing it changes" not in explained.watch_for, name
    assert len({e.what for e in beginner.values()}) == len(VALIDATION)  # no shared fallback
    assert "never trained on" in beginner["holdout"].what
    assert "overfit" in beginner["holdout"].what or "copying" in beginner["holdout"].what
    assert "fewer steps" in beginner["holdout"].interactions
    assert "0 = only when a LoRA is saved" in beginner["every"].what
    description = TrainingConfig.model_fields["validation"].annotation.model_fields["every"]
    assert "0 = only when a LoRA is saved" in description.description


def test_validation_text_names_the_images_and_how_often() -> None:
    on = {"validation": {"holdout": 2, "every": 10, "folder_path": None}}
    assert validation_text(on) == "Validation: 2 held-out images, every 10 steps and at each save"
    at_saves = {"validation": {"holdout": 1, "every": 0}}
    assert validation_text(at_saves) == "Validation: 1 held-out image, at each save and at the end"
    folder = {"validation": {"holdout": 0, "folder_path": "/data/val", "every": 5}}
    assert validation_text(folder) == (
        "Validation: the images of `/data/val`, every 5 steps and at each save"
    )
    assert validation_text({"validation": {"holdout": 0, "every": 10}}) == ""
    assert validation_text({}) == ""


@pytest.mark.parametrize("holdout", [2, 0])
def test_review_and_the_wizard_show_validation_while_it_is_on(home: Path, holdout: int) -> None:
    with_draft(home, holdout=holdout, every=10)
    at = open_page("pages/review.py")
    shown = "Validation: 2 held-out images, every 10 steps and at each save" in texts(at)
    assert shown == bool(holdout)
    at.switch_page("pages/wizard.py").run()
    go_to_step(at, "dataset")
    assert not at.exception, [e.value for e in at.exception]
    keys = {w.key for w in at.text_input}
    assert {f"cfg:validation.{name}" for name in ("holdout", "every", "draws", "seed")} <= keys
    assert ("Validation: 2 held-out images" in texts(at)) == bool(holdout)
