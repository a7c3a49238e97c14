"""One rank of a multi-process run, for tests/test_distributed.py (not collected by pytest).

Launched as ``accelerate launch --multi_gpu --num_processes 2 tests/distributed_probe.py HOME OUT``.
Each rank (1) checks the gradient average on a small model: its half of a batch through the
accelerate-prepared (DDP) model must give the full batch's gradient; (2) trains the tiny SD1.5
model through the real ``trainer.engine.loop.train`` while recording the images of every
micro-batch it trained on and the type of the prepared module; (3) records the gradients after
the first of two accumulated micro-batches (not synced yet) and before the optimizer step
(synced); then writes ``OUT/rank<r>.json`` with what it saw and a digest of its final LoRA weights.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]

from options_support import StopAfter, tiny_config  # noqa: E402

import trainer.engine.loop as loop  # noqa: E402
from trainer.engine import distributed  # noqa: E402
from trainer.engine.context import RunContext, StopSignal  # noqa: E402
from trainer.tracking.tracker import NullTracker  # noqa: E402


def gradient_average_error(dist: distributed.Dist) -> float:
    """Largest |DDP-averaged shard gradient - full-batch gradient| on a seeded Linear model."""
    torch.manual_seed(0)  # same model and batch on every rank
    model, x, y = torch.nn.Linear(3, 2), torch.randn(8, 3), torch.randn(8, 2)
    reference = torch.nn.Linear(3, 2)
    reference.load_state_dict(model.state_dict())
    part = slice(dist.rank, None, dist.world)
    train = tiny_config(runtime={"device": "cpu", "num_processes": 2}).train
    with dist.accelerating(train, torch.device("cpu"), torch.float32) as accelerator:
        wrapped = accelerator.prepare(model)
        with accelerator.accumulate(wrapped):
            accelerator.backward(((wrapped(x[part]) - y[part]) ** 2).mean())
    ((reference(x) - y) ** 2).mean().backward()
    pairs = zip(model.parameters(), reference.parameters(), strict=True)
    return max(float((p.grad - q.grad).abs().max()) for p, q in pairs)


def equivalence_config(processes: int):
    """2 steps of 2 micro-batches of 2 images: on 2 processes one each, on 1 accumulated.

    Noise per image (force_consistent_noise), no caption dropout and adafactor (its update is
    a smooth function of the gradient, unlike Adam's sign-like first step), so the runs can only
    differ by how the gradients of the two micro-batches are combined."""
    return tiny_config(
        train={
            "steps": 2,
            "batch_size": 2,
            "gradient_accumulation_steps": 2 // processes,
            "optimizer": "adafactor",
            "force_consistent_noise": True,
        },
        datasets=[{"caption_dropout_rate": 0.0}],
        runtime={"device": "cpu", "num_processes": processes},
    )


def pin_timesteps(arch):
    """Every image at t=500 (timesteps are otherwise drawn per batch from the run's generator)."""
    arch.sample_timesteps = lambda n, generator=None: torch.full(
        (n,), 500, dtype=torch.long, device=arch.device
    )
    return arch


def weights_digest(arch) -> str:
    weights = {
        f"{part}.{name}": tensor
        for part, tensors in arch.lora_state_dicts().items()
        for name, tensor in tensors.items()
    }
    digest = hashlib.sha256()
    for name in sorted(weights):
        digest.update(name.encode() + weights[name].detach().float().contiguous().numpy().tobytes())
    return digest.hexdigest()


def main(home: Path, out: Path) -> None:
    dist = distributed.start("cpu")
    error = gradient_average_error(dist)
    seen: list[list[str]] = []
    archs: list = []
    real_loss, real_load = loop.compute_loss, loop.load_arch

    def recording_loss(arch, inputs, batch, *args, **kwargs):
        seen.append(list(batch["paths"]))
        return real_loss(arch, inputs, batch, *args, **kwargs)

    def recording_load(*args, **kwargs):
        archs.append(real_load(*args, **kwargs))
        return archs[-1]

    prepared: list[str] = []
    real_prepare = distributed.Dist.prepare

    def recording_prepare(self, *args, **kwargs):
        model, optimizer = real_prepare(self, *args, **kwargs)
        prepared.append(type(model).__name__)
        return model, optimizer

    distributed.Dist.prepare = recording_prepare
    loop.compute_loss, loop.load_arch = recording_loss, recording_load
    cfg = tiny_config(
        train={"steps": 3, "batch_size": 2}, runtime={"device": "cpu", "num_processes": 2}
    )
    ctx = RunContext(
        home=home,
        job_dir=out / "job",
        tracker=NullTracker(),
        progress=None if dist.is_main else distributed.NullProgress(),
        dist=dist,
    )
    outcome = loop.train(cfg, ctx)
    result = {
        "rank": dist.rank,
        "world": dist.world,
        "gradient_error": error,
        "batches": list(seen),
        "weights_sha256": weights_digest(archs[-1]),
        "lora_files": [str(f) for f in outcome.lora_files],
        "step": outcome.step,
        "prepared": prepared[-1],
    }
    # A stop that only rank 0 sees (as after a SIGTERM to it alone) stops both ranks at the same
    # step; a resume then loads the main process's checkpoint on both and finishes in sync.
    cfg = tiny_config(
        train={"steps": 6},
        save={"save_every": 2},
        runtime={"device": "cpu", "num_processes": 2},
    )
    ctx.job_dir, ctx.stop = out / "job2", StopAfter(2) if dist.is_main else StopSignal()
    stopped = loop.train(cfg, ctx)
    ctx.stop = StopSignal()
    resumed = loop.train(cfg, ctx, resume=out / "job2")
    result.update(
        stopped_at=stopped.step,
        stopped=stopped.stopped,
        resumed_to=resumed.step,
        resumed_sha256=weights_digest(archs[-1]),
        resumed_files=[str(f) for f in resumed.lora_files],
    )
    # DDP's average equals accumulation over the union: record the first step's synced gradient.
    grads: list[list[torch.Tensor]] = []
    real_clip = distributed.Dist.clip_gradients

    def recording_clip(self, params, max_norm):
        params = list(params)
        grads.append([p.grad.detach().clone() for p in params])
        return real_clip(self, params, max_norm)

    distributed.Dist.clip_gradients = recording_clip
    loop.load_arch = lambda *a, **k: pin_timesteps(recording_load(*a, **k))
    ctx.job_dir = out / "job3"
    equal = loop.train(equivalence_config(2), ctx)
    if dist.is_main:
        torch.save(grads[0], out / "grads_2proc.pt")
    result["equivalence_files"] = [str(f) for f in equal.lora_files]
    # accelerator.accumulate: the first of two micro-batches keeps its gradient local (no_sync),
    # the last one all-reduces. Record the LoRA gradients when micro-batch 2 starts and at clip.
    local: list[list[torch.Tensor]] = []

    def recording_local(arch, inputs, batch, *args, **kwargs):
        if len(seen) == first_seen + 1:  # micro-batch 1 went through backward
            trained = [p for m in arch.adapted_components().values() for p in m.parameters()]
            local.append([p.grad.detach().clone() for p in trained if p.requires_grad])
        return recording_loss(arch, inputs, batch, *args, **kwargs)

    first_seen, grads[:] = len(seen), []
    loop.compute_loss = recording_local
    ctx.job_dir = out / "job4"
    accumulated = tiny_config(
        train={"steps": 1, "batch_size": 2, "gradient_accumulation_steps": 2},
        runtime={"device": "cpu", "num_processes": 2},
    )
    loop.train(accumulated, ctx)
    torch.save({"local": local[0], "synced": grads[0]}, out / f"accumulate_rank{dist.rank}.pt")
    (out / f"rank{dist.rank}.json").write_text(json.dumps(result))
    dist.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
