"""The GPU check: does every GPU path of the trainer work on this machine, and how fast is it?

    make gpu-check                                   # on a CUDA machine: within 8 minutes
    .venv/bin/python benchmarks/gpu_check.py [--steps 30] [--json FILE] [--budget-s 480]
    .venv/bin/python benchmarks/gpu_check.py --dry-run   # the same cases on the CPU, 2 steps

Trains, without any download, the tiny demo models through the real trainer and the real-size
SD1.5 U-Net (random weights from its shipped config) a few dozen steps each: bf16, fp16 with the
gradient scaler, AdamW8bit, an int8 and an nf4 base (bitsandbytes), SDPA and flash attention
(when flash-attn is installed), torch.compile, and 2 processes over nccl (with 2 GPUs or more).
The case list and skip rules are ``gpu_cases/cases.py``. Each case must finish with finite
losses and a LoRA that changes the model's output. Prints a table of s/step and peak VRAM next
to the advisor's predictions; exits 1 if any case failed (or did not run within the budget).

Without CUDA it says so and exits 0. ``--dry-run`` runs the same case list on the CPU (tiny
models, 2 steps; cases that need CUDA are listed as skipped with the reason): the test suite
runs it (tests/test_gpu_check.py) so the check cannot rot before a GPU comes.

Cases of one group run in one worker process (``--worker``), so a crash or a hang takes only its
group down; each worker appends one JSON line per finished case to a results file.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# The project's packages come before this folder, whose scripts (advisor.py, ui.py...) would
# shadow them; run as a script, this folder is already on the path (gpu_cases).
sys.path.insert(0, str(ROOT))

from gpu_cases.cases import (  # noqa: E402
    CASES,
    FAILED,
    GROUP_ORDER,
    PASSED,
    SKIPPED,
    Case,
    Machine,
    case_by_name,
    result,
    skip_reason,
)

BUDGET_S = 480  # the whole check, building the tiny models included: 8 minutes
MIN_GROUP_S = 20  # a group is not started with less time than this left


# ------------------------------------------------------------------------------ the orchestrator
def find_machine(dry_run: bool) -> Machine:
    import torch  # heavy: the check needs it to see the GPUs

    cuda = torch.cuda.is_available() and not dry_run
    return Machine(
        cuda=cuda,
        gpus=torch.cuda.device_count() if cuda else 0,
        flash_attn=importlib.util.find_spec("flash_attn") is not None,
    )


def run_check(
    machine: Machine, steps: int, budget_s: float, work: Path, home: Path
) -> list[dict[str, Any]]:
    """Every case: skipped with the reason, or run in its group's worker; the rows in case order."""
    deadline = time.monotonic() + budget_s
    rows: dict[str, dict[str, Any]] = {}
    groups: dict[str, list[Case]] = {group: [] for group in GROUP_ORDER}
    for case in CASES:
        reason = skip_reason(case, machine)
        if reason:
            rows[case.name] = result(case, SKIPPED, reason)
        else:
            groups[case.group].append(case)
    for group, cases in groups.items():
        if not cases:
            continue
        left = deadline - time.monotonic()
        if left < MIN_GROUP_S:
            for case in cases:
                rows[case.name] = result(
                    case, FAILED, f"not run: the {budget_s:.0f} s budget ran out"
                )
            continue
        rows.update(run_group(group, cases, machine, steps, left, work, home))
    return [rows[case.name] for case in CASES]


