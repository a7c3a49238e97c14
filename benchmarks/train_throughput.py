"""Every step at the limit: the trainer's s/step against the bare denoiser step, interleaved.

For each size (64, 128 and 256 px by default), round after round, on the tiny SD1.5 model, batch
2, rank 4, fp32, with 12 square JPEG images (512 px, so decoding costs what it does for real
photos):

- **limit**: the LoRA-wrapped U-Net's forward + backward + AdamW step on tensors encoded once
  (nothing but the step itself);
- **cached**: ``train()`` with latents and text embeddings cached, the MLflow tracker logging every
  step;
- **uncached**: the same with caching off (images decoded, VAE and text encoder run every step);
- **diffusers**: diffusers' ``examples/text_to_image/train_text_to_image_lora.py`` on the same
  model and images, when ``--diffusers-example PATH`` points at a copy of it (it needs
  ``datasets``, ``torchvision`` and ``tensorboard`` importable: ``--example-pythonpath``).

Step times are medians of the intervals between consecutive steps from step ``--skip`` on (the
first steps pay one-time set-up). Machines here are shared and noisy: read the ratios printed side
by side, not absolute numbers across runs. Then the time to the first step of a cold
``python -m trainer run``, phase by phase, against the bare import floor (``first_step.py``).

    .venv/bin/python benchmarks/train_throughput.py [--sizes 64 128 256] [--rounds 3] [--steps 30]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# One thread for every variant (the example's subprocess too): on shared cores, threads that
# wait on each other would measure the neighbours' load, not the step. Set it to compare others.
os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from trainer.arch.registry import load_arch  # noqa: E402
from trainer.config.schema import TrainingConfig  # noqa: E402
from trainer.demo.tiny import build_all, resolve_demo_ref  # noqa: E402
from trainer.engine.context import RunContext  # noqa: E402
from trainer.engine.loop import train  # noqa: E402
from trainer.tracking.mlflow_tracker import MlflowTracker  # noqa: E402

BATCH, RANK, LR, IMAGES = 2, 4, 1e-3, 12


def config(folder: Path, size: int, steps: int, cached: bool) -> TrainingConfig:
    return TrainingConfig.model_validate(
        {
            "name": "bench",
            "model": {"name_or_path": "demo:sd15"},
            "network": {"linear": RANK, "linear_alpha": RANK},
            "datasets": [
                {"folder_path": str(folder), "resolution": [size], "cache_latents": cached}
            ],
            "train": {
                "steps": steps,
                "batch_size": BATCH,
                "optimizer": "adamw",
                "lr": LR,
                "lr_scheduler": "constant",
                "gradient_checkpointing": False,
                "cache_text_embeddings": cached,
            },
            "sample": {"sample_every": 0},
            "save": {"save_every": 10_000},
            "logging": {"log_every": 1, "log_system_metrics": False},
        }
    )


def make_images(folder: Path) -> Path:
    """12 square 512 px JPEGs with captions: decoding them costs what real photos cost."""
    folder.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(0)
    for i in range(IMAGES):
        noise = (torch.rand(64, 64, 3, generator=gen) * 255).to(torch.uint8).numpy()
        image = Image.fromarray(noise).resize((512, 512), Image.Resampling.BICUBIC)
        image.save(folder / f"img_{i:02d}.jpg", quality=90)
        (folder / f"img_{i:02d}.txt").write_text(f"a photo of sks pattern number {i}")
    return folder


def median_interval(stamps: list[list[float]], skip: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the whole process) per step: medians over the steps."""
    pairs = list(itertools.pairwise(stamps[skip:]))
    return (
        statistics.median(b[0] - a[0] for a, b in pairs),
        statistics.median(b[1] - a[1] for a, b in pairs),
    )


def stamp() -> list[float]:
    return [time.perf_counter(), time.process_time()]


