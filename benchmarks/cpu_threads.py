"""CPU threads for a run: one per core (torch's default) against the free cores only
(``trainer.engine.cpu_threads``), on the demo SD1.5 U-Net's forward + backward at 64 px, batch 2.

Rounds alternate between the two settings in one process; medians are printed with the load
average, since the point is what other programs on the machine do to torch's threads. Both
settings are equal on an idle machine (free cores = all cores); the figure that matters is the
ratio on a busy one.

Run: ``.venv/bin/python benchmarks/cpu_threads.py [ROUNDS]``
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from diffusers import UNet2DConditionModel  # noqa: E402

from trainer.demo.tiny import build_tiny_pipeline  # noqa: E402
from trainer.engine.cpu_threads import free_cores  # noqa: E402

STEPS = 10


def step_seconds(unet: UNet2DConditionModel, threads: int) -> float:
    torch.set_num_threads(threads)
    latents = torch.randn(2, unet.config.in_channels, 8, 8)
    text = torch.randn(2, 8, unet.config.cross_attention_dim)
    started = time.perf_counter()
    for _ in range(STEPS):
        out = unet(latents, torch.tensor([10, 500]), encoder_hidden_states=text).sample
        out.float().pow(2).mean().backward()
    return (time.perf_counter() - started) / STEPS


def main(rounds: int = 5) -> None:
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        folder = build_tiny_pipeline("sd15", Path(tmp) / "sd15")
        unet = UNet2DConditionModel.from_pretrained(Path(folder) / "unet")
    step_seconds(unet, cores)  # warm-up
    every, free, loads = [], [], []
    for _ in range(rounds):
        loads.append(os.getloadavg()[0])
        chosen = free_cores(cores)
        every.append(step_seconds(unet, cores))
        free.append(step_seconds(unet, chosen))
    a, b = statistics.median(every), statistics.median(free)
    print(f"cores {cores}, load average {statistics.median(loads):.2f} (median of rounds)")
    print(f"one thread per core ({cores}): {a:.4f} s/step")
    print(f"free cores only ({free_cores(cores)} now): {b:.4f} s/step")
    print(f"ratio all-cores / free-cores: {a / b:.2f}x")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
