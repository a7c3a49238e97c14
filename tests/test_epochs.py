"""train.epochs: resolved to steps from the images (trainer and advisor alike), trained exactly,
shown beside steps in the wizard, followed by the predictions, imported from kohya configs."""

from __future__ import annotations

import math
import re
from collections import Counter
from pathlib import Path

import pytest
from options_support import RecordingTracker, tiny_config
from test_advisor_cases import PROFILES, make, sized
from ui_support import draft, go_to_step, open_page, texts

from advisor.dataset import DatasetInfo, FolderInfo, folder_info, run_steps
from advisor.predict import predict
from advisor.rules import validate
from trainer.config.importers import import_text
from trainer.config.introspection import unresolved_autos
from trainer.config.io import ConfigError, config_from_dict
from trainer.config.schema import TrainingConfig
from trainer.data.batches import BucketBatches
from trainer.data.buckets import epoch_bucket_counts
from trainer.data.scanning import scan_dataset
from trainer.engine.context import RunContext, StopSignal
from trainer.engine.loop import train
from trainer.engine.run_length import run_length
from ui.steps_epochs import linked_values, run_length_text


class ParamTracker(RecordingTracker):
    def __init__(self) -> None:
        super().__init__()
        self.params: dict[str, object] = {}

    def log_params(self, params):
        self.params.update(params)
        return []


def _scan(cfg: TrainingConfig, demo_dataset: Path):
    return scan_dataset(cfg.datasets[0], demo_dataset)


def _expected_per_epoch(cfg: TrainingConfig, demo_dataset: Path, processes: int = 1) -> int:
    """Counted by hand from the scanned images: items per bucket, batches per bucket rounded up,
    then the batches one optimizer step takes (accumulation x processes)."""
    ds, train_ = cfg.datasets[0], cfg.train
    sizes = [(i.width, i.height) for i in _scan(cfg, demo_dataset).images]
    counts = epoch_bucket_counts(sizes, ds.resolution, 8, repeats=ds.num_repeats)
    batches = sum(math.ceil(n / int(train_.batch_size)) for n in counts.values())
    return math.ceil(batches / (train_.gradient_accumulation_steps * processes))


def _data(cfg: TrainingConfig, demo_dataset: Path) -> BucketBatches:
    return BucketBatches([_scan(cfg, demo_dataset)], batch_size=int(cfg.train.batch_size))


# --------------------------------------------------------------------------------- the config
def test_epochs_are_optional_bounded_and_win_over_steps_in_the_description() -> None:
    assert TrainingConfig().train.epochs is None
    with pytest.raises(ConfigError):
        config_from_dict({"train": {"epochs": 0}})
    info = TrainingConfig.model_fields["train"].annotation.model_fields["epochs"]
    assert "epochs wins over steps" in info.description
    # with epochs the steps are not needed: 'auto' is no open decision, and the warmup rule
    # against a step count the images decide is left to the advisor
    cfg = config_from_dict({"train": {"steps": "auto", "epochs": 3}})
    assert "train.steps" not in unresolved_autos(cfg)
    assert "train.steps" in unresolved_autos(config_from_dict({"train": {"steps": "auto"}}))
    warm = {"lr_scheduler_params": {"warmup_steps": 50}}
    config_from_dict({"train": {"steps": 40, "epochs": 3, **warm}})
    with pytest.raises(ConfigError, match="warmup"):
        config_from_dict({"train": {"steps": 40, **warm}})


