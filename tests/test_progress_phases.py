"""Each phase's own progress and the time left: the run's clock (trainer.engine.eta), the
progress writer's phase bookkeeping and the monitor's phase line and ETA (ui.monitor_progress).

Pure and fast; the same things on a real tiny run are in test_trainer.py and test_ui_monitor.py.
"""

from __future__ import annotations

import pytest

from trainer.engine.eta import RunClock
from trainer.tracking.progress import ProgressWriter, read_progress
from ui.monitor_progress import eta_text, phase_line


def planned_clock() -> RunClock:
    clock = RunClock()
    clock.plan(
        start=0,
        total=30,
        preview_steps=[10, 20, 30],
        checkpoint_steps=[10, 20],
        images_per_round=2,
        sample_steps=3,
        images_per_step=2,
        trainable_bytes=0,
    )
    return clock


def test_the_clock_knows_nothing_until_a_step_is_timed() -> None:
    assert RunClock().seconds_left() is None  # never planned (previews made outside a run)
    clock = planned_clock()
    assert clock.seconds_left() is None
    clock.at_step(2, None)
    assert clock.seconds_left() is None


def test_time_left_counts_the_previews_and_saves_still_due() -> None:
    clock = planned_clock()
    clock.images.add(0.5)  # measured: 0.5 s a preview image, 2 s a save
    clock.saves.add(2.0)
    clock.at_step(10, 1.0)
    # 20 steps + rounds at 10, 20, 30 (6 images) + checkpoints at 10, 20 and the 2 final saves
    assert clock.seconds_left() == pytest.approx(20 + 6 * 0.5 + 4 * 2.0)
    with clock.preview_round(10, images=2):
        assert clock.seconds_left() == pytest.approx(20 + 6 * 0.5 + 4 * 2.0)  # still 6 to make
        with clock.preview_image():
            pass
        assert clock.images_left_in_round == 1
        left_in_round = clock.seconds_left()
    assert clock.seconds_left() < left_in_round  # the round is over: its last image is not due
    with clock.save():  # the checkpoint at step 10
        pass
    clock.at_step(30, 1.0)
    with clock.preview_round(30, images=2):
        pass
    # after the last step and its previews: only the two final saves (what lay before step 30
    # and never happened, the round and checkpoint at 20, is not counted)
    assert clock.seconds_left() == pytest.approx(2 * clock.seconds_per_save)


def test_unmeasured_previews_and_saves_are_predicted() -> None:
    clock = planned_clock()
    clock.trainable_bytes = 200_000_000
    clock.at_step(28, 0.3)
    # an image: 3 denoising steps x 2 forwards / (3 forwards x 2 images) of a 0.3 s step
    assert clock.seconds_per_image == pytest.approx(0.3)
    assert clock.seconds_per_save == pytest.approx(3.0)  # 3 copies of 200 MB at 200 MB/s
    assert clock.seconds_left() == pytest.approx(2 * 0.3 + 2 * 0.3 + 2 * 3.0)


def test_a_new_phase_starts_its_own_progress(tmp_path) -> None:
    writer = ProgressWriter(tmp_path, min_interval_s=60)
    writer.update(phase="sampling", step=0, phase_done=0, phase_total=3)
    first = read_progress(tmp_path)
    assert first["phase_started"] is not None and first["phase_total"] == 3
    assert writer.update(phase_done=1)  # progress within a phase is written at once
    assert read_progress(tmp_path)["phase_done"] == 1
    assert not writer.update(loss=0.5)  # other values wait for the interval
    writer.update(phase="training", step=1)
    now = read_progress(tmp_path)
    assert now["phase_done"] is None and now["phase_total"] is None  # not the previews' counts
    assert now["phase_started"] >= first["phase_started"] and now["loss"] == 0.5


@pytest.mark.parametrize(
    ("phase", "progress", "line"),
    [
        ("queued", {}, "Starting the trainer (12 s)"),
        ("loading", {"phase_started": 82.0}, "Loading the base model (18 s)"),
        ("loading", {"phase_detail": "the dataset"}, "Loading the dataset"),
        (
            "sampling",
            {"step": 0, "phase_done": 1, "phase_total": 3},
            "Making baseline previews (before training): image 2 of 3",
        ),
        ("sampling", {"step": 10, "phase_done": 2, "phase_total": 2}, "image 2 of 2"),
        (
            "saving",
            {"phase_detail": "checkpoints/step_00000030", "phase_done": 0, "phase_total": 2},
            "Saving checkpoints/step_00000030 (file 1 of 2)",
        ),
        ("saving", {"phase_detail": "lora/demo", "phase_done": 1, "phase_total": 2}, "2 of 2"),
        ("caching", {"phase_detail": "latents", "phase_done": 4, "phase_total": 12}, "4 of 12"),
        ("finished", {}, "Finished"),
    ],
)
def test_the_phase_line_says_what_the_trainer_does(phase, progress, line) -> None:
    assert line in phase_line(phase, progress, now=100.0, launched=88.0)


