"""The ETA counts the validations still due (trainer.engine.eta): predicted from the step speed
until the first one is timed, then measured like previews and saves; on a real tiny run the
planned validation steps are exactly the steps that logged ``val_loss``."""

from __future__ import annotations

from pathlib import Path

import pytest
from options_support import RecordingTracker, tiny_config
from validation_support import val_losses

from trainer.engine.context import RunContext, StopSignal
from trainer.engine.eta import Durations, RunClock
from trainer.engine.loop import train


def validation_clock() -> RunClock:
    clock = RunClock()
    clock.plan(
        start=0,
        total=30,
        preview_steps=[],
        checkpoint_steps=[],
        images_per_round=0,
        sample_steps=0,
        images_per_step=2,
        trainable_bytes=0,
        validation_steps=[10, 20, 30, 30],  # the end's and a K-step one fall together
        validation_forwards=12,  # 3 images x 4 draws
    )
    return clock


def test_validations_due_are_predicted_until_one_is_timed_then_measured() -> None:
    clock = validation_clock()
    clock.at_step(5, 1.0)
    # 12 forwards at batch 1 against 3 forwards x 2 images of a training step: 2 steps' time
    assert clock.seconds_per_validation == pytest.approx(2.0)
    assert clock.seconds_left() == pytest.approx(25 * 1.0 + 3 * 2.0)
    clock.at_step(10, 1.0)
    with clock.validation(10):  # under way: no longer due
        assert clock.seconds_left() == pytest.approx(20 * 1.0 + 2 * 2.0)
    assert clock.validations.count == 1
    clock.validations = Durations(total=0.5, count=1)  # as if it took 0.5 s
    assert clock.seconds_left() == pytest.approx(20 * 1.0 + 2 * 0.5)
    clock.at_step(30, 1.0)
    with clock.validation(30):
        pass
    assert clock.validations_due == [20]  # skipped (a stopped run): behind the step, not counted
    assert clock.seconds_left() == pytest.approx(0.0 + 2 * clock.seconds_per_save)


def test_without_validation_images_nothing_is_added() -> None:
    clock = RunClock()
    clock.plan(
        start=0,
        total=10,
        preview_steps=[],
        checkpoint_steps=[],
        images_per_round=0,
        sample_steps=0,
        images_per_step=1,
        trainable_bytes=0,
    )
    clock.at_step(1, 1.0)
    assert clock.seconds_left() == pytest.approx(9.0)


def test_a_run_plans_exactly_the_validations_it_makes(
    demo_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    planned: dict = {}
    plan = RunClock.plan

    def recording_plan(self: RunClock, **values) -> None:
        planned.update(values)
        plan(self, **values)

    monkeypatch.setattr(RunClock, "plan", recording_plan)
    cfg = tiny_config(
        validation={"holdout": 2, "every": 3, "draws": 2},
        train={"steps": 7},
        save={"save_every": 2},
    )
    tracker = RecordingTracker()
    ctx = RunContext(home=demo_home, job_dir=tmp_path / "job", tracker=tracker, stop=StopSignal())
    train(cfg, ctx)
    logged = sorted(val_losses(tracker))
    assert logged == [2, 3, 4, 6, 7]  # every 3, at the saves before the end, at the end
    assert planned["validation_steps"] == logged
    assert planned["validation_forwards"] == 2 * 2  # 2 held-out images x 2 draws
    assert ctx.clock.validations.count == len(logged)  # each one timed
    assert ctx.clock.validations_due == []
