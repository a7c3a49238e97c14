"""Data-parallel throughput: the tiny SD1.5 demo on 1 process vs 2 processes (gloo, CPU).

    .venv/bin/python benchmarks/distributed.py [--steps 60] [--repeat 1]

Each case is a real ``python -m trainer run`` launched the way the studio launches it
(``trainer.jobs.launch.train_command``: through ``accelerate launch`` for 2 processes), with MLflow,
previews and checkpoints off so only training is timed. Throughput is the trainer's own
``images_per_s`` (all processes' images over the timed steps; the first step, one-time set-up, is
left out) and the wall-clock time of the whole command (start-up included).

Cases (1 thread per process unless said): 1 process at batch 2 (the same per-process batch);
1 process at batch 4 (the same effective batch as 2 x 2), also with torch's default threads (all
cores: on a loaded 2-core machine this oversubscribes and collapses); 2 processes at batch 2 each
(1 thread each is what torchrun sets when OMP_NUM_THREADS is unset). On a small shared machine the ratio is noisy
and well under 2: both processes share the same cores and pay a gloo all-reduce every step.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trainer.jobs.launch import train_command

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "presets" / "demo_sd15.yaml"
CASES = (  # (label, processes, per-process batch, threads per process; None: torch's default)
    ("1 process, batch 2", 1, 2, 1),
    ("1 process, batch 4", 1, 4, 1),
    ("1 process, batch 4, all threads", 1, 4, None),
    ("2 processes, batch 2", 2, 2, 1),
)


def run_case(
    home: Path, work: Path, processes: int, batch: int, threads: int | None, steps: int
) -> dict:
    job = work / f"job_p{processes}_b{batch}_{time.monotonic_ns()}"
    settings = [
        "--set", f"runtime.num_processes={processes}",
        "--set", "runtime.device=cpu",
        "--set", f"train.batch_size={batch}",
        "--set", f"train.steps={steps}",
        "--set", "sample.sample_every=0",
        "--set", f"save.save_every={steps + 1}",
        "--set", "save.save_format=webui",
        "--set", "logging.use_mlflow=false",
        "--set", "logging.log_system_metrics=false",
    ]  # fmt: skip
    cmd = [*train_command(DEMO, job, processes=processes), *settings]
    env = {**os.environ, "STUDIO_HOME": str(home), "PYTHONPATH": str(ROOT)}
    env.pop("MLFLOW_RUN_ID", None)
    env.pop("OMP_NUM_THREADS", None)
    if threads is not None:  # torchrun sets 1 per process itself when it is unset
        env["OMP_NUM_THREADS"] = str(threads)
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{cmd} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    progress = json.loads((job / "progress.json").read_text())
    return {
        "images_per_s": float(progress["images_per_s"]),
        "s_per_step": float(progress["s_per_step"]),
        "effective_batch": int(progress["effective_batch_size"]),
        "wall_s": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    from trainer.demo.tiny import build_all

    with tempfile.TemporaryDirectory(prefix="bench_distributed_") as tmp:
        home = Path(tmp) / "home"
        build_all(home)
        results: dict[str, list[dict]] = {label: [] for label, *_ in CASES}
        for _ in range(args.repeat):  # interleaved, so drift on a shared machine hits all cases
            for label, processes, batch, threads in CASES:
                run = run_case(home, Path(tmp), processes, batch, threads, args.steps)
                results[label].append(run)
                shown = " ".join(f"{k}={v:.3g}" for k, v in run.items())
                print(f"  {label}: {shown}", flush=True)
    print(f"tiny SD1.5 demo, 64 px, {args.steps} steps, CPU ({os.cpu_count()} cores), "
          f"median of {args.repeat}")  # fmt: skip
    print(f"{'case':<34}{'eff. batch':>11}{'images/s':>10}{'s/step':>9}{'wall s':>9}")
    medians = {}
    for label, runs in results.items():
        m = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        medians[label] = m
        print(
            f"{label:<34}{m['effective_batch']:>11.0f}{m['images_per_s']:>10.1f}"
            f"{m['s_per_step']:>9.3f}{m['wall_s']:>9.1f}"
        )
    two = medians[CASES[-1][0]]["images_per_s"]
    for label in [label for label, processes, *_ in CASES if processes == 1]:
        print(f"2 processes / {label}: {two / medians[label]['images_per_s']:.2f}x images/s")


if __name__ == "__main__":
    main()
