"""The validation loss (trainer.engine.validation): deterministic, on images never trained on,
logged as ``val_loss`` without changing the training, continued across a resume."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import pytest
import torch
from options_support import RecordingTracker, StopAfter, run, tiny_config
from pydantic import ValidationError
from validation_support import Scorer, val_losses

from trainer.config.schema import TrainingConfig
from trainer.data.scanning import DatasetError, scan_dataset
from trainer.demo.dataset import build_demo_dataset
from trainer.engine import loop
from trainer.engine.context import RunContext
from trainer.engine.validation import split_validation
from trainer.lora.io import read_lora_metadata, read_lora_tensors

HOLDOUT = {"validation": {"holdout": 2}, "train": {"steps": 4}, "save": {"save_every": 2}}


@pytest.fixture(scope="module")
def held_run(demo_home: Path, tmp_path_factory: pytest.TempPathFactory):
    """4 steps holding 2 images out, a checkpoint every 2 steps: (config, job folder, tracker)."""
    job = tmp_path_factory.mktemp("held") / "job"
    cfg = tiny_config(**HOLDOUT)
    _, tracker = run(cfg, demo_home, job)
    return cfg, job, tracker


def checkpoint_lora(job: Path, step: int) -> Path:
    return job / "checkpoints" / f"step_{step:08d}" / "lora" / "t.safetensors"


def test_the_same_checkpoint_gives_the_same_validation_loss_twice(
    held_run, demo_home: Path, tmp_path: Path
) -> None:
    cfg, job, tracker = held_run
    logged = val_losses(tracker)
    assert sorted(logged) == [2, 4]  # each LoRA save; the end is step 4
    scorer = Scorer(cfg, demo_home, tmp_path / "score")
    untrained = scorer.score()
    first = scorer.score(checkpoint_lora(job, 2))
    second = scorer.score(checkpoint_lora(job, 2))
    assert first == second == logged[2]  # bit-identical, and what the run logged
    assert scorer.score(checkpoint_lora(job, 4)) == logged[4]
    assert untrained not in (first, logged[4])  # the value follows the weights


def test_held_out_images_are_never_trained_on(demo_home, demo_dataset, tmp_path, monkeypatch):
    trained: list[str] = []
    real = loop.compute_loss

    def recording(arch, inputs, batch, *args, **kwargs):
        trained.extend(batch["paths"])
        return real(arch, inputs, batch, *args, **kwargs)

    monkeypatch.setattr(loop, "compute_loss", recording)  # the training step's loss only
    cfg = tiny_config(validation={"holdout": 2, "every": 1}, train={"steps": 5})
    _, tracker = run(cfg, demo_home, tmp_path / "job")
    scan = scan_dataset(cfg.datasets[0], demo_dataset)
    _, held = split_validation(cfg, [scan], demo_home)
    held_paths = {str(info.path) for info in held[0].images}
    by_hash = sorted(scan.images, key=lambda info: info.content_hash)
    assert held_paths == {str(info.path) for info in by_hash[:2]}  # by content, not by name
    assert len(trained) == 10 and not held_paths & set(trained)  # 5 steps x 2 = one epoch
    assert set(trained) == {str(i.path) for i in scan.images} - held_paths
    assert sorted(val_losses(tracker)) == [1, 2, 3, 4, 5]  # every: 1


def test_a_validation_folder_image_found_in_the_dataset_is_not_trained_on(
    demo_home, demo_dataset, tmp_path
) -> None:
    folder = tmp_path / "val"
    folder.mkdir()
    for name in ("img_003.png", "img_003.txt"):  # a copy of a training image, renamed
        shutil.copy(demo_dataset / name, folder / f"copy_{name}")
    cfg = tiny_config(validation={"folder_path": str(folder)})
    ctx = RunContext(home=demo_home, job_dir=tmp_path / "job", tracker=RecordingTracker())
    validation = loop.Validation(cfg, ctx)
    data = loop.prepare_data(cfg, ctx, validation)
    trained = {info.path.name for scan in data.scans for info in scan.images}
    assert len(trained) == 11 and "img_003.png" not in trained
    assert validation.items == 1


def test_validation_does_not_change_the_training(demo_home: Path, tmp_path: Path) -> None:
    folder = build_demo_dataset(tmp_path / "val", seed=7, count=2)  # other images than training
    plain_cfg = tiny_config(train={"steps": 4}, save={"save_every": 2})
    with_val = tiny_config(
        train={"steps": 4}, save={"save_every": 2}, validation={"folder_path": str(folder)}
    )
    off, off_tracker = run(plain_cfg, demo_home, tmp_path / "off")
    on, on_tracker = run(with_val, demo_home, tmp_path / "on")
    assert on_tracker.losses() == off_tracker.losses()  # the same floats, step by step
    # safetensors writes its header's keys in a random order: compare weights and metadata
    on_weights, off_weights = (read_lora_tensors(o.lora_files[0]) for o in (on, off))
    assert on_weights.keys() == off_weights.keys()
    assert all(torch.equal(on_weights[k], off_weights[k]) for k in on_weights)
    assert read_lora_metadata(on.lora_files[0]) == read_lora_metadata(off.lora_files[0])
    assert sorted(val_losses(on_tracker)) == [2, 4] and not val_losses(off_tracker)


def test_val_loss_is_logged_every_k_steps_at_each_save_and_at_a_stop(
    demo_home: Path, tmp_path: Path
) -> None:
    cfg = tiny_config(
        validation={"holdout": 2, "every": 3}, train={"steps": 6}, save={"save_every": 2}
    )
    outcome, tracker = run(cfg, demo_home, tmp_path / "job", stop=StopAfter(5))
    assert outcome.stopped and outcome.step == 5
    assert sorted(val_losses(tracker)) == [2, 3, 4, 5]  # saves 2, 4; every 3; the stop's save 5


def test_a_resumed_run_continues_the_validation_history(held_run, demo_home, tmp_path) -> None:
    cfg, _, whole = held_run
    job = tmp_path / "job"
    _, first = run(cfg, demo_home, job, stop=StopAfter(2))
    _, second = run(cfg, demo_home, job, resume=job)
    expected = val_losses(whole)
    assert val_losses(first) == {2: expected[2]} and val_losses(second) == {4: expected[4]}
    best = min(expected, key=expected.__getitem__)
    assert second.tags.get("studio.best_step") == str(best)  # step 2 was remembered


def test_a_hold_out_must_leave_images_to_train_on(demo_home, tmp_path) -> None:
    ctx = RunContext(home=demo_home, job_dir=tmp_path / "job", tracker=RecordingTracker())
    with pytest.raises(DatasetError, match=r"validation.holdout is 12.*12 distinct images"):
        loop.prepare_data(tiny_config(validation={"holdout": 12}), ctx)
    missing = str(tmp_path / "nowhere")
    with pytest.raises(DatasetError, match=r"does not exist — fix validation.folder_path"):
        loop.prepare_data(tiny_config(validation={"folder_path": missing}), ctx)


def test_the_config_refuses_validation_that_cannot_work() -> None:
    with pytest.raises(ValidationError, match=r"folder_path\] validation images come from"):
        TrainingConfig.model_validate({"validation": {"holdout": 2, "folder_path": "x"}})
    unloaded = {"unload_text_encoder": True, "cache_text_embeddings": True}
    with pytest.raises(ValidationError, match=r"validation.holdout\] the validation captions"):
        TrainingConfig.model_validate({"validation": {"holdout": 2}, "train": unloaded})
    assert not TrainingConfig().validation.enabled  # off by default


# The walk's settings: cached latents and text embeddings, a high learning rate, every step.
RESPONDS = {
    "validation": {"holdout": 2, "every": 1},
    "train": {"steps": 6, "lr": 0.05, "cache_text_embeddings": True},
    "datasets": [{"cache_latents": True}],
}


def zero_lora(scorer: Scorer) -> None:
    for part in scorer.arch.adapted_components().values():
        for name, param in part.named_parameters():
            if "lora_" in name:
                param.data.zero_()


def test_the_validation_loss_follows_the_lora_weights_with_cached_inputs(
    demo_home: Path, tmp_path: Path
) -> None:
    cfg = tiny_config(**RESPONDS)
    outcome, tracker = run(cfg, demo_home, tmp_path / "job")
    logged = val_losses(tracker)
    assert sorted(logged) == [1, 2, 3, 4, 5, 6]
    assert len(set(logged.values())) == 6  # a high learning rate moves it every step
    scorer = Scorer(cfg, demo_home, tmp_path / "score")
    untrained = scorer.score()
    trained = scorer.score(outcome.lora_files[0])
    assert trained == logged[6]  # the final LoRA scores what the run logged at its end
    zero_lora(scorer)
    assert scorer.score() == untrained  # a zeroed LoRA is the base model again
    assert abs(trained - untrained) > 1e-3  # and the trained one is measurably different


def test_the_last_steps_evaluation_counts_its_lora_as_saved(demo_home, tmp_path, capsys) -> None:
    cfg = tiny_config(
        validation={"holdout": 2, "every": 2}, train={"steps": 6}, save={"save_every": 2}
    )
    ctx = RunContext(home=demo_home, job_dir=tmp_path / "job", tracker=RecordingTracker())
    validation = loop.Validation(cfg, ctx)
    loop.prepare_data(cfg, ctx, validation)
    falling = iter([3.0, 2.0, 1.0])  # the validation loss still falls at the end
    validation.loss = lambda *args: next(falling)  # type: ignore[method-assign]
    state = loop.LoopState()
    for step in (2, 4, 6):
        state.step = step
        validation.after_step(None, None, state, 6, contextlib.nullcontext)
    assert validation.best == (6, 1.0)  # the final LoRA, saved right after, is the best
    assert "step 6: validation loss 1 (best saved LoRA: step 6)" in capsys.readouterr().out
