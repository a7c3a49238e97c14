"""The browser's run-end notice reads the job folders, not only the runs it saw training: a run
the queue runner started and that ended between two reruns of the sidebar still gets exactly one
toast, and the tab title follows the newest run ("▶ lr_two 40% — LoRA Studio" while it trains,
"✓ lr_two finished — LoRA Studio" after). Job folders are written by hand; no trainer runs."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from trainer.files import write_json
from trainer.jobs.folder import EXIT_FILE
from trainer.settings import StudioSettings, load_settings
from trainer.tracking.job_file import write_job
from trainer.tracking.progress import write_progress


@pytest.fixture()
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> StudioSettings:
    monkeypatch.setenv("STUDIO_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    settings = load_settings()
    settings.jobs_dir.mkdir(parents=True)
    return settings


@pytest.fixture()
def trainer() -> Iterator[subprocess.Popen]:
    """A stand-in trainer process that lives until the test kills it."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


def gone_pid() -> int:
    """The pid of a process that has already exited (a trainer that ended)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def job(settings: StudioSettings, run_id: str, name: str, pid: int, **progress: object) -> Path:
    folder = settings.jobs_dir / run_id
    folder.mkdir(exist_ok=True)
    write_job(folder, pid, run_id, time.time(), ["python"], folder / "c.yaml", name=name)
    write_progress(folder, progress)
    return folder


def _notice_script() -> None:
    from trainer.jobs.active import active_jobs
    from trainer.settings import load_settings
    from ui.run_end_notice import announce_ended_runs

    settings = load_settings()
    announce_ended_runs(settings, active_jobs(settings))


def toasts(at: AppTest) -> list[tuple[str, str]]:
    return [(t.value, t.icon) for t in at.toast]


def shown_title(at: AppTest) -> str | None:
    return at.session_state["run_end_notice"].shown


def test_a_run_that_starts_and_ends_between_two_reruns_gets_one_toast_and_the_title(
    settings: StudioSettings, trainer: subprocess.Popen
) -> None:
    job(settings, "before", "old_run", gone_pid(), phase="finished", step=5, total_steps=5)
    time.sleep(0.05)
    at = AppTest.from_function(_notice_script, default_timeout=30).run()
    assert not at.exception and toasts(at) == [] and shown_title(at) is None  # ended before

    # the queue runner starts lr_one and it ends before the sidebar reruns: never seen training
    job(settings, "q1", "lr_one", gone_pid(), phase="finished", step=30, total_steps=30)
    at.run()
    assert toasts(at) == [("**lr_one** finished", ":material/check_circle:")]
    assert shown_title(at) == "✓ lr_one finished — LoRA Studio"
    at.run()
    at.run()
    assert toasts(at) == []  # once, not on every rerun
    assert shown_title(at) == "✓ lr_one finished — LoRA Studio"

    # the next run trains: the title shows it, not the last run's result
    folder = job(settings, "q2", "lr_two", trainer.pid, phase="training", step=12, total_steps=30)
    at.run()
    assert toasts(at) == [] and shown_title(at) == "▶ lr_two 40% — LoRA Studio"
    write_progress(folder, {"phase": "failed", "step": 13, "total_steps": 30})
    trainer.kill()
    trainer.wait()
    at.run()
    assert toasts(at) == [("**lr_two** failed", ":material/error:")]
    assert shown_title(at) == "✗ lr_two failed — LoRA Studio"
    at.run()
    assert toasts(at) == []


def test_a_trainer_killed_outright_and_a_resumed_run_are_each_announced_once(
    settings: StudioSettings,
) -> None:
    at = AppTest.from_function(_notice_script, default_timeout=30).run()
    # SIGKILL: the progress still says training; the launcher's exit file says it ended
    folder = job(settings, "k1", "killed_hard", gone_pid(), phase="training", step=3, total_steps=9)
    write_json(folder / EXIT_FILE, {"code": -9, "ended": time.time(), "meaning": "was killed"})
    at.run()
    assert toasts(at) == [("**killed_hard** ended", ":material/warning:")]
    at.run()
    assert toasts(at) == []

    # resumed (a new launch of the same run) and ended again: one more toast
    (folder / EXIT_FILE).unlink()
    time.sleep(0.01)
    job(settings, "k1", "killed_hard", gone_pid(), phase="finished", step=9, total_steps=9)
    at.run()
    assert toasts(at) == [("**killed_hard** finished", ":material/check_circle:")]
    at.run()
    assert toasts(at) == []
