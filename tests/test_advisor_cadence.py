"""How often a run previews and saves for its length (``advisor.checks_length``): a cadence kept
from the demo's 30 steps (every 10) on a 2000-step run warns with the counts and a one-click fix
to about ten of each; the demo itself and a sensible cadence stay quiet."""

from __future__ import annotations

import pytest
from test_advisor_cases import PROFILES, make

from advisor.checks_length import MAX_EVENTS, NICE_CADENCES, TARGET_EVENTS
from advisor.dataset import DatasetInfo, run_steps
from advisor.decide_training import previews_in_run
from advisor.findings import Finding
from advisor.models import GIB
from advisor.patch import apply_patch
from advisor.predict import duration, predict
from advisor.rules import apply_fixes, validate
from advisor.workload import workload
from trainer.config.schema import TrainingConfig
from trainer.engine.previews import sample_due

PROMPTS = "sample.prompts=[ohwx person, ohwx person at the beach]"
RULES = ("previews_too_often", "saves_too_often")


def _cadence(steps: int, sample: int, save: int, *more: str, arch: str = "sd15"):
    return make(
        f"train.steps={steps}",
        f"sample.sample_every={sample}",
        f"save.save_every={save}",
        PROMPTS,
        *more,
        arch=arch,
    )


def _mine(found: list[Finding]) -> dict[str, Finding]:
    return {f.rule: f for f in found if f.rule in RULES}


def _saves(steps: int, every: int) -> int:
    """The checkpoints the trainer writes: every multiple of save_every before the last step
    (trainer.engine.loop, plan_clock's range(every, total, every)) and one at the end."""
    return len(range(every, steps, every)) + 1


def _predicted(cfg: TrainingConfig, machine: str) -> tuple[float, float]:
    """The predicted seconds of all previews (the baseline round too) and of training."""
    parts = predict(cfg, PROFILES[machine]).total_time.parts
    return parts["sampling"], parts["training"]


def _lora_bytes(cfg: TrainingConfig, machine: str) -> int:
    work = workload(cfg, PROFILES[machine], None)
    return (work.lora_params + work.te_lora_params) * work.save_bytes


def test_a_demo_cadence_on_2000_steps_warns_with_the_numbers_and_a_fix() -> None:
    cfg = _cadence(2000, 10, 10)
    found = _mine(validate(cfg, PROFILES["rtx3060"]))
    assert set(found) == set(RULES)
    previews, saves = found["previews_too_often"], found["saves_too_often"]
    assert previews.severity == saves.severity == "warning"
    assert previews.message.startswith(
        "2000 steps with a preview every 10 steps makes 200 preview rounds (~"
    )
    sampling, training = _predicted(cfg, "rtx3060")
    per_image = sampling / predict(cfg, PROFILES["rtx3060"]).preview_images
    took = f"(~{duration(per_image * 400)} for 400 images: "  # two prompts a round
    assert took in previews.message
    share = f"{per_image * 400 / training:.0%} of the ~{duration(training)} of training"
    assert share in previews.message
    assert "a preview every 200 steps gives 10" in previews.message
    assert previews.fix == {"sample.sample_every": 200}
    assert saves.message.startswith(
        "2000 steps with a checkpoint every 10 steps makes 200 checkpoint saves: "
    )
    copies = 200 * _lora_bytes(cfg, "rtx3060") / GIB
    assert copies > 0.1
    assert f"MLflow keeps every one's LoRA (~{copies:.1f} GB in all)" in saves.message
    assert "a checkpoint every 200 steps gives 10" in saves.message
    assert saves.fix == {"save.save_every": 200}
    assert previews.paths == ("sample.sample_every",) and saves.paths == ("save.save_every",)


def test_two_hundred_preview_rounds_outlast_the_training() -> None:
    cfg = _cadence(2000, 10, 10)
    message = _mine(validate(cfg, PROFILES["rtx3060"]))["previews_too_often"].message
    share = int(message.split(" images: ")[1].split("%")[0])
    assert share > 100  # 200 rounds of 20 denoising steps × 2 images against 2000 steps


def test_without_a_machine_the_counts_alone_warn() -> None:
    found = _mine(validate(_cadence(2000, 10, 10)))
    assert found["previews_too_often"].message.startswith(
        "2000 steps with a preview every 10 steps makes 200 preview rounds (400 images). "
    )
    assert found["saves_too_often"].message.startswith(
        "2000 steps with a checkpoint every 10 steps makes 200 checkpoint saves: "
    )
    assert found["previews_too_often"].fix == {"sample.sample_every": 200}
    assert found["saves_too_often"].fix == {"save.save_every": 200}


@pytest.mark.parametrize("machine", [None, "rtx3060", "cpu"])
@pytest.mark.parametrize(("steps", "every"), [(30, 10), (2000, 200), (2000, 100), (4000, 250)])
def test_the_demo_and_sensible_cadences_are_quiet(
    machine: str | None, steps: int, every: int
) -> None:
    demo = _cadence(steps, every, every, "model.name_or_path=demo:sd15")
    real = _cadence(steps, every, every)
    for cfg in (demo, real):
        found = _mine(validate(cfg, PROFILES[machine] if machine else None))
        assert found == {}, [f.message for f in found.values()]


def test_the_demo_raised_to_2000_steps_warns() -> None:
    """The newcomer's case: the demo preset's every-10 cadence kept on 2000 steps."""
    cfg = _cadence(2000, 10, 10, "model.name_or_path=demo:sd15")
    found = _mine(validate(cfg, PROFILES["cpu"]))
    assert set(found) == set(RULES)
    copies = 200 * _lora_bytes(cfg, "cpu") / 2**20  # the tiny LoRA's copies, in MB
    assert 1 <= copies < 100
    assert f"(~{copies:.0f} MB in all)" in found["saves_too_often"].message


