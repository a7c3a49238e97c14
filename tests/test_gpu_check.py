"""The GPU check (issue 18, item 4) cannot rot before a GPU comes: its dry run trains every case a
CPU can on the tiny models through the real trainer, lists the CUDA-only ones as skipped with the
reason, and exits 0; without CUDA the check itself says so and exits 0."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
sys.path.append(str(ROOT / "benchmarks"))  # last: its scripts must not shadow packages

import gpu_check  # noqa: E402
from gpu_cases.cases import CASES, FAILED, PASSED, SKIPPED, Case, Machine, skip_reason  # noqa: E402

# What the CPU trains in a dry run; every other case needs CUDA (or 2 GPUs, or flash-attn).
CPU_CASES = {
    "tiny-sd15 bf16 sdpa",
    "tiny-sdxl bf16",
    "tiny-flux bf16",
    "tiny-sd15 adamw8bit",
    "tiny-sd15 int8 base",
    "tiny-sd15 nf4 base",
}
CUDA_ONLY = {
    "tiny-sd15 fp16 scaler": "fp16",
    "tiny-sd15 flash": "flash attention",
    "tiny-sd15 2 processes nccl": "nccl",
    "tiny-sd15 compile": "torch.compile",
    **{case.name: "real-size" for case in CASES if case.real_size},
}


def no_cuda_env() -> dict[str, str]:
    return {**os.environ, "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1"}


def test_the_case_list_covers_every_gpu_path() -> None:
    names = [case.name for case in CASES]
    assert set(names) == CPU_CASES | set(CUDA_ONLY) and len(names) == len(set(names))
    for model in ("tiny-sd15", "real-sd15"):
        mine = [case for case in CASES if case.model == model]
        assert {c.dtype for c in mine} == {"bf16", "fp16"}
        assert {c.qtype for c in mine} == {None, "int8", "nf4"}
        assert {c.attention for c in mine} == {"native", "flash"}
        assert {c.optimizer for c in mine} == {"adamw", "adamw8bit"}
        assert any(c.compile for c in mine)
    assert {case.model for case in CASES} >= {"tiny-sdxl", "tiny-flux"}
    assert any(case.processes == 2 for case in CASES)


def test_on_one_gpu_without_flash_attn_only_those_two_cases_are_skipped() -> None:
    one_gpu = Machine(cuda=True, gpus=1, flash_attn=False)
    skipped = {c.name: skip_reason(c, one_gpu) for c in CASES if skip_reason(c, one_gpu)}
    assert skipped == {
        "tiny-sd15 flash": "flash-attn is not installed",
        "real-sd15 flash": "flash-attn is not installed",
        "tiny-sd15 2 processes nccl": "2 processes over nccl need 2 GPUs; found 1",
    }
    assert not any(skip_reason(c, Machine(cuda=True, gpus=2, flash_attn=True)) for c in CASES)


def test_a_run_fails_on_a_non_finite_loss_or_an_unchanged_output() -> None:
    assert gpu_check.verdict({"loss": 0.2, "lora_delta": 0.01}) == (PASSED, "")
    assert gpu_check.verdict({"loss": float("nan"), "lora_delta": 0.01})[0] == FAILED
    status, reason = gpu_check.verdict({"loss": 0.2, "lora_delta": 0.0})
    assert status == FAILED and "did not change the output" in reason


def test_a_case_without_time_left_fails_the_check(tmp_path) -> None:
    out = tmp_path / "rows.json"
    assert gpu_check.main(["--dry-run", "--budget-s", "0", "--json", str(out)]) == 1
    rows = {row["name"]: row for row in json.loads(out.read_text())["rows"]}
    for name in CPU_CASES:
        assert rows[name]["status"] == FAILED and "budget" in rows[name]["reason"]


def test_a_worker_that_dies_fails_its_cases_with_the_reason(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(gpu_check.sys, "executable", "/bin/false")  # the worker exits 1 at once
    cases = [Case("tiny-sd15 bf16 sdpa", "tiny-sd15")]
    machine = Machine(cuda=False, gpus=0, flash_attn=False)
    rows = gpu_check.run_group("tiny", cases, machine, 2, 30, tmp_path, tmp_path / "home")
    assert rows["tiny-sd15 bf16 sdpa"]["status"] == FAILED
    assert "the worker exited 1" in rows["tiny-sd15 bf16 sdpa"]["reason"]


def test_a_worker_past_its_time_is_killed_and_its_cases_fail(tmp_path, monkeypatch) -> None:
    hang = tmp_path / "hang.sh"
    hang.write_text("#!/bin/sh\nsleep 60\n")
    hang.chmod(0o755)
    monkeypatch.setattr(gpu_check.sys, "executable", str(hang))
    cases = [Case("tiny-sd15 bf16 sdpa", "tiny-sd15")]
    machine = Machine(cuda=False, gpus=0, flash_attn=False)
    started = time.monotonic()
    rows = gpu_check.run_group("tiny", cases, machine, 2, 1, tmp_path, tmp_path / "home")
    assert time.monotonic() - started < 30
    assert rows["tiny-sd15 bf16 sdpa"]["status"] == FAILED
    assert "ran past 1 s" in rows["tiny-sd15 bf16 sdpa"]["reason"]


def test_without_cuda_the_check_says_so_and_exits_0() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT)],
        cwd=ROOT,
        env=no_cuda_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "No CUDA device" in done.stdout and "--dry-run" in done.stdout


@pytest.mark.slow
def test_the_dry_run_trains_every_cpu_case_and_skips_the_rest(demo_home, tmp_path) -> None:
    out = tmp_path / "rows.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--dry-run", "--json", str(out), "--home", str(demo_home)],
        cwd=ROOT,
        env=no_cuda_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["machine"]["cuda"] is False
    rows = report["rows"]
    assert [row["name"] for row in rows] == [case.name for case in CASES]  # the table, in order
    for row in rows:
        assert row["name"] in done.stdout  # every case is a line of the printed table
        if row["name"] in CPU_CASES:
            assert row["status"] == PASSED, row
            assert 0 < row["loss"] < 10 and row["s_per_step"] > 0
            assert row["lora_delta"] > 0  # the trained LoRA moved the prediction
            assert row["pred_s_per_step"] > 0 and row["pred_mem_gib"] > 0  # the advisor's
        else:
            assert row["status"] == SKIPPED, row
            assert CUDA_ONLY[row["name"]] in row["reason"]
    assert "6 passed, 0 failed, 11 skipped" in done.stdout
