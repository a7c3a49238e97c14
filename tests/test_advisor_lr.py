"""The learning-rate scale rule (lr_off_scale): rates many times off the recommended one for
the optimizer and model warn, absurd ones are errors, far too low ones are suggestions."""

from __future__ import annotations

from test_advisor_cases import PROFILES, make

from advisor.findings import Finding
from advisor.patch import apply_patch
from advisor.rules import validate


def _lr_findings(*overrides: str, arch: str = "sd15") -> list[Finding]:
    return [f for f in validate(make(*overrides, arch=arch)) if f.rule == "lr_off_scale"]


def test_a_learning_rate_a_thousand_times_too_high_is_an_error_naming_both_rates() -> None:
    """The walk's case: AdamW at lr 1 on the demo model (recommended 1e-3) said nothing."""
    [found] = _lr_findings("model.name_or_path=demo:sd15", "train.optimizer=adamw", "train.lr=1")
    assert found.severity == "error" and found.paths == ("train.lr",)
    assert "learning rate 1 is 1,000x the recommended 1.0e-03 for AdamW" in found.message
    assert "diverges" in found.message and "noise" in found.message
    assert found.fix == {"train.lr": 1e-3}
    fixed = apply_patch(make("model.name_or_path=demo:sd15", "train.lr=1", arch="sd15"), found.fix)
    assert not [f for f in validate(fixed) if f.rule in ("lr_off_scale", "lr_high")]


def test_learning_rate_ten_to_three_hundred_times_too_high_is_a_warning() -> None:
    [found] = _lr_findings("model.name_or_path=demo:sd15", "train.lr=0.02")
    assert found.severity == "warning" and "20x the recommended 1.0e-03" in found.message
    # real sd15 "other": recommended 2e-4; 3e-3 is 15x: lr_high's milder warning steps aside
    found = validate(make("train.lr=3e-3", arch="sd15"))
    assert [f.severity for f in found if f.rule == "lr_off_scale"] == ["warning"]
    assert not [f for f in found if f.rule == "lr_high"]
    assert not _lr_findings("model.name_or_path=demo:sd15", "train.lr=5e-3")  # 5x: fine here


def test_unet_and_text_encoder_rates_are_judged_on_their_own_paths() -> None:
    [unet] = _lr_findings("train.unet_lr=0.5")
    assert unet.paths == ("train.unet_lr",) and unet.severity == "error"
    assert unet.fix == {"train.unet_lr": 2e-4}
    [te] = _lr_findings("train.train_text_encoder=true", "train.text_encoder_lr=0.05")
    assert te.paths == ("train.text_encoder_lr",) and te.fix == {"train.text_encoder_lr": 1e-4}
    assert "text encoder learning rate 0.05 is 500x" in te.message
    assert not _lr_findings("train.text_encoder_lr=0.05")  # the text encoder is not trained


def test_adaptive_optimizers_are_exempt_and_lion_is_judged_on_its_smaller_rate() -> None:
    assert not _lr_findings("train.optimizer=prodigy", "train.lr=1.0")
    [lion] = _lr_findings("train.optimizer=lion", "train.lr=1e-2")
    assert "recommended 4.0e-05 for Lion" in lion.message and lion.fix == {"train.lr": 4e-5}
    found = validate(make("train.optimizer=lion", "train.lr=1e-2", arch="sd15"))
    assert not [f for f in found if f.rule == "lion_lr"]  # one finding, not two


def test_a_learning_rate_far_below_the_recommended_one_is_a_suggestion() -> None:
    [low] = _lr_findings("model.name_or_path=demo:sd15", "train.lr=2e-5")  # 1/50 of 1e-3
    assert low.severity == "suggestion" and "1/50 of the recommended 1.0e-03" in low.message
    assert "barely move" in low.message and low.fix == {"train.lr": 1e-3}
    assert not _lr_findings("train.lr=1e-6")  # below 1e-5 lr_low warns already
    assert not _lr_findings("train.lr=2e-5")  # 1/10 of sd15's 2e-4: within the band


def test_the_recommended_rate_is_the_one_the_wizard_recommends() -> None:
    from advisor.decide_training import recommended_lr
    from advisor.defaults import recommend
    from advisor.draft import UserIntent

    for arch in ("sd15", "sdxl", "flux"):
        rec = recommend(UserIntent(training_type="style"), arch, PROFILES["rtx4090"]).config
        assert recommended_lr(rec) == rec.train.lr
