"""Time to the first finished step of `python -m trainer run`, phase by phase, with and without
MLflow, against the bare import floor (`import torch, diffusers, peft` in a fresh interpreter).

Every figure is seconds since the child process started, from the child's own clock: the floor
child prints it after its imports, a training child writes it per phase into its job folder's
``startup.json`` (trainer.tracking.startup). Peak RSS is the child's own maximum (``wait4``).
Variants run interleaved round by round, after one untimed warm-up of each (file cache, store
tables): on a shared machine compare the figures of one run side by side, not across runs.

    .venv/bin/python benchmarks/first_step.py [--rounds 3] [--steps 3] [--home H]

Importing this module has no side effects (``benchmarks/train_throughput.py`` calls
``first_step_phases``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRESET = ROOT / "presets" / "demo_sd15.yaml"
# The MLflow tracking process (trainer.tracking.sidecar_child) says its own peak RSS and CPU at exit
_TRACKING_USAGE = re.compile(r"MLflow tracking process done: peak RSS (\d+) MB, CPU ([\d.]+) s")
PHASES = ("imports", "tracking", "model_load", "dataset_scan", "setup", "cache", "first_step")

# The floor child: its imports, then seconds since the kernel started it (as the trainer counts)
# and its CPU seconds.
_FLOOR_CODE = """\
import torch, diffusers, peft
import os, time
with open("/proc/self/stat", encoding="ascii") as stat:
    ticks = int(stat.read().rsplit(")", 1)[1].split()[19])
since = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
print(since, time.process_time())
"""


@dataclass
class FirstStep:
    """One cold `python -m trainer run`: when each start-up phase ended (s since process start)."""

    mlflow: bool
    phases: dict[str, float]
    peak_rss_mb: float
    other: dict[str, float] = field(default_factory=dict)  # tracking_ready and other marks
    cpu_s: dict[str, float] = field(default_factory=dict)  # process CPU seconds at each mark
    # The MLflow tracking child, when the run had one: its peak RSS (MB) and CPU seconds (whole run)
    tracking_rss_mb: float | None = None
    tracking_cpu_s: float | None = None

    @property
    def first_step_s(self) -> float:
        return self.phases["first_step"]


def _run_child(args: list[str], env: dict[str, str], cwd: Path = ROOT) -> tuple[int, str, float]:
    """Run a child to its end: exit code, stdout, its peak RSS in MB (``wait4``'s ru_maxrss)."""
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(
            args, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, text=True
        )
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        return proc.returncode, out.read(), usage.ru_maxrss / 1024  # kB on Linux


@dataclass
class Floor:
    """``import torch, diffusers, peft`` in a fresh interpreter."""

    seconds: float  # from process start to the end of the imports
    cpu_s: float
    peak_rss_mb: float


def bare_import_floor() -> Floor:
    """The bare import floor, measured the way the trainer measures its phases."""
    code, text, rss = _run_child([sys.executable, "-c", _FLOOR_CODE], dict(os.environ))
    if code != 0:
        raise RuntimeError(f"the floor child failed:\n{text[-2000:]}")
    seconds, cpu = text.strip().splitlines()[-1].split()
    return Floor(float(seconds), float(cpu), rss)


def _trainer_env(home: Path, uri: str) -> dict[str, str]:
    env = {**os.environ, "STUDIO_HOME": str(home), "MLFLOW_TRACKING_URI": uri}
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.pop("MLFLOW_RUN_ID", None)  # each run creates its own MLflow run
    return env


def one_first_step(
    home: Path, uri: str, mlflow: bool, steps: int = 3, root: Path = ROOT
) -> FirstStep:
    """One cold `python -m trainer run` of the SD1.5 demo (``steps`` steps, run to its end), with
    the trainer of the source tree ``root`` (another checkout: compare two versions)."""
    with tempfile.TemporaryDirectory(prefix="first_step_") as job:
        args = [sys.executable, "-m", "trainer", "run", str(PRESET), "--job-dir", job]
        for setting in (
            f"train.steps={steps}",
            f"logging.use_mlflow={str(mlflow).lower()}",
            "save.save_every=10000",
        ):
            args += ["--set", setting]
        code, text, rss = _run_child(args, _trainer_env(home, uri), cwd=root)
        found = _read_json(Path(job) / "startup.json")
        if code != 0 or not found or "first_step" not in found.get("phases", {}):
            raise RuntimeError(f"trainer run failed (exit {code}), no first step:\n{text[-3000:]}")
        child = _TRACKING_USAGE.search(text)
        return FirstStep(
            mlflow,
            dict(found["phases"]),
            rss,
            dict(found.get("other") or {}),
            dict(found.get("cpu_s") or {}),
            float(child.group(1)) if child else None,
            float(child.group(2)) if child else None,
        )


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def first_step_phases(
    home: str | Path,
    uri: str,
    mlflow: bool,
    rounds: int = 1,
    steps: int = 3,
    root: str | Path = ROOT,
) -> list[FirstStep]:
    """``rounds`` cold runs of the demo (MLflow on or off) with their phase ends and peak RSS.

    ``home`` holds the demo (`python -m trainer demo --home H`); ``uri`` is the tracking URI."""
    return [one_first_step(Path(home), uri, mlflow, steps, Path(root)) for _ in range(rounds)]


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _listed(values: list[float], digits: int = 2) -> str:
    return ", ".join(f"{v:.{digits}f}" for v in values)


def phase_table(runs: list[FirstStep]) -> list[tuple[str, float, float, float]]:
    """(phase, median end, median duration, median CPU s by its end) for every phase recorded."""
    rows, previous = [], [0.0] * len(runs)
    for name in PHASES:
        if not all(name in run.phases for run in runs):
            continue
        ends = [run.phases[name] for run in runs]
        spans = [end - before for end, before in zip(ends, previous, strict=True)]
        cpu = [run.cpu_s.get(name, float("nan")) for run in runs]
        rows.append((name, _median(ends), _median(spans), _median(cpu)))
        previous = ends
    return rows


def report(floors: list[Floor], runs: dict[str, list[FirstStep]]) -> str:
    """The side-by-side table: phase ends and durations (medians), first step against the floor,
    peak RSS; wall seconds since process start, CPU seconds of the whole process."""
    floor, floor_cpu = _median([f.seconds for f in floors]), _median([f.cpu_s for f in floors])
    lines = [
        f"bare import floor (import torch, diffusers, peft): median {floor:.2f} s "
        f"({_listed([f.seconds for f in floors])}), CPU {floor_cpu:.2f} s, "
        f"peak RSS {_median([f.peak_rss_mb for f in floors]):.0f} MB",
        "",
        "phase: end / duration / CPU by then (s, medians)",
        f"{'':<14}" + "".join(f"{name:>26}" for name in runs),
    ]
    tables = {name: {row[0]: row[1:] for row in phase_table(rs)} for name, rs in runs.items()}
    for phase in PHASES:
        cells = [
            "{:>7.2f} / {:>6.2f} / {:>6.2f}".format(*tables[n][phase])
            if phase in tables[n]
            else "-"
            for n in runs
        ]
        lines.append(f"{phase:<14}" + "".join(f"{c:>26}" for c in cells))
    lines.append("")
    for name, rs in runs.items():
        firsts = [r.first_step_s for r in rs]
        cpu = [r.cpu_s.get("first_step", float("nan")) for r in rs]
        ready = [r.other["tracking_ready"] for r in rs if "tracking_ready" in r.other]
        lines.append(
            f"{name}: first step {_median(firsts):.2f} s ({_listed(firsts)}), "
            f"{_median(firsts) - floor:+.2f} s over the floor; CPU {_median(cpu):.2f} s "
            f"({_median(cpu) - floor_cpu:+.2f} over the floor's); peak RSS "
            f"{_median([r.peak_rss_mb for r in rs]):.0f} MB ({_listed([r.peak_rss_mb for r in rs], 0)})"
            + (f"; MLflow run ready at {_median(ready):.2f} s" if ready else "")
        )
        children = [r for r in rs if r.tracking_rss_mb is not None]
        if children:
            rss = [r.tracking_rss_mb for r in children]
            cpu = [r.tracking_cpu_s for r in children]
            lines.append(
                f"{name}: + MLflow tracking process: peak RSS {_median(rss):.0f} MB "
                f"({_listed(rss, 0)}), CPU {_median(cpu):.2f} s ({_listed(cpu)}) for the whole run"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3, help="steps per run (each runs to its end)")
    parser.add_argument("--home", help="a studio home with the demo built (default: a new one)")
    parser.add_argument(
        "--compare",
        metavar="ROOT",
        help="another source tree (e.g. the code before a change) to run interleaved with this one",
    )
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.home:
        home = Path(args.home).resolve()
    else:
        sys.path.insert(0, str(ROOT))
        from trainer.demo.tiny import build_all  # why: only when no home is given

        home = Path(tempfile.mkdtemp(prefix="first_step_home_"))
        build_all(home)
    trees = {"": ROOT} if not args.compare else {"this ": ROOT, "other ": Path(args.compare)}
    print(side_by_side(home, args.rounds, args.steps, trees))


def side_by_side(home: Path, rounds: int, steps: int = 3, trees: dict | None = None) -> str:
    """The floor and every tree's runs with and without MLflow, interleaved; the report."""
    uri = f"sqlite:///{tempfile.mkdtemp(prefix='first_step_store_')}/mlflow.db"
    trees = trees or {"": ROOT}
    variants = [
        (f"{label}{'MLflow' if mlflow else 'no MLflow'}", root, mlflow)
        for label, root in trees.items()
        for mlflow in (True, False)
    ]
    for _, root, mlflow in variants:  # warm-up, untimed: file cache, the store's tables
        one_first_step(home, uri, mlflow, steps, root)
    floors: list[Floor] = []
    runs: dict[str, list[FirstStep]] = {name: [] for name, _, _ in variants}
    for round_ in range(rounds):
        floors.append(bare_import_floor())
        order = variants if round_ % 2 == 0 else variants[::-1]
        for name, root, mlflow in order:
            runs[name] += first_step_phases(home, uri, mlflow, 1, steps, root)
        print(f"first step: round {round_ + 1}/{rounds} done", file=sys.stderr, flush=True)
    return report(floors, runs)
    print(report(floors, runs))


if __name__ == "__main__":
    main()
