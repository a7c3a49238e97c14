"""The queue runner as the studio starts it: a real detached process training the tiny demo, one
run at a time, surviving its own death (``trainer.jobs.queue_runner``)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from jobs_support import fresh_settings, wait_for

from trainer.config.io import load_config
from trainer.files import read_json
from trainer.jobs.folder import job_alive, job_folder
from trainer.jobs.launch import ROOT
from trainer.jobs.queue import cancel, claim_next, enqueue, entries, queue_dir, update_entry
from trainer.jobs.queue_runner import (
    INTERRUPTED,
    RUNNER_FILE,
    ensure_runner,
    request_stop,
    run_queue,
    runner_alive,
    runner_command,
    runner_env,
)
from trainer.settings import StudioSettings
from trainer.tracking.job_file import read_job, write_job
from trainer.tracking.new_run import create_run
from trainer.tracking.records import get_run_record

DEMO = ROOT / "presets" / "demo_sd15.yaml"
RUN_TIMEOUT_S = 240.0  # two tiny 3-step runs took ~30 s on a quiet 2-core machine


@pytest.fixture()
def settings(tmp_path: Path, demo_home: Path, monkeypatch: pytest.MonkeyPatch):
    settings = fresh_settings(tmp_path, demo_home, monkeypatch)
    yield settings
    _kill_runner(settings)
    for job_file in settings.jobs_dir.glob("*/job.json"):
        job = read_job(job_file.parent)
        if job_alive(job):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(job.pid, signal.SIGKILL)


def _runner_pid(settings: StudioSettings) -> int | None:
    info = read_json(queue_dir(settings) / RUNNER_FILE) or {}
    return info.get("pid")


def _kill_runner(settings: StudioSettings) -> None:
    pid = _runner_pid(settings)
    if pid and runner_alive(settings):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def tiny():
    return load_config(DEMO, ["train.steps=3", "sample.sample_every=0", "save.save_every=1000"])


@pytest.mark.slow
def test_the_runner_trains_the_queue_in_order_and_survives_being_killed(
    settings: StudioSettings,
) -> None:
    first = enqueue(settings, tiny(), "q_first", group="sweep-1", tags={"sweep.lr": "1e-3"})
    second = enqueue(settings, tiny(), "q_second", group="sweep-1", tags={"sweep.lr": "5e-4"})
    dropped = enqueue(settings, tiny(), "q_dropped")
    cancel(settings, dropped.id)

    assert ensure_runner(settings, idle_exit_s=3)
    wait_for(lambda: runner_alive(settings), 60, "the runner to take its lock")
    assert not ensure_runner(settings, idle_exit_s=3)  # one runner per home
    # A second runner started by hand finds the lock held and does nothing.
    again = subprocess.run(
        runner_command(settings, idle_exit_s=3),
        env=runner_env(settings),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0 and "already serves" in again.stdout, again.stdout

    def launched() -> str | None:
        return next(e.run_id for e in entries(settings) if e.id == first.id)

    run_1 = wait_for(launched, RUN_TIMEOUT_S, "the first entry's launch")
    assert [e.state for e in entries(settings)] == ["running", "queued", "cancelled"]
    # The runner dies mid-run (SIGKILL: no clean-up); its trainer, in a session of its own,
    # keeps training, and a new runner (the studio restarted) takes the queue over.
    runner_pid = _runner_pid(settings)
    os.kill(runner_pid, signal.SIGKILL)
    wait_for(lambda: not runner_alive(settings), 30, "the killed runner's lock to go")
    assert job_alive(read_job(job_folder(settings, run_1)))
    assert entries(settings)[0].state == "running"
    assert ensure_runner(settings, idle_exit_s=3)

    def both_ended() -> bool:
        return all(e.state in ("done", "failed") for e in entries(settings)[:2])

    wait_for(both_ended, RUN_TIMEOUT_S, "both entries to end", every=1)
    done = entries(settings)
    assert [(e.name, e.state) for e in done] == [
        ("q_first", "done"),
        ("q_second", "done"),
        ("q_dropped", "cancelled"),
    ], [(e.name, e.state, e.message) for e in done]
    assert done[0].run_id == run_1 and done[1].run_id and done[2].run_id is None
    assert done[0].outcome == done[1].outcome == "FINISHED"
    assert done[0].ended_at <= done[1].started_at

    one = get_run_record(settings.tracking_uri, run_1)
    two = get_run_record(settings.tracking_uri, done[1].run_id)
    assert one.status == two.status == "FINISHED"
    assert one.name == "q_first" and two.name == "q_second"
    assert one.end_time <= two.start_time  # one at a time, in queue order
    for record, entry, lr in ((one, first, "1e-3"), (two, second, "5e-4")):
        assert record.tags["studio.group"] == "sweep-1"
        assert record.tags["sweep.lr"] == lr
        assert record.tags["studio.queue_entry"] == entry.id
        assert record.tags["studio.launched_from"] == "queue"
        assert record.params["train.steps"] == "3"
    # With nothing left the runner exits by itself, and tidies up.
    wait_for(lambda: not runner_alive(settings), 60, "the idle runner to exit")
    assert not (queue_dir(settings) / RUNNER_FILE).exists()
    assert "already serves" not in (queue_dir(settings) / "runner.log").read_text()
    assert not ensure_runner(settings)  # nothing queued: nothing to start


def test_an_entry_whose_trainer_died_with_the_runner_is_marked_interrupted(
    settings: StudioSettings,
) -> None:
    """The runner and its trainer were both killed (a reboot): the next runner closes the
    MLflow run FAILED and marks the entry failed, interrupted; no trainer runs here."""
    entry = enqueue(settings, tiny(), "q_lost")
    claim_next(settings)
    run_id = create_run(settings, entry.training_config(), {"studio.queue_entry": entry.id})
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    folder = job_folder(settings, run_id)
    folder.mkdir(parents=True)
    write_job(folder, gone.pid, run_id, time.time(), ["x"], folder / "config.yaml", device="cpu")
    update_entry(settings, entry.id, run_id=run_id)

    assert run_queue(settings, idle_exit_s=0, poll_s=0.05) == 0
    [ended] = entries(settings)
    assert ended.state == "failed" and ended.outcome == "FAILED"
    assert ended.message.startswith(INTERRUPTED), ended.message
    record = get_run_record(settings.tracking_uri, run_id)
    assert record.status == "FAILED" and "disappeared" in record.note
    assert not runner_alive(settings)


def test_an_entry_claimed_but_never_launched_goes_back_in_line(settings: StudioSettings) -> None:
    """Killed between taking an entry and creating its run: the entry is queued again, not lost;
    a busy device holds it back; a stop file ends the runner."""
    enqueue(settings, tiny(), "q_again")
    claim_next(settings)
    folder = settings.jobs_dir / "busy"  # a live trainer on the CPU: this process stands in
    folder.mkdir(parents=True)
    write_job(folder, os.getpid(), "busy", time.time(), ["x"], folder / "c", device="cpu")
    runner = threading.Thread(target=run_queue, args=(settings,), kwargs={"poll_s": 0.05})
    runner.start()
    try:
        wait_for(lambda: entries(settings)[0].state == "queued", 60, "the entry to be queued again")
        assert runner_alive(settings)
        time.sleep(0.5)  # it waits for the device, launching nothing
        assert [p.name for p in settings.jobs_dir.iterdir()] == ["busy"]
    finally:
        request_stop(settings)
        runner.join(timeout=60)
    assert not runner.is_alive() and not runner_alive(settings)
    [again] = entries(settings)
    assert again.state == "queued" and again.started_at is None and again.run_id is None
    assert not (queue_dir(settings) / "stop").exists()
