"""Held-out validation images in the step arithmetic everywhere: the wizard's Dataset card, the
Training step and the Datasets page count one epoch alike (the advisor's ``epoch_count``) and say
why it is shorter: the held-out images are never trained on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_advisor_cases import make
from ui_support import go_to_step, open_page, texts

from advisor.dataset import DatasetInfo, epoch_count
from trainer.config.schema import TrainingConfig
from ui.steps_epochs import run_length_text

WHY = "10 images trained (12 − 2 held out for validation) × 1 repeat ÷ batch 2"


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("STUDIO_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    return tmp_path / "home"


def with_draft(home: Path, holdout: int) -> None:
    """An autosaved draft: the demo dataset (12 images) at 64 px, batch 2, 15 steps."""
    draft = TrainingConfig().model_dump(mode="json")
    draft["datasets"][0]["resolution"] = [64]
    draft["train"]["batch_size"] = 2
    draft["train"]["steps"] = 15
    draft["validation"]["holdout"] = holdout
    (home / "drafts").mkdir(parents=True, exist_ok=True)
    (home / "drafts" / "current.yaml").write_text(json.dumps(draft), encoding="utf-8")


def card(at) -> dict[str, str]:
    if any(b.key == "wiz:analyse:0" for b in at.button):
        at.button(key="wiz:analyse:0").click().run()
    return {m.label: m.value for m in at.metric}


def test_epoch_count_and_its_words_leave_the_hold_out_out() -> None:
    cfg = make("train.steps=15", "train.batch_size=2", "validation.holdout=2", arch="sd15")
    count = epoch_count(cfg, DatasetInfo.counts(12))
    assert (count.images, count.held_out, count.trained, count.steps) == (12, 2, 10, 5)
    assert run_length_text(cfg, DatasetInfo.counts(12)) == (
        f"**15 steps = 3 epochs** of 5 steps ({WHY})."
    )
    plain = make("train.steps=15", "train.batch_size=2", arch="sd15")
    assert epoch_count(plain, DatasetInfo.counts(12)).held_out == 0
    assert run_length_text(plain, DatasetInfo.counts(12)) == (
        "**15 steps = 2.5 epochs** of 6 steps (12 images × 1 repeat ÷ batch 2)."
    )


@pytest.mark.parametrize(("holdout", "per_epoch", "epochs"), [(2, "5", "3.0"), (0, "6", "2.5")])
def test_the_wizard_and_the_datasets_page_agree_with_a_hold_out(
    home: Path, holdout: int, per_epoch: str, epochs: str
) -> None:
    with_draft(home, holdout)
    at = open_page("pages/wizard.py")
    go_to_step(at, "dataset")
    metrics = card(at)
    assert (metrics["Images"], metrics["Steps per epoch"], metrics["Epochs"]) == (
        "12",
        per_epoch,
        epochs,
    )
    assert (f"{WHY} = 5 steps per epoch." in texts(at)) == bool(holdout)
    go_to_step(at, "training")
    assert f"15 steps = {epochs.removesuffix('.0')} epochs** of {per_epoch} steps (" in texts(at)
    assert (WHY in texts(at)) == bool(holdout)
    at.switch_page("pages/datasets.py").run()
    assert not at.exception, [e.value for e in at.exception]
    at.selectbox(key="dsm:pick").set_value("demo").run()
    page = {m.label: m.value for m in at.metric}
    assert (page["Steps per epoch"], page["Epochs"]) == (per_epoch, epochs)
    assert (f"{WHY} = 5 steps per epoch." in texts(at)) == bool(holdout)
