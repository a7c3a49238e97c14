"""The tiny demo models trained by the real trainer, and whether the LoRA it saved changes the output.

One process: ``trainer.engine.run.run_job`` in this process, with the demo preset and ``--set``
overrides (the same code path as ``python -m trainer run``); two processes: the exact command the
studio launches (``trainer.jobs.launch.train_command``: ``accelerate launch``, nccl on CUDA). The
trainer stops a run on a non-finite loss, so a FINISHED run had finite losses; the last one is
read back from its progress file with its s/step. Then a fresh fp32 copy of the model loads the
saved LoRA and predicts the same noisy latents at LoRA scale 1 and 0: a LoRA that trained moves
the prediction (peft starts LoRA B at zero, so an untrained one gives exactly the base output).
"""

from __future__ import annotations

import math
import os
import subprocess
from pathlib import Path
from typing import Any

import torch

from gpu_cases.cases import Case
from trainer.arch.registry import load_arch
from trainer.config.io import load_config
from trainer.engine.run import EXIT_OK, run_job
from trainer.jobs.launch import train_command
from trainer.lora.io import load_lora_file
from trainer.lora.outputs import FINAL_DIR
from trainer.tracking.progress import read_progress

ROOT = Path(__file__).resolve().parents[2]
GIB = 2**30
PROMPT = "a photo of sks red circle"


class CaseFailed(RuntimeError):
    """A check of a case did not hold; the message says which and what was found."""


def preset(case: Case) -> Path:
    return ROOT / "presets" / f"demo_{case.arch}.yaml"


def overrides(case: Case, steps: int, device: str) -> list[str]:
    """The case as ``--set`` overrides of the demo preset: no previews, MLflow or checkpoints."""
    sets = [
        f"train.steps={steps}",
        f"train.dtype={case.dtype}",
        f"train.optimizer={case.optimizer}",
        f"model.attention_backend={case.attention}",
        f"model.compile={str(case.compile).lower()}",
        f"runtime.device={device}",
        f"runtime.num_processes={case.processes}",
        "sample.sample_every=0",
        f"save.save_every={steps + 1}",
        "logging.use_mlflow=false",
        "logging.log_system_metrics=false",
    ]
    if case.qtype:
        sets += ["model.quantize=true", f"model.qtype={case.qtype}"]
    return sets


def run_tiny(case: Case, home: Path, job: Path, steps: int, device: str, timeout_s: float) -> dict:
    """Train ``case`` through the trainer; its s/step, peak VRAM, last loss and LoRA change."""
    sets = overrides(case, steps, device)
    cuda = device == "cuda"
    peak = None
    if case.processes == 1:
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        outcome = run_job(preset(case), sets, job_dir=job)
        if outcome.exit_code != EXIT_OK:
            raise CaseFailed(f"the trainer ended {outcome.status}: {outcome.message}")
        peak = torch.cuda.max_memory_allocated() / GIB if cuda else None
    else:
        launch(case, home, job, sets, timeout_s)
    progress = read_progress(job) or {}
    loss, per_step = progress.get("loss"), progress.get("s_per_step")
    if progress.get("phase") != "finished" or loss is None or not math.isfinite(loss):
        raise CaseFailed(f"progress after the run: phase {progress.get('phase')}, loss {loss}")
    delta = lora_delta(case, sets, home, job, device)
    return {"s_per_step": per_step, "peak_vram_gib": peak, "loss": loss, "lora_delta": delta}


def launch(case: Case, home: Path, job: Path, sets: list[str], timeout_s: float) -> None:
    """The studio's multi-process launch of the trainer (accelerate launch), waited for."""
    cmd = [*train_command(preset(case), job, processes=case.processes)]
    cmd += [arg for value in sets for arg in ("--set", value)]
    env = {**os.environ, "STUDIO_HOME": str(home), "PYTHONPATH": str(ROOT)}
    env.pop("MLFLOW_RUN_ID", None)
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout_s)
    print(done.stdout[-4000:], done.stderr[-4000:], sep="\n", flush=True)  # the worker's log
    if done.returncode != 0:
        raise CaseFailed(f"{case.processes} processes exited {done.returncode}")


def lora_delta(case: Case, sets: list[str], home: Path, job: Path, device: str) -> float:
    """Largest change the saved LoRA makes to one prediction, relative to the mean |output|."""
    plain = [
        "model.quantize=false",
        "model.compile=false",
        "model.attention_backend=auto",
        "train.dtype=fp32",
        "runtime.num_processes=1",
    ]
    cfg = load_config(preset(case), [*sets, *plain])
    arch = load_arch(cfg, home, torch.device(device), torch.float32)
    arch.add_lora(cfg.network, train_text_encoder=cfg.train.train_text_encoder)
    files = sorted((job / FINAL_DIR).glob("*.safetensors"))
    if not files:
        raise CaseFailed(f"no LoRA file in {job / FINAL_DIR}")
    load_lora_file(arch, files[0])
    size = cfg.datasets[0].resolution[0]
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        latents = arch.encode_images(torch.rand(1, 3, size, size, generator=gen) * 2 - 1)
        noise = torch.randn(latents.shape, generator=gen).to(latents)
        t = arch.sample_timesteps(1, generator=gen)
        noisy = arch.add_noise(latents, noise, t)
        cond = arch.encode_prompts([PROMPT])
        tuned = arch.predict(noisy, t, cond).float()
        with arch.lora_scale(0.0):
            base = arch.predict(noisy, t, cond).float()
    return relative_change(tuned, base)


def relative_change(tuned: Any, base: Any) -> float:
    return float((tuned - base).abs().max() / base.abs().mean().clamp_min(1e-12))