class StepClock(MlflowTracker):
    """The MLflow tracker, also noting when each step's metrics arrive (log_every=1)."""

    stamps: list[list[float]]

    def log_metrics(self, metrics, step: int) -> None:
        self.stamps.append(stamp())
        super().log_metrics(metrics, step)


def ours(home: Path, uri: str, folder: Path, size: int, steps: int, cached: bool, skip: int):
    cfg = config(folder, size, steps, cached)
    tracker = StepClock(uri)
    tracker.stamps = []
    tracker.start(cfg)
    with tempfile.TemporaryDirectory() as job:
        outcome = train(cfg, RunContext(home=home, job_dir=Path(job), tracker=tracker))
    tracker.end("FINISHED")
    assert outcome.step == steps
    return median_interval(tracker.stamps, skip)


def bare_limit(home: Path, folder: Path, size: int, steps: int, skip: int) -> tuple[float, float]:
    """The LoRA-wrapped U-Net's forward + backward + step on tensors encoded once."""
    cfg = config(folder, size, steps, cached=True)
    cpu = torch.device("cpu")
    arch = load_arch(cfg, home, cpu, torch.float32)
    groups = arch.add_lora(cfg.network)
    params = [p for group in groups.values() for p in group]
    optimizer = torch.optim.AdamW(params, lr=LR)
    gen = torch.Generator().manual_seed(0)
    pixels = torch.rand(BATCH, 3, size, size, generator=gen) * 2 - 1
    latents = arch.encode_images(pixels)
    text = arch.encode_prompts(["a photo of sks pattern"] * BATCH)
    arch.train()
    stamps = []
    for _ in range(steps):
        noise = torch.randn(latents.shape, generator=gen)
        t = arch.sample_timesteps(BATCH, gen)
        pred = arch.predict(arch.add_noise(latents, noise, t), t, text, {})
        loss = torch.nn.functional.mse_loss(pred.float(), arch.target(latents, noise, t).float())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        stamps.append(stamp())
    return median_interval(stamps, skip)


STEP_CLOCK_SHIM = """
import atexit, json, os, time, torch
_stamps, _step = [], torch.optim.AdamW.step
def _timed(self, *a, **k):
    out = _step(self, *a, **k)
    _stamps.append([time.perf_counter(), time.process_time()])
    return out
torch.optim.AdamW.step = _timed
atexit.register(lambda: open(os.environ["STEP_STAMPS"], "w").write(json.dumps(_stamps)))
"""


def diffusers_example(
    args, home: Path, folder: Path, size: int, steps: int, skip: int
) -> tuple[float, float]:
    """diffusers' example on the same model and images; step times from AdamW.step calls."""
    with tempfile.TemporaryDirectory() as work:
        work_dir = Path(work)
        data = work_dir / "data"
        data.mkdir()
        rows = []
        for image in sorted(folder.glob("*.jpg")):
            (data / image.name).symlink_to(image)
            caption = image.with_suffix(".txt").read_text()
            rows.append(json.dumps({"file_name": image.name, "text": caption}))
        (data / "metadata.jsonl").write_text("\n".join(rows) + "\n")
        shim = work_dir / "shim"
        shim.mkdir()
        (shim / "step_clock.py").write_text(STEP_CLOCK_SHIM)
        stamps_file = work_dir / "stamps.json"
        runner = (
            "import runpy, sys, step_clock; sys.argv = sys.argv[1:]; "
            "runpy.run_path(sys.argv[0], run_name='__main__')"
        )
        model = resolve_demo_ref("demo:sd15", home)
        command = [
            *(sys.executable, "-c", runner, args.diffusers_example),
            *("--pretrained_model_name_or_path", str(model), "--train_data_dir", str(data)),
            *("--resolution", str(size), "--center_crop", "--train_batch_size", str(BATCH)),
            *("--max_train_steps", str(steps), "--learning_rate", str(LR), "--rank", str(RANK)),
            *("--lr_scheduler", "constant", "--seed", "0", "--output_dir", str(work_dir / "out")),
            *("--checkpointing_steps", "100000", "--mixed_precision", "no"),
        ]
        paths = [str(shim), *filter(None, args.example_pythonpath.split(":"))]
        env = {**os.environ, "STEP_STAMPS": str(stamps_file), "PYTHONPATH": ":".join(paths)}
        done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=work_dir)
        if done.returncode != 0:
            raise RuntimeError(f"the diffusers example failed:\n{done.stderr[-3000:]}")
        return median_interval(json.loads(stamps_file.read_text()), skip)