def run_group(
    group: str,
    cases: list[Case],
    machine: Machine,
    steps: int,
    timeout_s: float,
    work: Path,
    home: Path,
) -> dict[str, dict[str, Any]]:
    """One worker process for ``cases``; a case it did not report failed with the log's tail."""
    out, log = work / f"{group}.jsonl", work / f"{group}.log"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", *[c.name for c in cases]]
    cmd += ["--steps", str(steps), "--out", str(out), "--work", str(work), "--home", str(home)]
    cmd += ["--timeout-s", str(int(timeout_s))] + ([] if machine.cuda else ["--cpu"])
    print(f"[{group}] {len(cases)} case(s), up to {timeout_s:.0f} s", flush=True)
    why = ""
    with log.open("w") as log_file:
        # Its own session: on a timeout the worker goes with what it started (accelerate's ranks).
        worker = subprocess.Popen(
            cmd, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            code = worker.wait(timeout=timeout_s)
            why = f"the worker exited {code}" if code else ""
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
            why = f"the worker ran past {timeout_s:.0f} s"
    found = {row["name"]: row for row in read_rows(out)}
    for case in cases:
        if case.name not in found:
            found[case.name] = result(case, FAILED, f"no result: {why or 'the worker stopped'}")
    failed = [name for name, row in found.items() if row["status"] == FAILED]
    if failed:
        tail = log.read_text(errors="replace")[-2000:]
        print(f"--- {', '.join(failed)} failed; the end of {log.name}:\n{tail}\n---", flush=True)
    return found


def read_rows(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ------------------------------------------------------------------------------------ the worker
def work_cases(
    names: list[str], steps: int, out: Path, work: Path, home: Path, cpu: bool, timeout_s: float
) -> None:
    """Run ``names`` one after another in this process, appending each row to ``out``."""
    from gpu_cases.advice import machine_profile, predicted  # heavy: the worker only

    from trainer.demo.tiny import build_all  # heavy: the worker only

    device = "cpu" if cpu else "cuda"
    os.environ["STUDIO_HOME"] = str(home)
    os.environ.pop("STUDIO_NOTIFY_URL", None)  # a check run sends no run-ended messages
    build_all(home)  # once per home: later workers (and later checks) find the models built
    profile = machine_profile(device)
    for name in names:
        case = case_by_name(name)
        print(f"=== {name} ({device})", flush=True)
        started = time.monotonic()
        try:
            measured = train_case(
                case, home, work / "jobs" / name.replace(" ", "_"), steps, device, timeout_s
            )
            measured.update(predicted(case, steps, device, profile))
            row = result(case, *verdict(measured), **measured)
        except Exception as exc:  # every failure is a row with its reason, and the next case runs
            traceback.print_exc()
            row = result(case, FAILED, f"{type(exc).__name__}: {str(exc).strip()[:300]}")
        row["wall_s"] = round(time.monotonic() - started, 1)
        print(f"=== {name}: {row['status']} {row['reason']}", flush=True)
        with out.open("a") as f:
            f.write(json.dumps(row) + "\n")


def train_case(case: Case, home: Path, job: Path, steps: int, device: str, timeout_s: float):
    if case.real_size:
        from gpu_cases.real import run_real  # heavy: real-size cases only

        return run_real(case, steps, device)
    from gpu_cases.tiny import run_tiny  # heavy: the trainer

    return run_tiny(case, home, job, steps, device, timeout_s)


def verdict(measured: dict[str, Any]) -> tuple[str, str]:
    """(status, reason): a finite loss and a LoRA that moved the output."""
    loss, delta = measured.get("loss"), measured.get("lora_delta")
    if loss is None or not math.isfinite(loss):
        return FAILED, f"loss {loss}"
    if delta is None or not math.isfinite(delta) or delta <= 0:
        return FAILED, f"the LoRA did not change the output (relative change {delta})"
    return PASSED, ""


# ------------------------------------------------------------------------------------- the table
def _num(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def _ratio(measured: Any, predicted: Any) -> str:
    return "-" if not (measured and predicted) else f"{measured / predicted:.2f}"


def table(rows: list[dict[str, Any]], machine: Machine) -> str:
    memory = "VRAM GiB" if machine.cuda else "mem GiB"
    lines = [
        f"{'case':<28}{'status':<8}{'s/step':>8}{'pred':>8}{'ratio':>7}{memory:>10}{'pred':>7}"
        f"{'ratio':>7}{'loss':>8}{'LoRA Δ':>9}  note"
    ]
    for row in rows:
        lines.append(
            f"{row['name']:<28}{row['status']:<8}{_num(row['s_per_step']):>8}"
            f"{_num(row['pred_s_per_step']):>8}"
            f"{_ratio(row['s_per_step'], row['pred_s_per_step']):>7}"
            f"{_num(row['peak_vram_gib']):>10}{_num(row['pred_mem_gib']):>7}"
            f"{_ratio(row['peak_vram_gib'], row['pred_mem_gib']):>7}"
            f"{_num(row['loss']):>8}{_num(row['lora_delta'], 2):>9}  {row['reason']}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="the case list on the CPU")
    parser.add_argument("--steps", type=int, help="steps per case (30; 2 in a dry run)")
    parser.add_argument("--budget-s", type=float, default=BUDGET_S, help="the whole check")
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    parser.add_argument(
        "--home", type=Path, help="a studio home with the demo models (default: a fresh one)"
    )
    parser.add_argument("--worker", nargs="+", metavar="CASE", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--cpu", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--timeout-s", type=float, default=BUDGET_S, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    steps = args.steps or (2 if args.dry_run else 30)
    if args.worker:
        work_cases(args.worker, steps, args.out, args.work, args.home, args.cpu, args.timeout_s)
        return 0
    started = time.monotonic()
    machine = find_machine(args.dry_run)
    if not machine.cuda and not args.dry_run:
        print(
            "No CUDA device on this machine: nothing to check on a GPU (exit 0). "
            "`--dry-run` runs the case list on the CPU."
        )
        return 0
    where = f"{machine.gpus} CUDA GPU(s)" if machine.cuda else "the CPU (dry run)"
    print(
        f"GPU check on {where}, {steps} steps per case, flash-attn "
        f"{'installed' if machine.flash_attn else 'not installed'}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        home = args.home or Path(tmp) / "home"
        rows = run_check(machine, steps, args.budget_s, Path(tmp), home)
    print(table(rows, machine))
    failed = [row["name"] for row in rows if row["status"] == FAILED]
    counts = {s: sum(row["status"] == s for row in rows) for s in (PASSED, FAILED, SKIPPED)}
    print(
        f"{counts[PASSED]} passed, {counts[FAILED]} failed, {counts[SKIPPED]} skipped in "
        f"{time.monotonic() - started:.0f} s. Memory: peak torch.cuda allocation (no CUDA "
        "context) against the advisor's VRAM; tiny cases' s/step is the trainer's own."
    )
    if args.json:
        args.json.write_text(json.dumps({"machine": vars(machine), "rows": rows}, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
