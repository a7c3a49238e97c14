"""A CPU run uses the free cores only (trainer.engine.cpu_threads): torch's one thread per core
stalls when other programs keep cores busy (benchmarks/cpu_threads.py)."""

from __future__ import annotations

import pytest
import torch
from options_support import run, tiny_config

from trainer.engine import cpu_threads


@pytest.mark.parametrize(
    ("cores", "load", "threads"),
    [(2, 0.0, 2), (2, 0.9, 2), (2, 1.7, 1), (2, 11.5, 1), (16, 3.2, 13), (8, 0.0, 8)],
)
def test_free_cores_leave_the_busy_ones_and_keep_one(cores, load, threads) -> None:
    assert cpu_threads.free_cores(cores, load) == threads


def test_a_cpu_run_sets_torchs_threads_unless_the_user_did(demo_home, tmp_path, monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(cpu_threads, "free_cores", lambda: 1)
    seen = []
    monkeypatch.setattr(torch, "set_num_threads", seen.append)
    run(tiny_config(train={"steps": 1}), demo_home, tmp_path / "a")
    assert seen == [1]  # the trainer asked for the free cores
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    run(tiny_config(train={"steps": 1}), demo_home, tmp_path / "b")
    assert seen == [1]  # the user's OMP_NUM_THREADS wins: nothing set
    assert cpu_threads.use_free_cores(torch.device("cuda")) is None
    assert torch.get_num_threads() == before
