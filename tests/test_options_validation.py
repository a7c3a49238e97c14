"""Validation options: each test fails if the option is ignored — which images the trainer trains
on and scores, when it scores them, and the noise and timesteps it scores with. The runs behind
the other proofs are in tests/test_validation_loss.py and tests/test_best_checkpoint.py."""

from __future__ import annotations

from pathlib import Path

from options_support import RecordingTracker, tiny_config
from validation_support import Scorer

from trainer.engine import loop
from trainer.engine.context import RunContext

PROVES = {
    "validation.holdout": [
        "test_holdout_takes_images_out_of_training_and_scores_on_them",
        "tests/test_validation_loss.py::test_held_out_images_are_never_trained_on",
    ],
    "validation.folder_path": [
        "tests/test_validation_loss.py::test_a_validation_folder_image_found_in_the_dataset_is_not_trained_on",
        "tests/test_validation_loss.py::test_validation_does_not_change_the_training",
    ],
    "validation.every": "tests/test_validation_loss.py::test_val_loss_is_logged_every_k_steps_at_each_save_and_at_a_stop",
    "validation.draws": "test_draws_and_seed_decide_the_noise_and_timesteps_scored",
    "validation.seed": "test_draws_and_seed_decide_the_noise_and_timesteps_scored",
}


def test_holdout_takes_images_out_of_training_and_scores_on_them(
    demo_home: Path, tmp_path: Path
) -> None:
    def prepared(holdout: int) -> tuple[int, int]:
        ctx = RunContext(home=demo_home, job_dir=tmp_path / "job", tracker=RecordingTracker())
        validation = loop.Validation(tiny_config(validation={"holdout": holdout}), ctx)
        data = loop.prepare_data(validation.cfg, ctx, validation)
        return sum(len(scan.images) for scan in data.scans), validation.items

    assert prepared(0) == (12, 0)  # off: every image trains, nothing is scored
    assert prepared(3) == (9, 3)


def test_draws_and_seed_decide_the_noise_and_timesteps_scored(
    demo_home: Path, tmp_path: Path
) -> None:
    scorer = Scorer(tiny_config(validation={"holdout": 2}), demo_home, tmp_path / "job")
    default = scorer.score()  # draws 4, seed 0
    assert scorer.score(validation=scorer.with_settings(draws=4, seed=0)) == default
    assert scorer.score(validation=scorer.with_settings(seed=1)) != default
    one_draw = scorer.score(validation=scorer.with_settings(draws=1))
    assert one_draw != default
