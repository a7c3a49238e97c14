"""Proofs for the core training options: each test fails if the trainer ignores its option."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from options_support import run, tiny_config

import trainer.engine.loop as loop
from trainer.engine.distributed import Dist
from trainer.engine.optim import lr_at

PROVES = {
    "train.optimizer": "test_optimizer_choice_is_the_optimizer_that_steps",
    "train.optimizer_params": "test_optimizer_params_reach_the_optimizer",
    "train.weight_decay": "test_weight_decay_shrinks_the_weights",
    "train.lr": "test_learning_rate_schedules_are_what_the_optimizer_used",
    "train.lr_scheduler": "test_learning_rate_schedules_are_what_the_optimizer_used",
    "train.lr_scheduler_params.warmup_steps": "test_learning_rate_schedules_are_what_the_optimizer_used",
    "train.lr_scheduler_params.warmup_ratio": "test_learning_rate_schedules_are_what_the_optimizer_used",
    "train.lr_scheduler_params.num_cycles": "test_learning_rate_schedules_are_what_the_optimizer_used",
    "train.lr_scheduler_params.min_lr_ratio": "test_learning_rate_schedules_are_what_the_optimizer_used",
    "train.lr_scheduler_params.power": "test_learning_rate_schedules_are_what_the_optimizer_used",
    "train.batch_size": "test_batch_size_and_accumulation_shape_each_step",
    "train.gradient_accumulation_steps": "test_batch_size_and_accumulation_shape_each_step",
    "train.max_grad_norm": "test_max_grad_norm_clips_the_gradients",
    "train.gradient_checkpointing": "test_gradient_checkpointing_is_on_and_changes_no_math",
    "train.cache_text_embeddings": "tests/test_trainer.py::test_cached_and_uncached_latents_give_the_same_losses",
    "train.steps": "test_steps_and_log_every",
    "train.epochs": "tests/test_epochs.py::test_a_run_with_epochs_trains_exactly_that_many_passes",
    "logging.log_every": "test_steps_and_log_every",
    "train.seed": "tests/test_trainer.py::test_seed_changes_the_losses",
    "train.dtype": "test_dtype_sets_the_base_weights_precision",
    "runtime.device": "test_device_choice_and_a_missing_device",
    "logging.verbose": "test_verbose_logs_every_step",
    "logging.use_mlflow": "test_run_identity_reaches_mlflow",
    "logging.project_name": "test_run_identity_reaches_mlflow",
    "logging.run_name": "test_run_identity_reaches_mlflow",
    "name": "test_run_identity_reaches_mlflow",
    "intent": "test_run_identity_reaches_mlflow",
    "preset": "test_run_identity_reaches_mlflow",
    "logging.log_system_metrics": "tests/test_tracking.py::test_create_run_then_attach_with_system_metrics",
    "model.arch": "tests/test_trainer_cli.py::test_each_architecture_trains_through_the_cli",
    "model.name_or_path": "tests/test_trainer_cli.py::test_a_crash_ends_failed_with_a_suggestion",
    "model.attn_masking": "test_attn_masking_hides_t5_padding_from_flux",
    "model.refiner_name_or_path": "test_refiner_finishes_the_sdxl_previews",
    "model.components_from": "tests/test_single_file.py::test_components_from_supplies_what_a_flux_file_lacks",
}


def _spy(monkeypatch, name: str) -> list:
    calls: list = []
    real = getattr(loop, name)

    def wrapper(*args, **kwargs):
        result = real(*args, **kwargs)
        calls.append((args, kwargs, result))
        return result

    monkeypatch.setattr(loop, name, wrapper)
    return calls


def _lora_weights(outcome) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(outcome.lora_files[0]))


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("adamw", "AdamW"),
        ("adamw8bit", "AdamW8bit"),
        ("adafactor", "Adafactor"),
        ("prodigy", "Prodigy"),
        ("lion", "Lion"),
    ],
)
def test_optimizer_choice_is_the_optimizer_that_steps(name, cls, demo_home, tmp_path, monkeypatch):
    built = _spy(monkeypatch, "build_optimizer")
    lr = 1.0 if name == "prodigy" else 1e-3
    outcome, _ = run(tiny_config(train={"optimizer": name, "lr": lr}), demo_home, tmp_path / "j")
    optimizer = built[0][2]
    assert type(optimizer).__name__ == cls
    assert optimizer.state, "the optimizer never stepped"
    baseline, _ = run(
        tiny_config(train={"optimizer": "adamw" if name != "adamw" else "lion"}),
        demo_home,
        tmp_path / "b",
    )
    a, b = _lora_weights(outcome), _lora_weights(baseline)
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_optimizer_params_reach_the_optimizer(demo_home, tmp_path, monkeypatch) -> None:
    built = _spy(monkeypatch, "build_optimizer")
    cfg = tiny_config(train={"optimizer_params": {"betas": [0.5, 0.75], "eps": 1e-6}})
    run(cfg, demo_home, tmp_path / "j")
    group = built[0][2].param_groups[0]
    assert tuple(group["betas"]) == (0.5, 0.75) and group["eps"] == pytest.approx(1e-6)


def test_weight_decay_shrinks_the_weights(demo_home, tmp_path) -> None:
    plain, _ = run(tiny_config(train={"weight_decay": 0.0, "steps": 4}), demo_home, tmp_path / "a")
    decayed, _ = run(
        tiny_config(train={"weight_decay": 1.0, "lr": 5e-2, "steps": 4}), demo_home, tmp_path / "b"
    )
    plain_fast, _ = run(
        tiny_config(train={"weight_decay": 0.0, "lr": 5e-2, "steps": 4}), demo_home, tmp_path / "c"
    )
    down = [k for k in _lora_weights(decayed) if "lora_down" in k]
    assert down and plain.step == 4
    norm = lambda w: sum(float(w[k].float().norm()) for k in down)  # noqa: E731
    assert norm(_lora_weights(decayed)) < norm(_lora_weights(plain_fast))


SCHEDULES = [
    {"lr_scheduler": "constant"},
    {"lr_scheduler": "linear", "lr_scheduler_params": {"warmup_steps": 2, "min_lr_ratio": 0.1}},
    {"lr_scheduler": "cosine", "lr_scheduler_params": {"warmup_ratio": 0.25}},
    {"lr_scheduler": "cosine_with_restarts", "lr_scheduler_params": {"num_cycles": 2}},
    {"lr_scheduler": "polynomial", "lr_scheduler_params": {"power": 2.0}},
    {"lr_scheduler": "rex"},
    {"lr_scheduler": "constant_with_warmup", "lr_scheduler_params": {"warmup_steps": 3}},
]


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: s["lr_scheduler"])
def test_learning_rate_schedules_are_what_the_optimizer_used(schedule, demo_home, tmp_path):
    cfg = tiny_config(train={"steps": 8, "lr": 2e-3, **schedule})
    _, rec = run(cfg, demo_home, tmp_path / "j")
    used = [rec.metrics[step]["lr"] for step in range(1, 9)]
    planned = [lr_at(cfg.train, step, 8) for step in range(1, 9)]
    assert used == pytest.approx(planned)
    if schedule["lr_scheduler"] == "constant":
        assert used == pytest.approx([2e-3] * 8)
    else:
        assert used != pytest.approx([2e-3] * 8)


def test_batch_size_and_accumulation_shape_each_step(demo_home, tmp_path, monkeypatch) -> None:
    seen: list[int] = []
    real = loop.compute_loss

    def counting(arch, inputs, batch, *args, **kwargs):
        seen.append(len(batch["captions"]))
        return real(arch, inputs, batch, *args, **kwargs)

    monkeypatch.setattr(loop, "compute_loss", counting)
    run(
        tiny_config(train={"batch_size": 3, "gradient_accumulation_steps": 2, "steps": 2}),
        demo_home,
        tmp_path / "j",
    )
    assert len(seen) == 4  # 2 steps x 2 micro-batches
    assert max(seen) == 3 and all(1 <= n <= 3 for n in seen)


def test_max_grad_norm_clips_the_gradients(demo_home, tmp_path, monkeypatch) -> None:
    norms: list[tuple[float | None, float]] = []
    real = Dist.clip_gradients

    def recording(self, params, max_norm):
        params = list(params)
        before = real(self, params, max_norm)
        after = torch.norm(torch.stack([p.grad.norm() for p in params if p.grad is not None]))
        norms.append((before, float(after)))
        return before

    monkeypatch.setattr(Dist, "clip_gradients", recording)
    run(tiny_config(train={"max_grad_norm": 1e-4}), demo_home, tmp_path / "a")
    assert all(before > 1e-4 and after == pytest.approx(1e-4, rel=1e-3) for before, after in norms)
    norms.clear()
    run(tiny_config(train={"max_grad_norm": 0.0}), demo_home, tmp_path / "b")
    assert all(before is None and after > 1e-4 for before, after in norms)


def test_gradient_checkpointing_is_on_and_changes_no_math(demo_home, tmp_path, monkeypatch):
    flags: list[bool] = []
    real = loop.compute_loss

    def checking(arch, *args, **kwargs):
        flags.append(arch.denoiser.is_gradient_checkpointing)
        return real(arch, *args, **kwargs)

    monkeypatch.setattr(loop, "compute_loss", checking)
    _, on = run(tiny_config(train={"gradient_checkpointing": True}), demo_home, tmp_path / "a")
    assert flags and all(flags)
    flags.clear()
    _, off = run(tiny_config(train={"gradient_checkpointing": False}), demo_home, tmp_path / "b")
    assert flags and not any(flags)
    assert on.losses() == pytest.approx(off.losses(), rel=1e-5)


def test_steps_and_log_every(demo_home, tmp_path) -> None:
    outcome, rec = run(
        tiny_config(train={"steps": 6}, logging={"log_every": 4}), demo_home, tmp_path / "j"
    )
    assert outcome.step == 6
    assert sorted(rec.metrics) == [4, 6]  # every 4th step and the last


def test_dtype_sets_the_base_weights_precision(demo_home, tmp_path, monkeypatch) -> None:
    loaded = _spy(monkeypatch, "load_arch")
    _, bf16 = run(tiny_config(train={"dtype": "bf16"}), demo_home, tmp_path / "a")
    arch = loaded[-1][2]
    assert next(arch.denoiser.parameters()).dtype == torch.bfloat16
    lora = [p for n, p in arch.denoiser.named_parameters() if "lora_" in n]
    assert lora and all(p.dtype == torch.float32 for p in lora)  # trainable params stay fp32
    _, fp32 = run(tiny_config(train={"dtype": "fp32"}), demo_home, tmp_path / "b")
    assert next(loaded[-1][2].denoiser.parameters()).dtype == torch.float32
    assert bf16.losses() != fp32.losses()


def test_device_choice_and_a_missing_device(demo_home, tmp_path, monkeypatch) -> None:
    loaded = _spy(monkeypatch, "load_arch")
    run(tiny_config(runtime={"device": "cpu"}), demo_home, tmp_path / "a")
    assert loaded[-1][2].device.type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(loop.DeviceUnavailable, match=r"runtime.device is cuda.*auto or cpu"):
            run(tiny_config(runtime={"device": "cuda"}), demo_home, tmp_path / "b")


def test_verbose_logs_every_step(demo_home, tmp_path, capsys) -> None:
    run(tiny_config(logging={"verbose": True}), demo_home, tmp_path / "a")
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("step ")]
    assert [line.split()[1] for line in lines] == ["1/2", "2/2"]
    assert "loss=" in lines[0]
    run(tiny_config(logging={"verbose": False}), demo_home, tmp_path / "b")
    assert not [l for l in capsys.readouterr().out.splitlines() if l.startswith("step ")]  # noqa: E741


def test_run_identity_reaches_mlflow(demo_home, tmp_path, monkeypatch) -> None:
    from trainer.engine.context import RunContext
    from trainer.engine.loop import train
    from trainer.tracking.mlflow_tracker import MlflowTracker
    from trainer.tracking.records import list_runs
    from trainer.tracking.tracker import NullTracker, make_tracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = tiny_config(
        name="identity_lora",
        intent="style",
        preset="style_sd15",
        logging={
            "use_mlflow": True,
            "project_name": "my-project",
            "run_name": "first try",
            "log_system_metrics": False,
        },
    )
    tracker = make_tracker(cfg, uri)
    assert isinstance(tracker, MlflowTracker)
    assert isinstance(make_tracker(tiny_config(), uri), NullTracker)  # use_mlflow: false
    tracker.start(cfg)
    outcome = train(cfg, RunContext(home=demo_home, job_dir=tmp_path / "job", tracker=tracker))
    tracker.end("FINISHED")
    [record] = list_runs(uri, experiment_names=["my-project"])
    assert record.name == "first try"
    assert record.intent == "style" and record.preset == "style_sd15"
    assert Path(outcome.lora_files[0]).name == "identity_lora.safetensors"


def test_attn_masking_hides_t5_padding_from_flux(demo_home) -> None:
    from trainer.arch.registry import load_arch

    changes = {}
    for masking in (True, False):
        cfg = tiny_config(
            model={"arch": "flux", "name_or_path": "demo:flux", "attn_masking": masking},
            sample={"width": 64, "height": 64},
            train={"noise_scheduler": "auto"},
        )
        arch = load_arch(cfg, demo_home, torch.device("cpu"), torch.float32)
        cond = arch.encode_prompts(["a red circle"])
        padding = cond["text_mask"][0] < 0.5
        assert 0 < int((~padding).sum()) < padding.numel()
        latents = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(0))
        t = torch.tensor([500.0])
        before = arch.predict(latents, t, cond)
        noisy_padding = dict(cond, prompt_embeds=cond["prompt_embeds"].clone())
        noisy_padding["prompt_embeds"][:, padding] += 5.0
        changes[masking] = float((arch.predict(latents, t, noisy_padding) - before).abs().max())
    assert changes[True] == 0.0  # padding cannot reach the prediction
    assert changes[False] > 1e-3


def test_refiner_finishes_the_sdxl_previews(demo_home, tmp_path) -> None:
    import numpy as np

    sdxl = {"arch": "sdxl", "name_or_path": "demo:sdxl"}
    previews = {
        "sample_every": 2,
        "prompts": ["sks circle"],
        "width": 64,
        "height": 64,
        "sample_steps": 2,
        "skip_first_sample": True,
    }
    pictures = {}
    for name, model in (
        ("plain", sdxl),
        ("refined", {**sdxl, "refiner_name_or_path": "demo:sdxl"}),
    ):
        _, rec = run(tiny_config(model=model, sample=previews), demo_home, tmp_path / name)
        [(_, step, _, image)] = rec.images
        assert step == 2
        pictures[name] = np.asarray(image, dtype=np.int16)
    assert pictures["plain"].shape == pictures["refined"].shape
    assert np.abs(pictures["plain"] - pictures["refined"]).mean() > 1.0
