"""Readers of a run's length: a run set by ``train.epochs`` logs the steps it trained as the
``total_steps`` param (``trainer.engine.run_length.plan_steps``); Compare and the advisor's
history read that before the config's ``train.steps``, which such a run ignored."""

from __future__ import annotations

from test_advisor_cases import make
from test_advisor_history import record

from advisor.history import recommend_from_history
from advisor.runs import as_run
from trainer.tracking.layout import TAG_PREDICTED, trained_steps
from ui.compare_table import predicted_total_s, steps_of


def person(rank: int, *length: str) -> object:
    return make("intent=person", f"network.linear={rank}", *length, arch="sdxl")


def logged(cfg, rating: int | None, run_id: str, total: int | None = None):
    """A run record whose params are what the trainer logs: the config, plus ``total_steps``."""
    rec = record(cfg, rating, run_id)
    if total is not None:
        rec.params.update({"total_steps": str(total), "steps_per_epoch": "40"})
    return rec


def test_total_steps_wins_over_train_steps_and_old_runs_keep_train_steps() -> None:
    assert trained_steps({"train.steps": "1000", "total_steps": "120"}) == 120
    assert trained_steps({"train.steps": "1000"}) == 1000  # logged before total_steps existed
    assert trained_steps({"train.steps": "auto"}) is None
    assert trained_steps({}) is None


def test_compare_shows_the_steps_an_epochs_run_trained() -> None:
    rec = logged(person(16, "train.epochs=3", "train.steps=1000"), None, "e", total=120)
    rec.tags[TAG_PREDICTED] = "0.5"
    assert steps_of(rec) == 120
    assert predicted_total_s(rec) == 60.0  # 0.5 s/step x the 120 steps trained, not 1000
    plain = logged(person(16, "train.steps=800"), None, "s")
    assert steps_of(plain) == 800


def test_the_history_names_and_patches_what_the_best_run_trained() -> None:
    runs = [
        logged(person(16, "train.epochs=3", "train.steps=1000"), 5, "a", total=120),
        logged(person(32, "train.steps=1000"), 2, "b", total=1000),
    ]
    assert as_run(runs[0]).steps == 120
    best = recommend_from_history(person(64, "train.steps=500"), runs)[0]
    assert "used rank 16 at 0.0001, 120 steps (3 epochs), batch" in best.message
    assert best.patch["train.epochs"] == 3 and "train.steps" not in best.patch  # epochs decide
    # The best run trained by steps, the draft by epochs: its steps, with the epochs cleared.
    runs[0] = logged(person(16, "train.steps=700"), 5, "a", total=700)
    best = recommend_from_history(person(64, "train.epochs=2"), runs)[0]
    assert best.patch["train.steps"] == 700 and best.patch["train.epochs"] is None


def test_rated_values_of_steps_group_by_the_steps_trained() -> None:
    runs = [
        logged(person(16, "train.epochs=3"), 5, "a", total=120),
        logged(person(16, "train.epochs=3"), 4, "b", total=120),
        logged(person(16, "train.steps=900"), 2, "c", total=900),
        logged(person(16, "train.steps=900"), 1, "d", total=900),
    ]
    insights = recommend_from_history(person(16, "train.steps=900"), runs)
    steps = next(i for i in insights if i.message.startswith("steps "))
    assert steps.message == "steps 120 averaged 4.5★ over 2 runs, steps 900 1.5★ over 2"
    assert steps.patch == {"train.steps": 120}
