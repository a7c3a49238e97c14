"""The smoothed loss (trainer/engine/reporting.py, ``Meter``) that Monitor and Compare show: a
debiased exponential moving average, as TensorBoard draws it, that stays among the raw losses."""

from __future__ import annotations

import pytest

from trainer.engine.reporting import LOSS_SMOOTHING, Meter


def _smoothed(losses: list[float]) -> list[float]:
    meter = Meter()
    found = []
    for step, loss in enumerate(losses, start=1):
        meter.update(loss, 0.1, 1, step)
        found.append(meter.smoothed)
    return found


def test_nothing_smoothed_before_the_first_loss() -> None:
    assert Meter().smoothed is None


def test_a_constant_loss_smooths_to_itself_from_the_first_step() -> None:
    assert _smoothed([1.1] * 20) == pytest.approx([1.1] * 20)


def test_the_walk_run_smooths_among_its_raw_losses() -> None:
    # the raw losses of the walk's run (step 1 low, then 1.0-1.2); the old average seeded with
    # step 1 ended at 0.94, below almost every raw point
    raw = [0.65, 1.06, 1.21, 0.83, 1.1, 0.93, 1.04, 0.86, 0.6, 1.19, 0.97, 1.13, 1.0, 1.26, 1.02]
    found = _smoothed(raw)
    assert all(min(raw) <= s <= max(raw) for s in found)
    assert found[-1] > 0.99  # near the last steps' mean (1.07), not dragged down by step 1
    later = [1.0, 1.2, 1.1, 1.05, 1.15, 1.0, 1.2, 1.1]
    assert all(1.0 <= s <= 1.2 for s in _smoothed(later))


def test_it_is_the_debiased_average_tensorboard_draws() -> None:
    # one outlier first, then a flat 1.0: the first step weighs 0.1 * 0.9^14 / (1 - 0.9^15)
    found = _smoothed([0.0] + [1.0] * 14)[-1]
    decay = LOSS_SMOOTHING
    first_weight = (1 - decay) * decay**14 / (1 - decay**15)
    assert found == pytest.approx(1 - first_weight)
    assert found > 0.97  # seeded with the first loss it was 1 - 0.9^14 = 0.77


def test_a_resumed_run_goes_on_from_its_saved_value() -> None:
    meter = Meter()
    meter.smoothed = 0.5  # what a checkpoint saved (trainer/engine/loop.py's resume)
    assert meter.smoothed == 0.5
    meter.update(1.5, 0.1, 1, 101)
    assert meter.smoothed == pytest.approx(0.9 * 0.5 + 0.1 * 1.5)
    meter.smoothed = None
    assert meter.smoothed is None
