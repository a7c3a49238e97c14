"""Resume edges (issue 16, items 3 and 10), on the tiny demo models.

``--resume`` is checked before anything is written: a path that holds no checkpoint leaves every
file byte-identical and creates no folder. A damaged newest checkpoint falls back to the previous
one and says so, in the same MLflow run. A resumed run replays the steps after its checkpoint and
logs each step once. (A failed Hub upload after a finished training:
tests/test_options_save.py::test_push_to_hub_offline_saves_then_fails_clearly_and_never_leaks_the_token.)
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from jobs_support import make_home
from options_support import tiny_config

from trainer.cli import main
from trainer.config.io import save_config
from trainer.engine import loop
from trainer.engine.checkpoint import DAMAGED_PREFIX, STATE_FILE, list_checkpoints
from trainer.engine.run import EXIT_FAILED, EXIT_INVALID, EXIT_OK, EXIT_STOPPED, run_job
from trainer.tracking.tracker import TAG_RESUME_FALLBACK

ROOT = Path(__file__).resolve().parent.parent
STEPS = 8
REAL_REPORT = loop.report


@pytest.fixture()
def studio(tmp_path: Path, demo_home: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A fresh studio home and MLflow store, and a tracked 8-step config saving every 3 steps."""
    home = make_home(tmp_path, demo_home)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("STUDIO_HOME", str(home))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    cfg = tiny_config(
        train={"steps": STEPS},
        save={"save_every": 3, "max_step_saves_to_keep": 5},
        logging={"use_mlflow": True, "log_system_metrics": False, "log_every": 1},
    )
    config = save_config(cfg, tmp_path / "config.yaml")
    return {"home": home, "uri": uri, "config": config, "db": tmp_path / "mlflow.db"}


def interrupt_at(monkeypatch: pytest.MonkeyPatch, step: int | None, how: str = "crash") -> None:
    """After ``step`` is trained and reported: crash (an exception, metrics of that step already
    logged, like a kill between two checkpoints) or stop (SIGTERM's handler, a clean stop).
    ``step`` None: no interruption."""

    def report_then_interrupt(ctx, state, *args, **kwargs):
        REAL_REPORT(ctx, state, *args, **kwargs)
        if step is not None and state.step == step:
            if how == "crash":
                raise RuntimeError(f"simulated crash after step {step}")
            ctx.stop._handle(signal.SIGTERM, None)

    monkeypatch.setattr(loop, "report", report_then_interrupt)


def logged_steps(uri: str, run_id: str, key: str) -> list[int]:
    from mlflow import MlflowClient

    return sorted(point.step for point in MlflowClient(uri).get_metric_history(run_id, key))


def all_runs(uri: str) -> list[Any]:
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments)


def tree(root: Path) -> dict[str, str]:
    """Every folder, file (by content hash) and link below ``root``, links not followed."""
    found = {".": "dir"}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                found[rel] = f"link:{os.readlink(path)}"
            elif path.is_dir():
                found[rel] = "dir"
            else:
                found[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


# ------------------------------------------------------------------- --resume is checked first
@pytest.mark.parametrize(
    "case",
    ["unrelated_folder", "mistyped_path", "a_file", "empty_checkpoints", "all_damaged", "latest"],
)
def test_a_resume_path_without_a_usable_checkpoint_is_refused_and_nothing_is_written(
    studio: dict[str, Any], tmp_path: Path, case: str, monkeypatch, capsys
) -> None:
    work = tmp_path / "work"
    unrelated = work / "my_project"
    unrelated.mkdir(parents=True)
    (unrelated / "config.yaml").write_text("name: something else entirely\nkeep: me\n")
    (unrelated / "notes.txt").write_text("do not touch")
    job = work / "job"
    if case == "empty_checkpoints":
        (job / "checkpoints").mkdir(parents=True)
        (job / "config.yaml").write_text("name: t\n")
    if case == "all_damaged":  # one real checkpoint, then its training state is cut short
        interrupt_at(monkeypatch, 4, "crash")
        assert run_job(studio["config"], job_dir=job).exit_code == EXIT_FAILED
        [saved] = list_checkpoints(job / "checkpoints")
        state = saved / STATE_FILE
        state.write_bytes(state.read_bytes()[:1000])
    target = {
        "unrelated_folder": unrelated,
        "mistyped_path": work / "jbo" / "checkpoints" / "step_00000003",
        "a_file": unrelated / "notes.txt",
        "empty_checkpoints": job,
        "all_damaged": job,
        "latest": None,  # no run of this name ever saved a checkpoint in the studio's jobs
    }[case]
    runs_before = len(all_runs(studio["uri"])) if studio["db"].exists() else 0
    before_work, before_home = tree(work), tree(studio["home"])
    db_before = studio["db"].read_bytes() if studio["db"].exists() else None
    capsys.readouterr()

    args = ["run", str(studio["config"]), "--resume"] + ([str(target)] if target else [])
    assert main(args) == EXIT_INVALID

    out = capsys.readouterr().out
    assert out.startswith("--resume: ") and "Traceback" not in out
    expected = {
        "unrelated_folder": "holds no checkpoint of this trainer",
        "mistyped_path": "does not exist",
        "a_file": "is a file",
        "empty_checkpoints": "holds no checkpoint of this trainer",
        "all_damaged": "can be loaded",
        "latest": "no checkpoint of a run named 't'",
    }[case]
    assert expected in out
    assert tree(work) == before_work  # byte-identical: no config.yaml, progress.json, folder
    assert tree(studio["home"]) == before_home
    assert not (work / "jbo").exists()
    if db_before is None:
        assert not studio["db"].exists()  # not even an MLflow store was created
    else:
        assert (
            studio["db"].read_bytes() == db_before and len(all_runs(studio["uri"])) == runs_before
        )


def test_the_cli_refuses_a_mistyped_resume_path_with_exit_code_2(
    studio: dict[str, Any], tmp_path: Path
) -> None:
    typo = tmp_path / "jobs_typo" / "run1"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "trainer", "run", str(studio["config"]), "--resume", str(typo)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == EXIT_INVALID, done.stderr
    assert f"--resume: {typo} does not exist" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr
    assert not (tmp_path / "jobs_typo").exists() and not studio["db"].exists()


# ------------------------------------------------------------ a damaged newest checkpoint
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one_and_says_so(
    studio: dict[str, Any], tmp_path: Path, monkeypatch, capfd
) -> None:
    job = tmp_path / "job"
    interrupt_at(monkeypatch, 7, "crash")  # checkpoints at steps 3 and 6, then a crash
    first = run_job(studio["config"], job_dir=job)
    assert first.status == "FAILED"
    interrupt_at(monkeypatch, None)
    older, newest = list_checkpoints(job / "checkpoints")
    assert newest.name == "step_00000006"
    state = newest / STATE_FILE
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])  # a torn write
    capfd.readouterr()

    resumed = run_job(studio["config"], resume=str(job))
    assert resumed.exit_code == EXIT_OK and resumed.status == "FINISHED"
    assert resumed.run_id == first.run_id and resumed.job_dir == job  # the same run and folder
    assert [r.info.run_id for r in all_runs(studio["uri"])] == [first.run_id]  # no stray run
    out, err = capfd.readouterr()
    assert f"Resuming from {older} (step 3)" in out
    assert "Warning: Resumed from step_00000003 (step 3)" in err and "step_00000006" in err
    from mlflow import MlflowClient

    run = MlflowClient(studio["uri"]).get_run(first.run_id)
    assert run.info.status == "FINISHED"
    warning = run.data.tags[TAG_RESUME_FALLBACK]
    assert "step_00000003" in warning and "step_00000006" in warning
    assert run.data.tags["mlflow.note.content"] == warning
    # The damaged one is set aside (kept for a look, out of the rotation), the good ones remain.
    assert (job / "checkpoints" / f"{DAMAGED_PREFIX}step_00000006" / STATE_FILE).exists()
    assert [p.name for p in list_checkpoints(job / "checkpoints")] == [
        "step_00000003",
        "step_00000006",  # written again by the resumed run
        "step_00000008",
    ]
    assert logged_steps(studio["uri"], first.run_id, "loss") == list(range(1, STEPS + 1))


