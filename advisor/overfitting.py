"""Overfitting, read from a run's validation loss (the metric ``val_loss``): pure functions.

The validation loss is scored on images the LoRA never trains on, with fixed noise and timesteps
(``trainer.engine.validation``), so unlike the training loss it can only fall while the LoRA
learns what generalises. ``overfitting(history)`` warns once it has risen ``RISES`` evaluations
in a row and names the checkpoint to keep: the saved LoRA with the lowest validation loss
(``best_checkpoint``). Its fix is for the next run: stop at that step.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from advisor.findings import Finding

RISES = 3  # rises in a row: one or two can be the noise of a small validation set


def points(
    history: Iterable[tuple[int, float] | tuple[int, float, int]],
) -> list[tuple[int, float]]:
    """(step, value) by step; a step logged twice (a resumed run) keeps its last value.
    Accepts MLflow's ``(step, value, timestamp)`` triples too."""
    by_step: dict[int, float] = {}
    for point in history:
        by_step[int(point[0])] = float(point[1])
    return sorted(by_step.items())


def rising_streak(history: Iterable[tuple[int, float]]) -> int:
    """How many evaluations in a row, up to the latest, the validation loss rose."""
    values = [value for _, value in points(history)]
    streak = 0
    for before, after in zip(reversed(values[:-1]), reversed(values[1:]), strict=True):
        if after <= before:
            break
        streak += 1
    return streak


def best_checkpoint(
    history: Iterable[tuple[int, float]], saved_steps: Collection[int] | None = None
) -> tuple[int, float] | None:
    """(step, value) with the lowest validation loss among the steps whose LoRA was saved
    (every evaluated step when ``saved_steps`` is None); the earlier step on a tie."""
    found = [(v, s) for s, v in points(history) if saved_steps is None or s in saved_steps]
    if not found:
        return None
    value, step = min(found)
    return step, value


def overfitting(
    history: Iterable[tuple[int, float]],
    saved_steps: Collection[int] | None = None,
    rises: int = RISES,
) -> Finding | None:
    """A warning once the validation loss has risen ``rises`` evaluations in a row, naming the
    checkpoint to keep; None before that (or without enough evaluations)."""
    history = points(history)
    streak = rising_streak(history)
    if streak < rises:
        return None
    best = best_checkpoint(history, saved_steps)
    first_rise = history[-streak - 1][0]
    if best is None:
        keep = "no saved LoRA has a validation loss yet"
        fix = None
    else:
        keep = f"keep the checkpoint of step {best[0]} (validation loss {best[1]:.4f}, the lowest)"
        fix = {"train.steps": best[0]}
    return Finding(
        rule="overfitting",
        severity="warning",
        paths=("train.steps",),
        message=(
            f"The validation loss has risen {streak} evaluations in a row (since step "
            f"{first_rise}, now {history[-1][1]:.4f}): the LoRA is learning your training images "
            f"rather than what they share, so later checkpoints are likely worse — {keep}. A "
            "next run can stop there."
        ),
        fix=fix,
    )
