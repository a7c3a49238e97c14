"""The Monitor's line when the best checkpoint is the last one (``ui.monitor_validation``): the
validation loss was still falling, so it says so with the figures instead of only naming it."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from ui.monitor_validation import still_falling

# What the walk's lr=1.0 run logged (every 3 steps, a save every 10; the best is the end).
WALK = [
    (3, 1.0917),
    (6, 1.10445),
    (9, 1.09763),
    (10, 1.0776),
    (20, 1.0372),
    (27, 1.02909),
    (30, 1.02299),
]


def test_a_best_at_the_end_says_the_loss_was_still_falling() -> None:
    note = still_falling(WALK, (30, 1.02299))
    assert note == (
        "Validation loss was still falling when the run ended (1.0917 at step 3 → 1.0230 at "
        "step 30, 6.3% lower), so training longer might help."
    )


def test_a_tiny_fall_shows_enough_digits_to_see_it() -> None:
    note = still_falling([(10, 1.08952), (15, 1.08947)], (15, 1.08947))
    assert note is not None and "1.08952 at step 10 → 1.08947 at step 15" in note


def test_a_fall_within_noise_says_the_loss_barely_moved_not_train_longer() -> None:
    # What the walk saw: 1.0890 → 1.0889 (0.011% lower) was sold as "training longer might help".
    note = still_falling([(5, 1.0893), (10, 1.08902), (15, 1.08890)], (15, 1.08890))
    assert note == (
        "Validation loss barely moved (1.0893 at step 5 → 1.0889 at step 15, 0.037% lower): "
        "this run's length is not what limits it; look at the samples."
    )
    assert "training longer" not in note


def test_the_line_between_noise_and_a_fall_is_one_percent_of_the_first_loss() -> None:
    flat = still_falling([(10, 1.0), (20, 0.9905)], (20, 0.9905))  # 0.95% lower
    falling = still_falling([(10, 1.0), (20, 0.9895)], (20, 0.9895))  # 1.05% lower
    assert flat is not None and flat.startswith("Validation loss barely moved")
    assert falling is not None and falling.endswith("so training longer might help.")


def test_no_note_when_the_loss_turned_up_or_the_best_is_earlier() -> None:
    assert still_falling([(10, 1.0), (20, 0.9), (30, 0.95)], (20, 0.9)) is None  # best earlier
    assert still_falling([(10, 1.0), (20, 0.8), (30, 0.9)], (30, 0.9)) is None  # rose at the end
    assert still_falling([(30, 0.9)], (30, 0.9)) is None  # one evaluation: no trend


def _render(note: str | None) -> None:
    from trainer.settings import StudioSettings
    from ui.monitor_validation import render_best

    render_best(
        StudioSettings(), "r", (30, 1.02299), final_step=30, finished=True, key="k", note=note
    )


def test_the_monitor_shows_the_note_under_the_best_checkpoint() -> None:
    note = still_falling(WALK, (30, 1.02299))
    at = AppTest.from_function(_render, kwargs={"note": note}).run()
    captions = [c.value for c in at.caption]
    assert captions == [note, "The final LoRA is this checkpoint."]
