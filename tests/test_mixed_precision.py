"""Mixed precision and gradient accumulation through accelerate (trainer.engine.distributed).

- the Accelerator a run builds: accelerate's ``mixed_precision`` and a GradScaler per
  (device, train.dtype); runs with different settings follow each other in one interpreter;
- bf16 on the CPU: the denoiser's adapters compute under autocast (bf16 activations) while their
  weights stay fp32 and the VAE keeps its own dtype; the loss is finite;
- accumulation: ``accelerator.accumulate`` + ``accelerator.backward`` give the same gradients and
  LoRA as the plain ``(loss / N).backward()`` the loop used before accelerate;
- the gradient scaler's state goes into checkpoints and comes back on resume.
"""

from __future__ import annotations

import contextlib
import math

import pytest
import torch
from accelerate.utils import DistributedType
from options_support import StopAfter, run, tiny_config

import trainer.engine.loop as loop
from trainer.engine import distributed
from trainer.engine.checkpoint import latest_checkpoint, load_checkpoint
from trainer.engine.distributed import Dist, MixedPrecision, precision_for
from trainer.lora.io import read_lora_tensors

FP16, BF16, FP32 = torch.float16, torch.bfloat16, torch.float32


@pytest.mark.parametrize(
    ("device", "dtype", "expected"),
    [
        ("cuda", FP16, MixedPrecision("fp16", loss_scaling=True)),
        ("cuda", BF16, MixedPrecision("bf16", loss_scaling=False)),
        ("cuda", FP32, MixedPrecision("no", loss_scaling=False)),
        ("cpu", FP32, MixedPrecision("no", loss_scaling=False)),
        ("cpu", BF16, MixedPrecision("bf16", loss_scaling=False)),
        ("cpu", FP16, MixedPrecision("no", loss_scaling=False)),  # weights in fp16, as before
        ("mps", FP16, MixedPrecision("no", loss_scaling=False)),
    ],
)
def test_the_precision_decision_per_device_and_dtype(device, dtype, expected) -> None:
    assert precision_for(dtype, torch.device(device)) == expected


def test_each_run_builds_its_own_accelerator_with_its_precision() -> None:
    cases = [("cpu", BF16, "bf16"), ("cpu", FP32, "no"), ("cpu", BF16, "bf16")]
    if torch.cuda.is_available():
        cases += [("cuda", FP16, "fp16"), ("cuda", BF16, "bf16"), ("cuda", FP32, "no")]
    dist = Dist()
    for device, dtype, mixed in cases:  # one interpreter: the state is reset after every run
        train = tiny_config(train={"gradient_accumulation_steps": 3}).train
        with dist.accelerating(train, torch.device(device), dtype) as accelerator:
            assert accelerator.mixed_precision == mixed
            assert accelerator.gradient_accumulation_steps == 3
            if mixed == "fp16":
                assert isinstance(accelerator.scaler, torch.amp.GradScaler)
            else:
                assert accelerator.scaler is None
        assert dist.accelerator is None


def test_bf16_on_cpu_trains_the_adapters_under_autocast(demo_home, tmp_path, monkeypatch) -> None:
    seen: dict[str, set] = {"lora_out": set(), "lora_weight": set(), "vae_out": set()}
    real, real_load = loop.compute_loss, loop.load_arch

    def hooked(arch, *args, **kwargs):
        if not seen["lora_out"]:  # first micro-batch: hook one adapter
            lora = next(m for n, m in arch.denoiser.named_modules() if n.endswith("lora_A.default"))
            lora.register_forward_hook(lambda m, i, out: seen["lora_out"].add(out.dtype))
            seen["lora_weight"].add(lora.weight.dtype)
        return real(arch, *args, **kwargs)

    def loaded(*args, **kwargs):  # the VAE encodes ahead of the step: hooked as it loads
        arch = real_load(*args, **kwargs)
        arch.vae.encoder.register_forward_hook(lambda m, i, out: seen["vae_out"].add(out.dtype))
        return arch

    monkeypatch.setattr(loop, "compute_loss", hooked)
    monkeypatch.setattr(loop, "load_arch", loaded)
    cfg = tiny_config(train={"dtype": "bf16"}, model={"vae_dtype": "fp32"})
    outcome, rec = run(cfg, demo_home, tmp_path / "j")
    assert outcome.step == 2
    assert seen == {"lora_out": {BF16}, "lora_weight": {FP32}, "vae_out": {FP32}}
    assert rec.losses() and all(math.isfinite(loss) for loss in rec.losses())