# ------------------------------------------------------------------------------- resolution
@pytest.mark.parametrize(("batch", "accum", "repeats"), [(1, 1, 1), (2, 2, 3), (3, 1, 2)])
def test_epochs_resolve_to_steps_on_the_demo_dataset(
    demo_dataset: Path, batch: int, accum: int, repeats: int
) -> None:
    cfg = tiny_config(
        train={"epochs": 3, "batch_size": batch, "gradient_accumulation_steps": accum},
        datasets=[{"num_repeats": repeats}],
    )
    per_epoch = _expected_per_epoch(cfg, demo_dataset)
    data = _data(cfg, demo_dataset)
    length = run_length(cfg, data)
    assert (length.steps, length.steps_per_epoch, length.epochs) == (3 * per_epoch, per_epoch, 3)
    # the advisor counts the same steps from the folder's facts, before any run
    info = DatasetInfo((folder_info(_scan(cfg, demo_dataset)),))
    assert run_steps(cfg, info) == 3 * per_epoch
    # several processes share one epoch: fewer steps each
    assert run_length(cfg, data, processes=2).steps == 3 * _expected_per_epoch(
        cfg, demo_dataset, processes=2
    )
    assert len(_scan(cfg, demo_dataset).images) == 12  # the demo dataset, mixed aspect ratios
    if (batch, accum, repeats) == (1, 1, 1):
        assert per_epoch == 12


def test_without_epochs_the_steps_decide(demo_dataset: Path) -> None:
    cfg = tiny_config(train={"steps": 7})
    assert run_length(cfg, _data(cfg, demo_dataset)).steps == 7
    assert run_steps(cfg, None) == 7
    assert run_steps(tiny_config(train={"epochs": 2}), None) is None  # images unknown


# ---------------------------------------------------------------------------------- training
def test_a_run_with_epochs_trains_exactly_that_many_passes(
    demo_home: Path, demo_dataset: Path, tmp_path: Path
) -> None:
    cfg = tiny_config(train={"epochs": 2, "batch_size": 4})  # steps stays at its 2
    per_epoch = _expected_per_epoch(cfg, demo_dataset)
    tracker = ParamTracker()
    ctx = RunContext(home=demo_home, job_dir=tmp_path / "job", tracker=tracker, stop=StopSignal())
    outcome = train(cfg, ctx)
    assert outcome.step == outcome.total_steps == 2 * per_epoch != cfg.train.steps
    assert sorted(tracker.metrics) == list(range(1, 2 * per_epoch + 1))  # log_every 1
    assert tracker.params["total_steps"] == 2 * per_epoch
    assert tracker.params["steps_per_epoch"] == per_epoch
    assert not outcome.stopped and outcome.lora_files


# ---------------------------------------------------------------------------------- advisor
def test_the_time_prediction_follows_the_epochs() -> None:
    info = sized(40)
    times = {}
    for epochs in (2, 4):
        cfg = make(f"train.epochs={epochs}", "train.steps=1000", arch="sdxl")
        steps = run_steps(cfg, info)
        assert steps == epochs * 40  # batch 1: one step per image
        times[epochs] = predict(cfg, PROFILES["rtx4090"], info).total_time.value
    steps_only = predict(make("train.steps=1000", arch="sdxl"), PROFILES["rtx4090"], info)
    assert times[2] < times[4] < steps_only.total_time.value
    # the training part doubles exactly; fixed costs (loading, caching) stay
    parts = {
        e: predict(make(f"train.epochs={e}", arch="sdxl"), PROFILES["rtx4090"], info)
        for e in (2, 4)
    }
    assert parts[4].total_time.parts["training"] == pytest.approx(
        2 * parts[2].total_time.parts["training"]
    )


def test_advisor_rules_read_the_resolved_steps() -> None:
    info = sized(40)
    cfg = make("train.epochs=400", "train.steps=100", arch="sdxl")  # 16,000 steps
    found = {f.rule: f for f in validate(cfg, PROFILES["rtx4090"], info)}
    assert "steps_too_many" in found
    assert found["steps_too_many"].fix["train.epochs"] is None  # else the epochs would win