# ---------------------------------------------------------------- each step logged once
def test_resumed_runs_log_each_step_exactly_once(
    studio: dict[str, Any], tmp_path: Path, monkeypatch
) -> None:
    """A crash after step 5 (checkpoint 3), a resume that crashes after 7 (checkpoint 6), a
    resume to the end: steps 4-5 and 7 are trained twice, and MLflow holds every step once."""
    job = tmp_path / "job"
    results = []
    for crash_after in (5, 7, None):
        interrupt_at(monkeypatch, crash_after, "crash")
        resume = str(job) if results else None
        results.append(run_job(studio["config"], job_dir=job, resume=resume))
    assert [r.exit_code for r in results] == [EXIT_FAILED, EXIT_FAILED, EXIT_OK]
    run_id = results[0].run_id
    assert {r.run_id for r in results} == {run_id}
    assert [r.info.run_id for r in all_runs(studio["uri"])] == [run_id]
    assert logged_steps(studio["uri"], run_id, "loss") == list(range(1, STEPS + 1))
    for key in ("lr", "loss_smoothed", "s_per_step", "eta_s", "peak_memory_mb"):
        steps = logged_steps(studio["uri"], run_id, key)  # s/step starts at step 2
        assert steps == sorted(set(steps)) and steps[-1] == STEPS and len(steps) >= STEPS - 1, key


def test_a_clean_stop_then_resume_logs_each_step_once(
    studio: dict[str, Any], tmp_path: Path, monkeypatch
) -> None:
    job = tmp_path / "job"
    interrupt_at(monkeypatch, 4, "stop")
    stopped = run_job(studio["config"], job_dir=job)
    assert stopped.exit_code == EXIT_STOPPED and stopped.status == "KILLED"
    assert list_checkpoints(job / "checkpoints")[-1].name == "step_00000004"  # the stop's step
    from mlflow import MlflowClient

    from trainer.tracking.layout import TAG_ACTIVE_S
    from trainer.tracking.progress import read_progress
    from trainer.tracking.records import get_run_record

    first_part = float(MlflowClient(studio["uri"]).get_run(stopped.run_id).data.tags[TAG_ACTIVE_S])
    assert read_progress(job)["active_s"] == first_part > 0
    pause = 3.0  # the run sits stopped: its training time must not count it
    time.sleep(pause)
    interrupt_at(monkeypatch, None)
    finished = run_job(studio["config"], resume=str(job))
    assert finished.exit_code == EXIT_OK and finished.run_id == stopped.run_id
    assert logged_steps(studio["uri"], stopped.run_id, "loss") == list(range(1, STEPS + 1))
    record = get_run_record(studio["uri"], stopped.run_id)
    wall = (record.end_time - record.start_time).total_seconds()
    total = float(record.tags[TAG_ACTIVE_S])
    assert record.duration_s == total == read_progress(job)["active_s"]
    assert first_part < total <= wall - pause + 0.5  # both launches, not the pause between
