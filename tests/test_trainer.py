"""The training loop on the tiny models: caching, resume, stop, crashes, bad data.

Most tests train a few steps in-process with a recording tracker; the CLI and MLflow are tested
end to end in test_trainer_cli.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from options_support import RecordingTracker, StopAfter, run
from PIL import Image

from trainer.config.io import loads_config
from trainer.config.schema import TrainingConfig
from trainer.config.sections.outputs import LoggingConfig
from trainer.data.scanning import DatasetError
from trainer.engine.checkpoint import CheckpointError, list_checkpoints
from trainer.engine.context import RunContext
from trainer.engine.failures import NonFiniteLoss
from trainer.engine.loop import train
from trainer.tracking.progress import ProgressWriter, read_progress


def tiny_config(**sections: Any) -> TrainingConfig:
    data: dict[str, Any] = {
        "name": "t",
        "model": {"arch": "sd15", "name_or_path": "demo:sd15"},
        "network": {"linear": 4, "linear_alpha": 4},
        "datasets": [{"folder_path": "demo:dataset", "trigger_word": "sks", "resolution": [64]}],
        "train": {
            "steps": 6,
            "batch_size": 2,
            "lr": 1e-3,
            "optimizer": "adamw",
            "gradient_checkpointing": False,
            "lr_scheduler": "cosine",
            "lr_scheduler_params": {"warmup_steps": 2},
        },
        "sample": {"sample_every": 0},
        "save": {"save_every": 100},
        "logging": {"log_every": 1, "use_mlflow": False},
    }
    for section, values in sections.items():
        if isinstance(values, dict) and isinstance(data.get(section), dict):
            data[section] = {**data[section], **values}
        else:
            data[section] = values
    return TrainingConfig.model_validate(data)


def test_losses_are_deterministic_and_logged_every_step(demo_home: Path, tmp_path: Path) -> None:
    cfg = tiny_config()
    first, rec1 = run(cfg, demo_home, tmp_path / "a")
    _, rec2 = run(cfg, demo_home, tmp_path / "b")
    assert first.step == 6 and not first.stopped
    assert sorted(rec1.metrics) == [1, 2, 3, 4, 5, 6]
    assert rec1.losses() == rec2.losses()
    assert all(0 < loss < 10 for loss in rec1.losses())
    # The cosine schedule with 2 warmup steps is what the optimizer really used.
    lrs = [rec1.metrics[s]["lr"] for s in sorted(rec1.metrics)]
    assert lrs[0] == pytest.approx(5e-4) and lrs[1] == pytest.approx(1e-3)
    assert lrs[-1] < lrs[2]
    progress = read_progress(tmp_path / "a")
    assert progress["step"] == 6 and progress["total_steps"] == 6
    suffixes = {Path(p).suffix for p, _ in rec1.artifacts if Path(p).is_file()}
    assert suffixes == {".safetensors", ".md", ".py", ".json"}  # the LoRA, its card and usage
    assert rec1.tags["versions.torch"] == torch.__version__
    assert rec1.tags["studio.dataset_fingerprint"] == rec2.tags["studio.dataset_fingerprint"]


def test_seed_changes_the_losses(demo_home: Path, tmp_path: Path) -> None:
    _, base = run(tiny_config(), demo_home, tmp_path / "a")
    _, other = run(tiny_config(train={"seed": 7}), demo_home, tmp_path / "b")
    assert base.losses() != other.losses()
    folder = _image_folder(tmp_path / "data", 4)
    _, own = run(
        tiny_config(datasets=[{"folder_path": str(folder), "resolution": [64]}]),
        demo_home,
        tmp_path / "c",
    )
    assert own.tags["studio.dataset_fingerprint"] != base.tags["studio.dataset_fingerprint"]


def test_cached_and_uncached_latents_give_the_same_losses(demo_home: Path, tmp_path: Path) -> None:
    live = tiny_config(train={"steps": 12})
    cached = tiny_config(
        datasets=[
            {
                "folder_path": "demo:dataset",
                "resolution": [64],
                "trigger_word": "sks",
                "cache_latents": True,
            }
        ],
        train={"cache_text_embeddings": True, "steps": 12},
    )
    _, rec_live = run(live, demo_home, tmp_path / "live")
    _, rec_cached = run(cached, demo_home, tmp_path / "cached")
    # A live step encodes its batch in one call, a cached one stacks latents encoded in other
    # batches: float rounding may differ (on this CPU it does not), nothing more.
    assert rec_cached.losses() == pytest.approx(rec_live.losses(), rel=1e-5, abs=1e-6)
    last = rec_cached.metrics[12]  # the second epoch reuses every latent and embedding
    assert last["cache/latent_hits"] > 0 and last["cache/text_hits"] > 0


def test_disk_cache_is_reused_by_a_second_run(demo_home: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "models").mkdir(parents=True)
    # Share the built demo models without copying: the cache folder is what matters here.
    (home / "models" / "demo").symlink_to(demo_home / "models" / "demo")
    (home / "datasets").mkdir()
    (home / "datasets" / "demo").symlink_to(demo_home / "datasets" / "demo")
    cfg = tiny_config(
        datasets=[
            {
                "folder_path": "demo:dataset",
                "resolution": [64],
                "trigger_word": "sks",
                "cache_latents_to_disk": True,
            }
        ],
        train={"steps": 12},
    )
    _, first = run(cfg, home, tmp_path / "a")
    _, second = run(cfg, home, tmp_path / "b")
    assert first.metrics[12]["cache/latent_misses"] > 0
    assert second.metrics[12]["cache/latent_misses"] == 0
    assert second.metrics[12]["cache/latent_hits"] == 24
    assert any((home / "cache" / "latents").rglob("*.safetensors"))
    assert first.losses() == second.losses()
    # A different resolution is a different cache entry, never a stale hit.
    cfg96 = cfg.model_copy(deep=True)
    cfg96.datasets[0].resolution = [96]
    _, third = run(cfg96, home, tmp_path / "c")
    assert third.metrics[12]["cache/latent_misses"] > 0


def test_resume_continues_exactly(demo_home: Path, tmp_path: Path) -> None:
    cfg = tiny_config(train={"steps": 8}, save={"save_every": 100})
    _, whole = run(cfg, demo_home, tmp_path / "whole")
    stopped, first = run(cfg, demo_home, tmp_path / "split", stop=StopAfter(3))
    assert stopped.stopped and stopped.step == 3
    assert [p.name for p in list_checkpoints(tmp_path / "split" / "checkpoints")] == [
        "step_00000003"
    ]
    resumed, second = run(cfg, demo_home, tmp_path / "split", resume=tmp_path / "split")
    assert resumed.step == 8 and not resumed.stopped
    assert first.losses() + second.losses() == whole.losses()
    assert sorted(second.metrics) == [4, 5, 6, 7, 8]


def test_resume_refuses_an_incompatible_checkpoint(demo_home: Path, tmp_path: Path) -> None:
    cfg = tiny_config()
    run(cfg, demo_home, tmp_path / "job", stop=StopAfter(2))
    other = tiny_config(network={"linear": 8, "linear_alpha": 8})
    with pytest.raises(CheckpointError, match=r"rank \(network.linear\) was 4 .* now 8"):
        run(other, demo_home, tmp_path / "job", resume=tmp_path / "job")


def test_checkpoints_rotate_and_keep_the_newest(demo_home: Path, tmp_path: Path) -> None:
    cfg = tiny_config(train={"steps": 8}, save={"save_every": 2, "max_step_saves_to_keep": 2})
    run(cfg, demo_home, tmp_path / "job")
    names = [p.name for p in list_checkpoints(tmp_path / "job" / "checkpoints")]
    assert names == ["step_00000006", "step_00000008"]


def test_samples_are_logged_with_their_settings(demo_home: Path, tmp_path: Path) -> None:
    cfg = tiny_config(
        sample={
            "sample_every": 3,
            "prompts": ["[trigger] circle", {"prompt": "x", "seed": 5}],
            "width": 64,
            "height": 64,
            "sample_steps": 2,
        },
    )
    _, rec = run(cfg, demo_home, tmp_path / "job")
    steps = rec.sample_steps()
    assert steps == [0, 3, 6]
    first = [extra for key, step, extra, _ in rec.images if step == 0]
    assert first[0]["prompt"] == "sks circle" and first[0]["seed"] == 42
    assert first[1]["seed"] == 5 and first[1]["sampler"] == "euler"


def test_nan_loss_stops_the_run(demo_home, tmp_path, monkeypatch) -> None:
    from trainer.arch.sd15 import SD15Arch

    original = SD15Arch.predict

    def poisoned(self, *args, **kwargs):
        return original(self, *args, **kwargs) * float("nan")

    monkeypatch.setattr(SD15Arch, "predict", poisoned)
    with pytest.raises(NonFiniteLoss, match="step 1"):
        run(tiny_config(), demo_home, tmp_path / "job")


def _image_folder(folder: Path, count: int) -> Path:
    folder.mkdir(parents=True)
    for i in range(count):
        Image.new("RGB", (64, 64), (40 * i % 255, 80, 120)).save(folder / f"img{i}.png")
        (folder / f"img{i}.txt").write_text(f"sks thing {i}")
    return folder


def test_corrupt_files_are_skipped_and_reported(demo_home: Path, tmp_path: Path) -> None:
    folder = _image_folder(tmp_path / "data", 4)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (folder / "notes.docx").write_bytes(b"PK\x03\x04")
    cfg = tiny_config(datasets=[{"folder_path": str(folder), "resolution": [64]}])
    outcome, rec = run(cfg, demo_home, tmp_path / "job")
    assert outcome.step == 6
    assert rec.tags["dataset.skipped_files"] == "2"
    report = rec.texts["dataset/report.json"]
    assert "broken.png" in report and "notes.docx" in report


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("empty", "no images"),
        ("missing", "does not exist"),
        ("too_small", "batch"),
    ],
)
def test_unusable_datasets_stop_before_training(demo_home, tmp_path, setup, message) -> None:
    folder = tmp_path / "data"
    if setup == "empty":
        folder.mkdir()
    elif setup == "too_small":
        _image_folder(folder, 1)
    cfg = tiny_config(
        datasets=[{"folder_path": str(folder), "resolution": [64]}],
        train={"batch_size": 2, "gradient_accumulation_steps": 2},
    )
    with pytest.raises(DatasetError, match=message):
        run(cfg, demo_home, tmp_path / "job")
    assert not (tmp_path / "job" / "checkpoints").exists()


def test_saved_lora_changes_the_pipeline_output(demo_home: Path, tmp_path: Path) -> None:
    from diffusers import StableDiffusionPipeline

    cfg = tiny_config(train={"steps": 10, "lr": 1e-2})
    outcome, _ = run(cfg, demo_home, tmp_path / "job")
    pipe = StableDiffusionPipeline.from_pretrained(
        demo_home / "models" / "demo" / "sd15", dtype=torch.float32, safety_checker=None
    )
    pipe.set_progress_bar_config(disable=True)

    def image() -> torch.Tensor:
        out = pipe(
            "sks circle",
            num_inference_steps=2,
            height=64,
            width=64,
            output_type="pt",
            generator=torch.Generator().manual_seed(0),
        )
        return out.images

    before = image()
    pipe.load_lora_weights(str(outcome.lora_files[0]))
    after = image()
    assert (after - before).abs().mean() > 1e-3


def test_yaml_config_runs_through_run_job(demo_home, tmp_path, monkeypatch) -> None:
    from trainer.engine.run import EXIT_OK, run_job

    monkeypatch.setenv("STUDIO_HOME", str(demo_home))
    path = tmp_path / "c.yaml"
    path.write_text(
        "name: yaml_run\nmodel: {name_or_path: 'demo:sd15'}\n"
        "network: {linear: 4, linear_alpha: 4}\n"
        "datasets: [{folder_path: 'demo:dataset', resolution: [64]}]\n"
        "train: {steps: 3, batch_size: 2, optimizer: adamw, gradient_checkpointing: false}\n"
        "sample: {sample_every: 0}\nlogging: {use_mlflow: false}\n"
    )
    result = run_job(path, ["train.lr=2e-3"], job_dir=tmp_path / "job")
    assert result.exit_code == EXIT_OK and result.status == "FINISHED"
    saved = loads_config((tmp_path / "job" / "config.yaml").read_text())
    assert saved.train.lr == pytest.approx(2e-3)
    assert read_progress(tmp_path / "job")["phase"] == "finished"


class RecordingProgress:
    """A progress writer that keeps every state it writes (none is rate-limited away)."""

    def __init__(self, job_dir: Path) -> None:
        self.writer = ProgressWriter(job_dir, min_interval_s=0.0)
        self.written: list[dict[str, Any]] = []

    @property
    def last(self) -> dict[str, Any]:
        return self.writer.last

    def update(self, force: bool = False, **fields: Any) -> bool:
        wrote = self.writer.update(force=force, **fields)
        self.written.append(dict(self.writer.last))
        return wrote

    def close(self, **fields: Any) -> None:
        self.writer.close(**fields)


def test_progress_shows_each_phase_and_an_eta_that_counts_previews_and_saves(
    demo_home: Path, tmp_path: Path
) -> None:
    cfg = tiny_config(
        train={"steps": 6},
        sample={
            "sample_every": 3,
            "prompts": ["[trigger] circle", "x"],
            "width": 64,
            "height": 64,
            "sample_steps": 2,
        },
        save={"save_every": 3},
    )
    progress = RecordingProgress(tmp_path / "job")
    ctx = RunContext(demo_home, tmp_path / "job", RecordingTracker(), progress=progress)
    train(cfg, ctx)
    seen = progress.written

    def where(phase: str, **match: Any) -> list[dict[str, Any]]:
        return [p for p in seen if p["phase"] == phase and match.items() <= p.items()]

    loading = where("loading", phase_detail="the base model")[0]
    assert loading["total_steps"] == 6 and loading["phase_started"] > 0  # known from the start
    assert where("loading", phase_detail="the dataset")
    # Previews image by image: the baseline (step 0), then steps 3 and 6.
    for step in (0, 3, 6):
        assert sorted({p["phase_done"] for p in where("sampling", step=step)}) == [0, 1, 2]
        assert {p["phase_total"] for p in where("sampling", step=step)} == {2}
    # The ETA includes what is still due: at step 3 the round at 6 and the saves; at step 6 (all
    # steps done) its previews and the final checkpoint and LoRA. It never reads 0 before the end.
    assert all(p["eta_s"] > 0 for p in where("sampling", step=3))
    last_step = where("training", step=6)[0]
    assert last_step["eta_s"] > 0
    assert where("sampling", step=6, phase_done=0)[0]["eta_s"] > 0
    saving = where("saving", step=6)
    assert [(p["phase_detail"], p["phase_done"], p["phase_total"]) for p in saving] == [
        ("checkpoints/step_00000006", 0, 2),
        ("lora/t", 1, 2),
    ]
    assert all(p["eta_s"] > 0 for p in saving)
    assert where("saving", step=3, phase_detail="checkpoints/step_00000003")  # mid-run too
    # A phase never carries the last one's counts.
    assert all(p.get("phase_done") is None for p in where("training"))
    # The clock measured every preview image and save.
    assert ctx.clock.images.count == 6 and ctx.clock.saves.count == 3


def test_a_default_run_logs_a_loss_point_per_step(demo_home: Path, tmp_path: Path) -> None:
    cfg = tiny_config(train={"steps": 30, "lr_scheduler": "constant"})
    cfg.logging = LoggingConfig(use_mlflow=False)  # log_every as a new config has it
    outcome, rec = run(cfg, demo_home, tmp_path / "job")
    assert outcome.step == 30
    assert sorted(step for step, values in rec.metrics.items() if "loss" in values) == list(
        range(1, 31)
    )