def test_the_eta_counts_down_between_writes_and_never_sits_at_zero() -> None:
    progress = {"eta_s": 90.0, "updated": 1000.0, "step": 5}
    running = {"running": True, "finished": False}
    assert eta_text(progress, now=1000.0, **running)[0] == "1 min 30 s"
    assert eta_text(progress, now=1030.0, **running)[0] == "1 min 00 s"  # no write for 30 s
    assert eta_text(progress, now=1200.0, **running)[0] == "any moment"  # overdue: not "0 s"
    assert eta_text(progress, now=1000.0, running=False, finished=True)[0] == "done"
    assert eta_text(progress, now=1000.0, running=False, finished=False)[0] == "—"
    unmeasured = {"eta_s": None, "step": 0}
    assert eta_text(unmeasured, now=0.0, **running)[0] == "—"
    # The steps' prediction alone (loading and previews left out) is no ETA: it read "≈ 3 s"
    # through 50 s of loading and baseline previews. It is only mentioned in the help.
    steps_only = eta_text(unmeasured, now=0.0, predicted_s_per_step=2.0, total=30, **running)
    assert steps_only[0] == "—" and "1 min 00 s for the training steps alone" in steps_only[1]


def test_before_any_measurement_the_whole_run_prediction_counts_down_from_launch() -> None:
    running = {"running": True, "finished": False}
    loading = {"phase": "loading", "step": 0}
    predicted = {"predicted_total_s": 123.0, "predicted_s_per_step": 0.1, "launched": 1000.0}
    at_launch = eta_text(loading, now=1000.0, total=30, **predicted, **running)
    assert at_launch[0] == "≈ 2 min 03 s" and at_launch[1].startswith("Predicted, not measured")
    assert "whole run" in at_launch[1]
    later = eta_text({**loading, "phase": "sampling"}, now=1050.0, **predicted, **running)
    assert later[0] == "≈ 1 min 13 s"  # counts down: not frozen at the launch's number
    past = eta_text(loading, now=1200.0, **predicted, **running)
    assert past[0] == "overdue"  # not a tiny or frozen number
    assert "2 min 03 s for the whole run" in past[1] and "3 min 20 s have passed" in past[1]
    # A resumed run has trained 600 steps before: they are not due again.
    resumed = eta_text({"step": 600, "eta_s": None}, now=1000.0, **predicted, **running)
    assert resumed[0] == "≈ 1 min 03 s"
    # The trainer's measured ETA wins as soon as there is one.
    measured = {"eta_s": 40.0, "updated": 1200.0, "step": 3}
    assert eta_text(measured, now=1200.0, **predicted, **running)[0] == "40 s"


def test_a_resumed_launch_counts_its_samples_on(tmp_path) -> None:
    """The launcher keeps the sample count for a resume; the new trainer's writer counts on from
    it, so the monitor's samples (cached on the count) refresh instead of showing old ones."""
    from trainer.tracking.progress import write_progress

    write_progress(tmp_path, {"phase": "queued", "step": 40, "total_steps": 200, "samples": 8})
    writer = ProgressWriter(tmp_path)
    assert writer.last["samples"] == 8
    writer.update(force=True, phase="loading", phase_detail="the base model")
    loading = read_progress(tmp_path)  # the monitor's bar stays at 40 of 200 while it loads
    assert (loading["step"], loading["total_steps"], loading["samples"]) == (40, 200, 8)
    writer.update(force=True, phase="training", step=41)
    assert read_progress(tmp_path)["samples"] == 8
    assert ProgressWriter(tmp_path / "fresh").last == {}  # a first launch starts from nothing


def test_a_step_far_from_the_prediction_is_explained() -> None:
    from ui.monitor_progress import speed_note

    assert speed_note(0.12, 0.1, load=0.2) == ""  # near the prediction: nothing to say
    assert speed_note(None, 0.1, load=0.2) == "" and speed_note(0.2, None, load=None) == ""
    busy = speed_note(0.211, 0.1, load=2.5)
    assert "2.1× the 0.1 s the advisor predicted" in busy and "busy (load 2.5 per core)" in busy
    quiet = speed_note(0.211, 0.1, load=0.1)
    assert "busy" not in quiet and "finished runs" in quiet
    assert "faster than predicted" in speed_note(0.05, 0.1, load=None)


def test_elapsed_counts_every_launch_and_not_the_pause_between() -> None:
    from ui.monitor_progress import training_time

    first = {"phase": "killed", "active_s": 35.0}  # the stopped launch's own count
    assert training_time(first, running=False, launched=100.0, ended_at=140.0, now=500.0) == 35.0
    resumed = {"phase": "training", "active_s": 35.0}  # carried over while it trains again
    assert training_time(resumed, running=True, launched=1000.0, ended_at=None, now=1010.0) == 45.0
    killed = {"phase": "training", "active_s": 35.0}  # SIGKILLed: no count of its own written
    assert (
        training_time(killed, running=False, launched=1000.0, ended_at=1020.0, now=2000.0) == 55.0
    )
    fresh = {"phase": "training"}
    assert training_time(fresh, running=True, launched=10.0, ended_at=None, now=12.5) == 2.5
    assert training_time(fresh, running=True, launched=None, ended_at=None, now=12.5) is None
