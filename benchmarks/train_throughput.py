"""Training throughput on the tiny SD1.5 model, variants interleaved in one run.

Measures seconds per step (first step excluded) for uncached vs cached latents/embeddings and
with the MLflow tracker vs the null tracker, then the time from `python -m trainer run` to its
first finished step (cold process: imports, model load, data scan). Machines here are shared and
noisy: compare the ratios printed side by side, not absolute numbers across runs.

    .venv/bin/python benchmarks/train_throughput.py [--rounds 3] [--steps 40]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from trainer.config.schema import TrainingConfig  # noqa: E402
from trainer.demo.tiny import build_all  # noqa: E402
from trainer.engine.context import RunContext  # noqa: E402
from trainer.engine.loop import train  # noqa: E402
from trainer.tracking.mlflow_tracker import MlflowTracker  # noqa: E402
from trainer.tracking.progress import read_progress  # noqa: E402
from trainer.tracking.tracker import NullTracker  # noqa: E402


def config(steps: int, cached: bool, mlflow: bool) -> TrainingConfig:
    return TrainingConfig.model_validate(
        {
            "name": "bench",
            "model": {"name_or_path": "demo:sd15"},
            "network": {"linear": 4, "linear_alpha": 4},
            "datasets": [
                {"folder_path": "demo:dataset", "resolution": [64], "cache_latents": cached}
            ],
            "train": {
                "steps": steps,
                "batch_size": 2,
                "optimizer": "adamw",
                "lr": 1e-3,
                "gradient_checkpointing": False,
                "cache_text_embeddings": cached,
            },
            "sample": {"sample_every": 0},
            "save": {"save_every": 10_000},
            "logging": {"use_mlflow": mlflow, "log_every": 1, "log_system_metrics": False},
        }
    )


def seconds_per_step(home: Path, uri: str, steps: int, cached: bool, mlflow: bool) -> float:
    cfg = config(steps, cached, mlflow)
    tracker = MlflowTracker(uri) if mlflow else NullTracker()
    tracker.start(cfg)
    with tempfile.TemporaryDirectory() as job:
        ctx = RunContext(home=home, job_dir=Path(job), tracker=tracker)
        state_holder: dict[str, float] = {}
        started = time.perf_counter()
        outcome = train(cfg, ctx)
        state_holder["wall"] = time.perf_counter() - started
        tracker.end("FINISHED")
        progress = read_progress(Path(job)) or {}
    assert outcome.step == steps
    return float(progress["s_per_step"])


def time_to_first_step(home: Path, uri: str) -> float:
    with tempfile.TemporaryDirectory() as job:
        env = {**os.environ, "STUDIO_HOME": str(home), "MLFLOW_TRACKING_URI": uri}
        started = time.perf_counter()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "trainer",
                "run",
                str(ROOT / "presets" / "demo_sd15.yaml"),
                "--job-dir",
                job,
                "--set",
                "train.steps=200",
                "--set",
                "sample.sample_every=0",
                "--set",
                "logging.log_every=1",
                "--set",
                "save.save_every=10000",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            while True:
                progress = read_progress(Path(job)) or {}
                if (progress.get("step") or 0) >= 1:
                    return time.perf_counter() - started
                if proc.poll() is not None:
                    raise RuntimeError("trainer exited before its first step")
                time.sleep(0.02)
        finally:
            proc.terminate()
            proc.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="bench_home_"))
    build_all(home)
    uri = f"sqlite:///{home / 'mlflow.db'}"
    MlflowTracker(uri).start(config(1, False, True))  # create the store's tables up front
    variants = {
        "uncached, null tracker": (False, False),
        "cached,   null tracker": (True, False),
        "uncached, MLflow": (False, True),
        "cached,   MLflow": (True, True),
    }
    results: dict[str, list[float]] = {name: [] for name in variants}
    first_step: list[float] = []
    for round_ in range(args.rounds):
        for name, (cached, mlflow) in variants.items():
            results[name].append(seconds_per_step(home, uri, args.steps, cached, mlflow))
        first_step.append(time_to_first_step(home, uri))
        print(f"round {round_ + 1}/{args.rounds} done", flush=True)

    median = {name: statistics.median(values) for name, values in results.items()}
    print(f"\ns/step (median of {args.rounds}, {args.steps} steps, batch 2, 64 px, first excluded)")
    for name, value in median.items():
        print(
            f"  {name}: {value * 1000:7.1f} ms/step  ({', '.join(f'{v * 1000:.1f}' for v in results[name])})"
        )
    speedup = median["uncached, null tracker"] / median["cached,   null tracker"]
    overhead_u = median["uncached, MLflow"] / median["uncached, null tracker"] - 1
    overhead_c = median["cached,   MLflow"] / median["cached,   null tracker"] - 1
    print(f"caching speed-up: {speedup:.2f}x")
    print(
        f"MLflow overhead: {overhead_u * 100:+.1f}% uncached, {overhead_c * 100:+.1f}% cached "
        "(target < 3%)"
    )
    print(
        f"time to first step, cold `python -m trainer run`: median "
        f"{statistics.median(first_step):.1f} s ({', '.join(f'{v:.1f}' for v in first_step)}) "
        "(diffusers' example script: ~5-7 s here)"
    )


if __name__ == "__main__":
    main()