def measure(kind: str, args, home: Path, uri: str, folder: Path, size: int) -> tuple[float, float]:
    if kind == "limit":
        return bare_limit(home, folder, size, args.steps, args.skip)
    if kind == "diffusers":
        return diffusers_example(args, home, folder, size, args.steps, args.skip)
    return ours(home, uri, folder, size, args.steps, kind == "cached", args.skip)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--skip", type=int, default=8, help="steps left out of the median")
    parser.add_argument("--diffusers-example", help="path to train_text_to_image_lora.py")
    parser.add_argument("--example-pythonpath", default="", help="where datasets etc. live")
    parser.add_argument(
        "--first-step-rounds", type=int, default=3, help="cold starts timed by phase (0: none)"
    )
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="bench_home_"))
    build_all(home)
    folder = make_images(home / "bench_images")
    uri = f"sqlite:///{home / 'mlflow.db'}"
    MlflowTracker(uri).start(config(folder, 64, 1, False))  # the store's tables, up front
    kinds = ["limit", "cached", "uncached"] + (["diffusers"] if args.diffusers_example else [])
    results = {(size, kind): [] for size in args.sizes for kind in kinds}
    for round_ in range(args.rounds):
        for size in args.sizes:
            for kind in kinds:
                results[(size, kind)].append(measure(kind, args, home, uri, folder, size))
        print(f"round {round_ + 1}/{args.rounds} done", flush=True)
    print_table(args, kinds, results)
    if args.first_step_rounds:  # the time to the first step, phase by phase (first_step.py)
        # From a small parent of its own: a child forked from this process (models loaded, ~0.8
        # GB) would report this process's memory as its own peak.
        command = [sys.executable, str(Path(__file__).with_name("first_step.py")), "--home"]
        command += [str(home), "--rounds", str(args.first_step_rounds)]
        print("\n" + subprocess.run(command, check=True, capture_output=True, text=True).stdout)


def print_table(args, kinds: list[str], results: dict) -> None:
    print(
        f"\nmedian of {args.rounds} rounds (each the median step of {args.steps} from step "
        f"{args.skip}); batch {BATCH}, rank {RANK}, fp32, tiny SD1.5, MLflow on, "
        f"{os.environ['OMP_NUM_THREADS']} torch thread(s), load {os.getloadavg()[0]:.1f}"
    )
    for index, what in ((0, "wall s/step"), (1, "CPU s/step (all threads; steadier under load)")):
        med = {key: statistics.median(v[index] for v in values) for key, values in results.items()}
        print(f"\n{what}\n  px | limit    | cached (x limit)  | uncached (x limit)", end="")
        print(" | diffusers example (uncached / example)" if "diffusers" in kinds else "")
        for size in args.sizes:
            limit, cached, live = (med[(size, k)] for k in ("limit", "cached", "uncached"))
            line = f"{size:4d} | {limit:.4f} s | {cached:.4f} s ({cached / limit:.2f}x)"
            line += f" | {live:.4f} s ({live / limit:.2f}x)"
            if "diffusers" in kinds:
                example = med[(size, "diffusers")]
                line += f" | {example:.4f} s ({live / example:.2f}x)"
            print(line)
    rounds = {
        f"{size}/{kind}": [[round(x, 4) for x in pair] for pair in values]
        for (size, kind), values in results.items()
    }
    print("rounds (wall, CPU):", json.dumps(rounds))


if __name__ == "__main__":
    main()
