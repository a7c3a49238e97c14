"""The real-size SD1.5 U-Net on this CPU against the advisor's predictions for the same config.

The U-Net is built from its shipped config with random weights (``trainer.demo.real_size``: no
download), wrapped with the trainer's LoRA (peft, rank 4, ``trainer.arch.adapters.SD_TARGETS``)
and trained on random pre-encoded tensors (what a run with cached latents and text embeddings
feeds it): forward + backward + AdamW step, batch 1, fp32. Printed: peak RSS of this process and
seconds per step (the first step left out), next to ``advisor.predict.predict`` for a
TrainingConfig of the same run on this machine's profile (``advisor.profile.detect_profile``),
and the ratio measured / predicted. The advisor predicts a whole run (VAE and data loading
included, which this benchmark does not load): its parts are printed so the like-for-like share
can be read off. Two shared cores make the timing noisy: the load average is printed too.

    .venv/bin/python benchmarks/real_size.py [--resolution 256] [--steps 4]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from gpu_cases.advice import real_sd15_config  # noqa: E402

from advisor.predict import predict  # noqa: E402
from advisor.profile import detect_profile  # noqa: E402
from trainer.arch.adapters import SD_TARGETS, adapter_config, add_adapter  # noqa: E402
from trainer.config.sections.model import NetworkConfig  # noqa: E402
from trainer.demo.real_size import build_denoiser, denoiser_config, denoiser_inputs  # noqa: E402
from trainer.engine.optim import optimizer_class  # noqa: E402

GIB = 2**30
RANK = 4
LR = 1e-4


def peak_rss_gib() -> float:
    """This process's peak resident memory so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB


def measure(resolution: int, steps: int) -> dict[str, float]:
    imported_rss = peak_rss_gib()  # Python, torch, diffusers, peft, the advisor: before any weight
    started = time.perf_counter()
    unet = build_denoiser("sd15", device="cpu", dtype=torch.float32)
    built = time.perf_counter() - started
    network = NetworkConfig.model_validate({"linear": RANK, "linear_alpha": RANK})
    trainable = add_adapter(unet, adapter_config(network, list(SD_TARGETS)))
    optimizer = optimizer_class("adamw")(trainable, lr=LR)
    kwargs, target = denoiser_inputs(
        "sd15", denoiser_config("sd15"), batch=1, latent_side=resolution // 8
    )
    unet.train()
    times, losses = [], []
    for _ in range(steps + 1):  # the first step (allocator warm-up) is not timed
        step_started = time.perf_counter()
        loss = F.mse_loss(unet(**kwargs)[0].float(), target)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - step_started)
        losses.append(loss.item())
        print(f"  step {len(times)}: {times[-1]:.2f} s, loss {losses[-1]:.4f}", flush=True)
    return {
        "build_s": built,
        "s_per_step": sum(times[1:]) / steps,
        "fastest_step_s": min(times[1:]),
        "first_step_s": times[0],
        "peak_rss_gib": peak_rss_gib(),
        "imported_rss_gib": imported_rss,
        "lora_params": sum(p.numel() for p in trainable),
        "params": sum(p.numel() for p in unet.parameters()) - sum(p.numel() for p in trainable),
        "last_loss": losses[-1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=256, help="pixels (latents: / 8)")
    parser.add_argument("--steps", type=int, default=4, help="timed steps after the first")
    args = parser.parse_args()
    load_before = os.getloadavg()
    print(
        f"real-size SD1.5 U-Net + LoRA rank {RANK}, {args.resolution} px "
        f"({args.resolution // 8}x{args.resolution // 8} latents), batch 1, fp32, CPU: "
        f"{os.cpu_count()} cores, {torch.get_num_threads()} torch threads, "
        f"load average {load_before[0]:.2f} before",
        flush=True,
    )
    found = measure(args.resolution, args.steps)
    load_after = os.getloadavg()
    profile = detect_profile(home=tempfile.gettempdir())
    # The same run as the studio would describe it: real SD1.5, LoRA rank 4 on the attention
    # projections, batch 1, fp32 on the CPU, latents and text embeddings cached (the text
    # encoder unloaded, the VAE on the CPU), no gradient checkpointing, no previews.
    cfg = real_sd15_config(
        resolution=args.resolution,
        batch=1,
        steps=args.steps,
        device="cpu",
        dtype="fp32",
        rank=RANK,
        lr=LR,
    )
    prediction = predict(cfg, profile)
    ram, step = prediction.ram, prediction.step_time
    print(
        f"U-Net {found['params']:,} parameters without the LoRA (built in {found['build_s']:.1f} s), "
        f"LoRA {found['lora_params']:,}; last loss {found['last_loss']:.4f}"
    )
    print(f"{'':<22}{'measured':>12}{'predicted':>12}{'range':>18}{'ratio':>8}")
    print(
        f"{'peak RAM (GiB)':<22}{found['peak_rss_gib']:>12.2f}{ram.value:>12.2f}"
        f"{f'{ram.low:.2f}-{ram.high:.2f}':>18}{found['peak_rss_gib'] / ram.value:>8.2f}"
    )
    print(
        f"{'s/step':<22}{found['s_per_step']:>12.2f}{step.value:>12.2f}"
        f"{f'{step.low:.2f}-{step.high:.2f}':>18}{found['s_per_step'] / step.value:>8.2f}"
    )
    print(
        f"{'fastest step (s)':<22}{found['fastest_step_s']:>12.2f}{step.value:>12.2f}"
        f"{f'{step.low:.2f}-{step.high:.2f}':>18}{found['fastest_step_s'] / step.value:>8.2f}"
        "   (the advisor assumes a quiet machine: on shared cores the least disturbed step)"
    )
    print(
        f"first step {found['first_step_s']:.2f} s (not in s/step); RSS after the imports "
        f"{found['imported_rss_gib']:.2f} GiB (the advisor counts 'Python + libraries')"
    )
    print("advisor RAM parts (GiB): " + ", ".join(f"{k} {v:.2f}" for k, v in ram.parts.items()))
    print("advisor step parts (s): " + ", ".join(f"{k} {v:.2f}" for k, v in step.parts.items()))
    print(
        f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after "
        f"({os.cpu_count()} cores; above the core count the steps share them)"
    )


if __name__ == "__main__":
    main()