class PlainAccelerator:
    """The loop before accelerate: ``(loss / N).backward()``, no sync, autocast or scaler."""

    scaler = None
    distributed_type = DistributedType.NO

    def __init__(self, steps: int) -> None:
        self.steps = steps

    def prepare(self, *objects, device_placement=None):
        return objects

    def accumulate(self, *models):
        return contextlib.nullcontext()

    def autocast(self):
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        (loss / self.steps).backward()

    def clip_grad_norm_(self, params, max_norm):
        return torch.nn.utils.clip_grad_norm_(params, max_norm)


def test_accumulation_matches_plain_loss_over_n_backward(demo_home, tmp_path, monkeypatch):
    grads: list[list[torch.Tensor]] = []
    real_clip = Dist.clip_gradients

    def recording(self, params, max_norm):
        params = list(params)
        grads.append([p.grad.detach().clone() for p in params])
        return real_clip(self, params, max_norm)

    monkeypatch.setattr(Dist, "clip_gradients", recording)
    cfg = tiny_config(train={"steps": 2, "batch_size": 1, "gradient_accumulation_steps": 3})
    accelerated, rec_a = run(cfg, demo_home, tmp_path / "a")
    through_accelerate, grads[:] = list(grads), []
    monkeypatch.setattr(distributed, "build_accelerator", lambda train, *_: PlainAccelerator(3))
    plain, rec_p = run(cfg, demo_home, tmp_path / "p")
    assert len(through_accelerate) == len(grads) == 2
    for ours, reference in zip(through_accelerate, grads, strict=True):
        for a, b in zip(ours, reference, strict=True):
            assert torch.allclose(a, b, rtol=1e-6, atol=1e-12), float((a - b).abs().max())
    assert rec_a.losses() == pytest.approx(rec_p.losses(), rel=1e-6)
    one, two = (read_lora_tensors(o.lora_files[0]) for o in (accelerated, plain))
    assert one.keys() == two.keys()
    for key, value in one.items():
        assert torch.allclose(value, two[key], rtol=1e-6, atol=1e-9), key


def test_the_gradient_scaler_state_is_checkpointed_and_resumed(demo_home, tmp_path, monkeypatch):
    """fp16 needs CUDA; here the run's Accelerator gets torch's CPU GradScaler (doubling its scale
    every step), so the checkpoint's scaler state and its restore are observable on the CPU."""
    real_build = distributed.build_accelerator

    def with_scaler(train, device, dtype):
        accelerator = real_build(train, device, dtype)
        accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=8.0, growth_interval=1)
        return accelerator

    monkeypatch.setattr(distributed, "build_accelerator", with_scaler)
    cfg = tiny_config(train={"steps": 5, "max_grad_norm": 0.0}, save={"save_every": 100})
    whole, rec_whole = run(cfg, demo_home, tmp_path / "whole")
    _, first = run(cfg, demo_home, tmp_path / "split", stop=StopAfter(3))
    resumed, second = run(cfg, demo_home, tmp_path / "split", resume=tmp_path / "split")
    scales = {
        name: load_checkpoint(latest_checkpoint(job / "checkpoints")).state["scaler"]["scale"]
        for name, job in (("whole", tmp_path / "whole"), ("split", tmp_path / "split"))
    }
    saved_at_3 = load_checkpoint(tmp_path / "split" / "checkpoints" / "step_00000003")
    assert saved_at_3.state["scaler"]["scale"] == 8.0 * 2**3
    assert scales == {"whole": 8.0 * 2**5, "split": 8.0 * 2**5}  # restored, then grew on
    assert first.losses() + second.losses() == rec_whole.losses()
    one, two = (read_lora_tensors(o.lora_files[0]) for o in (whole, resumed))
    assert all(torch.equal(value, two[key]) for key, value in one.items())
