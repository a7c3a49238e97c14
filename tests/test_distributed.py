"""Data-parallel training under ``accelerate launch``: 2 CPU processes joined by gloo.

- the real loop on 2 ranks (tests/distributed_probe.py): the trained modules are prepared by
  accelerate as DDP; each rank trains a disjoint half of the images, the synced gradient equals
  the full batch's, both ranks end with identical LoRA weights and only the main one saves;
  accumulated micro-batches sync only on the last one (``accelerator.accumulate``); a stop seen by rank 0 alone stops both at the same step, and a
  resume loads the same checkpoint on both; 2 processes give the same gradient and LoRA as 1
  process accumulating the same micro-batches;
- the studio's launcher (``trainer.jobs.launch``): one MLflow run and one LoRA, the effective batch
  logged, a stop ends every process together and a resume finishes the same run;
- the round-robin shard of the batch plan, without processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from itertools import islice
from pathlib import Path

import psutil
import pytest
import torch
from jobs_support import fresh_settings, training_at, wait_for
from options_support import tiny_config

from trainer.config.io import load_config
from trainer.engine.distributed import Dist
from trainer.jobs.control import stop, wait_for_exit
from trainer.jobs.folder import LOG_FILE, log_tail, read_exit
from trainer.jobs.launch import launch, resume, train_command
from trainer.lora.io import read_lora_tensors
from trainer.lora.usage import USAGE_FILES
from trainer.settings import StudioSettings
from trainer.tracking.artifacts import lora_artifacts
from trainer.tracking.records import get_run_record, list_runs, metric_history
from trainer.tracking.tracker import NullTracker

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "presets" / "demo_sd15.yaml"


@pytest.fixture()
def settings(tmp_path: Path, demo_home: Path, monkeypatch: pytest.MonkeyPatch) -> StudioSettings:
    return fresh_settings(tmp_path, demo_home, monkeypatch)


# ------------------------------------------------------------------------------------ fast
def test_ranks_take_disjoint_round_robin_shares_of_the_plan(demo_home: Path) -> None:
    from trainer.engine.batching import micro_batch_plan
    from trainer.engine.loop import prepare_data

    cfg = tiny_config(train={"batch_size": 2})

    class Ctx:  # prepare_data only reports to the tracker
        home = demo_home
        tracker = NullTracker()

        def dataset_report(self, *args) -> None:
            pass

    data = prepare_data(cfg, Ctx())
    plan = micro_batch_plan(data, cfg.train, 0)
    first = [keys for _, keys in (next(plan) for _ in range(12))]
    shares = [
        [
            keys
            for _, keys in islice(
                Dist(rank=r, world=2).shard(micro_batch_plan(data, cfg.train, 0)), 6
            )
        ]
        for r in (0, 1)
    ]
    assert [s[:6] for s in shares] == [first[0::2], first[1::2]]
    epoch0 = [key for share in shares for keys in share[:3] for key in keys]
    assert len(epoch0) == len(set(epoch0)) == 12  # one epoch: every image once, on one rank


def test_the_launch_command_uses_accelerate_for_several_processes(tmp_path: Path) -> None:
    one = train_command(tmp_path / "c.yaml", tmp_path)
    assert one[1:3] == ["-m", "trainer"] and "accelerate" not in " ".join(one)
    cmd = train_command(tmp_path / "c.yaml", tmp_path, resume="latest", processes=3, port=1234)
    assert cmd[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    assert cmd[cmd.index("--num_processes") + 1] == "3" and "--multi_gpu" in cmd
    assert cmd[cmd.index("--main_process_port") + 1] == "1234"
    tail = cmd[cmd.index("-m", 3) :]
    assert tail == ["-m", "trainer", "run", str(tmp_path / "c.yaml"), "--job-dir", str(tmp_path),
                    "--resume"]  # fmt: skip


# ------------------------------------------------------------------------------------ slow
@pytest.mark.slow
def test_two_ranks_train_disjoint_shards_and_stay_identical(
    demo_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {**os.environ, "STUDIO_HOME": str(demo_home), "PYTHONPATH": str(ROOT)}
    env.pop("MLFLOW_RUN_ID", None)
    cmd = train_command("x", "y", processes=2)
    launcher = cmd[: cmd.index("-m", 3)]  # python -m accelerate.commands.launch ... options
    probe = [*launcher, str(ROOT / "tests" / "distributed_probe.py"), str(demo_home), str(tmp_path)]
    done = subprocess.run(probe, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [(r["rank"], r["world"], r["step"]) for r in ranks] == [(0, 2, 3), (1, 2, 3)]
    # Each rank's micro-batches: 3 steps x batch 2 = 6 images, none shared; together one epoch.
    seen = [[Path(p).name for batch in r["batches"] for p in batch] for r in ranks]
    assert [len(s) for s in seen] == [6, 6]
    assert not set(seen[0]) & set(seen[1])
    assert len(set(seen[0]) | set(seen[1])) == 12
    # Gradients are averaged (DDP's mean): half batch per rank + sync == the whole batch.
    assert all(r["gradient_error"] < 1e-6 for r in ranks)
    assert [r["prepared"] for r in ranks] == ["DistributedDataParallel"] * 2  # accelerate.prepare
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]  # the ranks stayed in sync
    assert [len(r["lora_files"]) for r in ranks] == [1, 0]  # only the main process saves
    saved = sorted(p.name for p in (tmp_path / "job" / "lora").iterdir())
    assert saved == sorted(["t.safetensors", *USAGE_FILES])  # the LoRA, its card and usage files
    assert "effective batch 4 = batch 2 x 2 processes x 1 accumulation" in done.stdout
    # Rank 0 alone asked to stop: both stopped at step 2 (no deadlock); both resumed from the
    # main process's checkpoint to step 6 with identical weights; only the main one saved.
    assert [(r["stopped_at"], r["stopped"], r["resumed_to"]) for r in ranks] == [(2, True, 6)] * 2
    assert ranks[0]["resumed_sha256"] == ranks[1]["resumed_sha256"] != ranks[0]["weights_sha256"]
    assert [len(r["resumed_files"]) for r in ranks] == [1, 0]
    checkpoints = sorted(p.name for p in (tmp_path / "job2" / "checkpoints").iterdir())
    assert checkpoints[0] == "step_00000002" and checkpoints[-1] == "step_00000006"
    # 2 processes x 1 micro-batch == 1 process x 2 accumulated micro-batches over the same images:
    # same first-step gradient and same LoRA after 2 steps (up to float summation order).
    one_grads, one_files = _one_process_reference(demo_home, tmp_path / "reference", monkeypatch)
    two_grads = torch.load(tmp_path / "grads_2proc.pt")
    assert len(two_grads) == len(one_grads) > 0
    assert any(float(g.abs().max()) > 0 for g in two_grads)
    for two, one in zip(two_grads, one_grads, strict=True):
        assert torch.allclose(two, one, rtol=1e-4, atol=1e-7), float((two - one).abs().max())
    two_lora = read_lora_tensors(ranks[0]["equivalence_files"][0])
    one_lora = read_lora_tensors(one_files[0])
    assert two_lora.keys() == one_lora.keys()
    for key, value in two_lora.items():
        assert torch.allclose(value, one_lora[key], rtol=1e-4, atol=1e-6), key
    # accelerator.accumulate over 2 micro-batches: after the first the gradients are each rank's
    # own (DDP's no_sync), after the last they are all-reduced, so identical on both ranks.
    accumulated = [torch.load(tmp_path / f"accumulate_rank{r}.pt") for r in (0, 1)]
    local, synced = ([a[kind] for a in accumulated] for kind in ("local", "synced"))
    assert len(local[0]) == len(synced[0]) > 0
    assert any(not torch.equal(a, b) for a, b in zip(*local, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(*synced, strict=True))


def _one_process_reference(home: Path, job: Path, monkeypatch: pytest.MonkeyPatch):
    """The equivalence run on one process (in this test process): first gradient, LoRA files."""
    from distributed_probe import equivalence_config, pin_timesteps
    from options_support import run

    import trainer.engine.loop as loop

    grads: list[list[torch.Tensor]] = []
    real_clip, real_load = Dist.clip_gradients, loop.load_arch

    def recording_clip(self, params, max_norm):
        params = list(params)
        if not grads:
            grads.append([p.grad.detach().clone() for p in params])
        return real_clip(self, params, max_norm)

    monkeypatch.setattr(Dist, "clip_gradients", recording_clip)
    monkeypatch.setattr(loop, "load_arch", lambda *a, **k: pin_timesteps(real_load(*a, **k)))
    outcome, _ = run(equivalence_config(1), home, job)
    return grads[0], outcome.lora_files


@pytest.mark.slow
def test_the_studio_launches_two_processes_stops_and_resumes_one_run(
    settings: StudioSettings,
) -> None:
    cfg = load_config(
        DEMO,
        [
            "runtime.num_processes=2",
            "runtime.device=cpu",
            "train.steps=40",
            "train.gradient_accumulation_steps=2",
            "sample.sample_every=0",
            "save.save_every=2",
            "save.save_format=webui",
            "logging.run_name=two_procs",
        ],
    )
    job = launch(settings, cfg)
    assert "accelerate.commands.launch" in job.command
    wait_for(training_at(job.job_dir, 2), 120, "step 2")
    ranks = [
        p for p in psutil.Process(job.pid).children(recursive=True) if "trainer" in p.cmdline()
    ]
    assert len(ranks) == 2  # two trainer processes under accelerate's launcher

    assert stop(settings, job.run_id)
    job.process.wait(timeout=60)
    wait_for(lambda: read_exit(job.job_dir), 10, "exit.json")
    assert read_exit(job.job_dir)["code"] == 3, log_tail(job.job_dir)
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in ranks)
    record = get_run_record(settings.tracking_uri, job.run_id)
    assert record.status == "KILLED"

    again = resume(settings, job.run_id, record.status)
    assert "accelerate.commands.launch" in again.command and "--resume" in again.command
    again.process.wait(timeout=180)
    log = log_tail(job.job_dir, lines=30)
    assert wait_for_exit(settings, job.run_id, 10)
    wait_for(lambda: read_exit(job.job_dir), 10, "exit.json")
    assert read_exit(job.job_dir)["code"] == 0, log

    runs = [r for r in list_runs(settings.tracking_uri) if r.name == "two_procs"]
    assert len(runs) == 1 and runs[0].run_id == job.run_id
    record = get_run_record(settings.tracking_uri, job.run_id)
    assert record.status == "FINISHED"
    assert record.params["effective_batch_size"] == "8"  # batch 2 x 2 processes x 2 accumulation
    assert record.params["num_processes"] == "2"
    history = metric_history(settings.tracking_uri, job.run_id, ["effective_batch_size", "loss"])
    assert {value for _, value, _ in history["effective_batch_size"]} == {8.0}
    assert [step for step, _, _ in history["loss"]][-1] == 40
    stored = lora_artifacts(settings.tracking_uri, job.run_id)
    loras = [a for a in stored if a.startswith("lora/") and a.endswith(".safetensors")]
    assert loras == ["lora/demo_sd15.safetensors"]
    saved = sorted(p.name for p in (job.job_dir / "lora").iterdir())
    assert saved == sorted(["demo_sd15.safetensors", *USAGE_FILES])  # no previews: no samples/
    text = (job.job_dir / LOG_FILE).read_text()
    assert text.count("Finished 40 steps") == 1  # one voice: only the main process reports