def test_applying_the_fixes_clears_the_warnings_and_leaves_about_ten_of_each() -> None:
    cfg = _cadence(2000, 10, 10)
    profile = PROFILES["rtx3060"]
    found = validate(cfg, profile)
    result = apply_fixes(cfg, found, profile)
    assert {f.rule for f in result.applied} >= set(RULES)
    fixed = result.config
    assert fixed.sample.sample_every == 200 and fixed.save.save_every == 200
    assert _mine(validate(fixed, profile)) == {}
    made = sum(sample_due(fixed, step, 2000) for step in range(1, 2001))
    assert made == TARGET_EVENTS and _saves(2000, fixed.save.save_every) == TARGET_EVENTS


@pytest.mark.parametrize(
    ("steps", "every", "start", "fixed"),
    [
        (1000, 10, 0, 100),
        (2500, 10, 0, 250),
        (5000, 10, 0, 500),
        (3000, 10, 0, 500),  # 250 would make 12: the next nice number, 6
        (1200, 5, 0, 200),
        (300, 1, 0, 50),
        (2000, 10, 1000, 200),  # from step 1000 on: 100 would make 11 (step 1000 counts)
    ],
)
def test_the_fix_is_a_nice_cadence_for_at_most_ten_previews(
    steps: int, every: int, start: int, fixed: int
) -> None:
    cfg = _cadence(steps, every, 10_000, f"sample.sample_start_step={start}")
    finding = _mine(validate(cfg))["previews_too_often"]
    assert finding.fix == {"sample.sample_every": fixed}
    assert fixed in NICE_CADENCES
    after = apply_patch(cfg, finding.fix)
    made = sum(sample_due(after, step, steps) for step in range(1, steps + 1))
    assert made == previews_in_run(steps, fixed, start) <= TARGET_EVENTS
    assert "previews_too_often" not in _mine(validate(after))


@pytest.mark.parametrize("steps", [21, 200, 999, 1000, 1001, 4321, 20000, 1_000_000])
def test_every_fix_clears_its_warning(steps: int) -> None:
    cfg = _cadence(steps, 1, 1)
    found = _mine(validate(cfg))
    assert set(found) == set(RULES)
    for finding in found.values():
        after = apply_patch(cfg, finding.fix)
        assert finding.rule not in _mine(validate(after))
    every = found["saves_too_often"].fix["save.save_every"]
    assert every <= steps and _saves(steps, every) <= TARGET_EVENTS


def test_the_thresholds_are_counts_over_twenty() -> None:
    at, over = MAX_EVENTS * 100, MAX_EVENTS * 100 + 1  # 20 and 21 of each at every 100
    assert _mine(validate(_cadence(at, 100, 100))) == {}
    assert set(_mine(validate(_cadence(over, 100, 100)))) == set(RULES)
    assert _saves(over, 100) == MAX_EVENTS + 1


def test_heavy_previews_warn_below_the_count_when_they_outlast_a_quarter_of_training() -> None:
    """17 rounds: under the count threshold; with eight prompts at 50 denoising steps the
    predicted previews take several times the training, with one quick prompt a few percent."""
    heavy = ("sample.prompts=[a, b, c, d, e, f, g, h]", "sample.sample_steps=50")
    light = ("sample.prompts=[a]", "sample.sample_steps=10")
    profile = PROFILES["rtx3060"]
    for more, fires in ((heavy, True), (light, False)):
        cfg = _cadence(1000, 60, 100, *more)
        assert previews_in_run(1000, 60) == 17
        found = _mine(validate(cfg, profile))
        assert ("previews_too_often" in found) == fires
        assert _mine(validate(cfg)) == {}  # no machine, no prediction: the count alone decides
    message = _mine(validate(_cadence(1000, 60, 100, *heavy), profile))["previews_too_often"]
    assert "makes 17 preview rounds (~" in message.message and "136 images" in message.message
    assert message.fix == {"sample.sample_every": 100}


def test_previews_off_or_without_prompts_never_warn() -> None:
    off = _cadence(2000, 0, 200)
    no_prompts = make("train.steps=2000", "sample.sample_every=10", "save.save_every=200")
    for cfg in (off, no_prompts):
        assert "previews_too_often" not in _mine(validate(cfg, PROFILES["rtx3060"]))


def test_an_unknown_length_is_left_alone() -> None:
    cfg = make("train.steps=auto", "sample.sample_every=1", "save.save_every=1", PROMPTS)
    assert _mine(validate(cfg, PROFILES["rtx3060"])) == {}


def test_epochs_are_counted_as_the_steps_they_make() -> None:
    info = DatasetInfo.counts(20)
    cfg = _cadence(1000, 10, 10, "train.epochs=100", "train.batch_size=1")
    steps = run_steps(cfg, info)
    assert steps is not None and steps != 1000
    found = _mine(validate(cfg, None, info))
    rounds = previews_in_run(steps, 10)
    assert found["previews_too_often"].message.startswith(
        f"100 epochs ({steps} steps) with a preview every 10 steps makes {rounds} preview rounds"
    )
    assert _mine(validate(cfg)) == {}  # the images not counted: the length is unknown


def test_validation_at_every_save_is_named_as_a_cost() -> None:
    cfg = _cadence(2000, 200, 10, "validation.holdout=2")
    found = _mine(validate(cfg))
    assert "the validation images are scored at each" in found["saves_too_often"].message
    plain = _mine(validate(_cadence(2000, 200, 10)))
    assert "validation" not in plain["saves_too_often"].message
