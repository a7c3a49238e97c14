"""Per-step cost of MLflow tracking in the training loop, next to the do-nothing NullTracker.

Simulates STEPS training steps that each log 5 metrics (``log_batch`` every 10 steps) and update
the progress file, against a fresh SQLite store in a temp folder. The "work" of a step is a 5 ms
sleep (the GIL is released, as in torch kernels), so the wall-clock difference shows what the loop
waits for, including the GIL held by the background metrics writer; the writer's own CPU time
(taken from another core, or from torch's threads on a busy CPU) is reported separately.
Rounds alternate between the trackers; medians are reported. Figures are relative to a 0.1 s
step (docs/sources.md#tiny-cpu-step); real GPU steps on full-size models are longer.

Run: ``.venv/bin/python benchmarks/tracking_overhead.py [STEPS]``
"""

from __future__ import annotations

import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from trainer.config.schema import TrainingConfig  # noqa: E402
from trainer.tracking.mlflow_tracker import MlflowTracker  # noqa: E402
from trainer.tracking.new_run import ensure_experiment  # noqa: E402
from trainer.tracking.progress import ProgressWriter  # noqa: E402
from trainer.tracking.tracker import NullTracker, Tracker  # noqa: E402

STEP_S = 0.1
FLUSH_EVERY = 10
ROUNDS = 3
WORK_S = 0.005


def simulated_step() -> None:
    time.sleep(WORK_S)


def one_round(tracker: Tracker, steps: int, job_dir: Path) -> dict[str, float]:
    """Seconds per step: in tracking calls (loop thread), and wall clock including the work."""
    progress = ProgressWriter(job_dir)
    in_calls = 0.0
    smoothed = 1.0
    wall = time.perf_counter()
    for step in range(1, steps + 1):
        simulated_step()
        loss = 1.0 / step
        begin = time.perf_counter()
        smoothed = 0.9 * smoothed + 0.1 * loss
        tracker.log_metrics(
            {"loss": loss, "loss_smoothed": smoothed, "lr": 1e-4, "s_per_step": 0.1, "eta_s": 9.0},
            step,
        )
        progress.update(phase="training", step=step, total_steps=steps, loss=loss)
        in_calls += time.perf_counter() - begin
    begin = time.perf_counter()
    tracker.flush(wait=True)  # the end of training waits for the last batch
    in_calls += time.perf_counter() - begin
    wall = time.perf_counter() - wall
    return {"calls": in_calls / steps, "wall": wall / steps}


def main(steps: int = 500) -> None:
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        uri = f"sqlite:///{home / 'mlflow.db'}"
        cfg = TrainingConfig()
        cfg.logging.log_system_metrics = False  # a background sample every 10 s, not per step
        cfg.logging.log_every = FLUSH_EVERY

        t0 = time.perf_counter()
        ensure_experiment(uri, cfg.logging.project_name)
        setup_s = time.perf_counter() - t0

        names = ("NullTracker", "MlflowTracker", "MlflowTracker(background=False)")
        calls: dict[str, list[float]] = {n: [] for n in names}
        wall: dict[str, list[float]] = {n: [] for n in names}
        writer_cpu: list[float] = []
        start_s: list[float] = []
        for _ in range(ROUNDS):
            for name in names:
                tracker: Tracker
                if name == "NullTracker":
                    tracker = NullTracker()
                else:
                    tracker = MlflowTracker(
                        uri, flush_every_steps=FLUSH_EVERY, background="False" not in name
                    )
                t0 = time.perf_counter()
                tracker.start(cfg)
                if name == "MlflowTracker":
                    start_s.append(time.perf_counter() - t0)
                result = one_round(tracker, steps, home / "jobs" / str(len(start_s)))
                tracker.end("FINISHED")
                calls[name].append(result["calls"])
                wall[name].append(result["wall"])
                if name == "MlflowTracker":
                    writer_cpu.append(tracker.stats["writer_cpu_s"] / steps)

        def ms(values: list[float]) -> float:
            return statistics.median(values) * 1000

        def share(milliseconds: float) -> str:
            return f"{milliseconds:7.3f} ms = {milliseconds / (STEP_S * 1000) * 100:5.2f}%"

        null = ms(calls["NullTracker"])
        print(
            f"Tracking overhead: {steps} steps x {ROUNDS} rounds, 5 metrics/step, log_batch every "
            f"{FLUSH_EVERY} steps, progress file (ProgressWriter, <= 1/s); % of a {STEP_S} s step"
        )
        print(f"  store setup (import mlflow + create tables, once per store): {setup_s:.1f} s")
        print(f"  MlflowTracker.start (params, YAML, hparams; once per run): {ms(start_s):.0f} ms")
        print(f"  simulated work per step: {ms(wall['NullTracker']) - null:.1f} ms")
        print("  time in tracking calls on the training thread, per step:")
        for name in names:
            print(f"    {name:32s} {share(ms(calls[name]))}")
        print(
            f"  overhead vs NullTracker (training thread): {share(ms(calls['MlflowTracker']) - null)}"
        )
        print(
            f"  background writer CPU per step (another core): {share(statistics.median(writer_cpu) * 1000)}"
        )
        print("  wall clock per step incl. simulated work, minus NullTracker's:")
        for name in names[1:]:
            print(f"    {name:32s} {share(ms(wall[name]) - ms(wall['NullTracker']))}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 500)