# ----------------------------------------------------------------------------------- wizard
@pytest.fixture()
def fresh_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A studio home of this test's own (no draft saved by another test)."""
    monkeypatch.setenv("STUDIO_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path / "home"


def test_linked_values_keep_steps_and_epochs_one_run_length(fresh_home: Path) -> None:
    data = TrainingConfig().model_dump(mode="json")  # the demo dataset at 512 px, batch 1
    linked = linked_values("train.epochs", 3, data)
    assert linked == {"train.steps": 3 * 12}  # 12 demo images, one per batch
    data["train"]["epochs"] = 3
    assert linked_values("train.batch_size", 2, data)["train.steps"] < 36
    assert linked_values("train.steps", 500, data) == {"train.epochs": None}


def test_run_length_text_says_how_an_epoch_is_counted() -> None:
    cfg = make("train.steps=1200", "datasets.0.num_repeats=5", arch="sd15")
    text = run_length_text(cfg, sized(24))
    assert text == "**1,200 steps = 10 epochs** of 120 steps (24 images × 5 repeats ÷ batch 1)."
    cfg = make("train.epochs=3", "train.batch_size=4", arch="sd15")
    square, tall, wide = (512, 512), (512, 768), (768, 512)
    mixed = DatasetInfo((FolderInfo(7, sizes=(square,) * 3 + (tall,) * 2 + (wide,) * 2),))
    text = run_length_text(cfg, mixed)  # three buckets of one batch each, not ceil(7 / 4) = 2
    assert text == (
        "**9 steps = 3 epochs** of 3 steps (7 images × 1 repeat ÷ batch 4, rounded up per bucket)."
    )
    assert "counted once the dataset" in run_length_text(cfg, None)


def _total_time(at) -> str:
    """The advisor column's predicted total time (compact in the wizard)."""
    found = re.search(r"Total time: \*\*(.+?)\*\*", texts(at))
    assert found, texts(at)
    return found.group(1)


def test_the_wizard_shows_steps_and_epochs_whichever_is_typed(fresh_home: Path) -> None:
    at = open_page("pages/wizard.py")
    go_to_step(at, "training")
    at.text_input(key="cfg:train.epochs").set_value("3").run()
    assert not at.exception, [e.value for e in at.exception]
    assert draft(at)["train"]["epochs"] == 3 and draft(at)["train"]["steps"] == 36
    assert at.text_input(key="cfg:train.steps").value == "36"
    assert "36 steps = 3 epochs** of 12 steps (12 images × 1 repeat ÷ batch 1" in texts(at)
    short = _total_time(at)
    at.text_input(key="cfg:train.epochs").set_value("300").run()  # the prediction follows
    assert draft(at)["train"]["steps"] == 3600 and _total_time(at) != short
    at.text_input(key="cfg:train.steps").set_value("30").run()
    assert draft(at)["train"]["epochs"] is None and draft(at)["train"]["steps"] == 30
    assert at.text_input(key="cfg:train.epochs").value == ""
    assert "30 steps = 2.5 epochs** of 12 steps" in texts(at)


# ---------------------------------------------------------------------------------- imports
def test_kohya_epochs_become_train_epochs() -> None:
    toml = "[training_arguments]\nmax_train_steps = 1600\nmax_train_epochs = 7\n"
    imported = import_text(toml, "a.toml")
    assert imported.config.train.epochs == 7 and imported.config.train.steps == 1600
    assert imported.mapped["max_train_epochs"] == "train.epochs"
    gui = import_text('{"epoch": 5, "max_train_steps": 0}', "gui.json")
    assert gui.config.train.epochs == 5
    both = import_text('{"epoch": 10, "max_train_steps": 1500}', "gui.json")
    reasons = {u.key: u.reason for u in both.unmapped}
    assert both.config.train.epochs is None and both.config.train.steps == 1500
    assert "decides the run's length" in reasons["epoch"]
    unset = import_text('{"max_train_epochs": 0, "max_train_steps": 900}', "gui.json")
    assert unset.config.train.epochs is None and "not set" in unset.unmapped[0].reason


def test_the_buckets_of_the_demo_dataset_differ(demo_dataset: Path) -> None:
    """The demo dataset has several aspect ratios, so the resolution tests above exercise the
    per-bucket rounding rather than a plain division."""
    cfg = tiny_config()
    sizes = Counter((i.width, i.height) for i in _scan(cfg, demo_dataset).images)
    assert len(epoch_bucket_counts(list(sizes.elements()), [64], 8)) > 1
