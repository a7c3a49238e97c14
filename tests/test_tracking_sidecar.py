"""MLflow out of the training process (issue 18): ``TrackerProcess`` runs the real ``MlflowTracker``
in a child process against a real SQLite store, in order, with a failed start, a SIGKILLed
trainer and a stop signal to the process group handled as the trainer needs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from jobs_support import wait_for
from mlflow import MlflowClient

from trainer.config.io import load_config
from trainer.tracking.layout import TAG_NOTE, TAG_PID
from trainer.tracking.sidecar import (
    IN_PROCESS_ENV,
    TrackerProcess,
    TrackingError,
    error_from_child,
    portable_error,
    use_tracking_process,
)
from trainer.tracking.sidecar_child import ORPHANED_NOTE
from trainer.tracking.startup import TRACKING_READY, read_startup

ROOT = Path(__file__).resolve().parent.parent
PRESET = ROOT / "presets" / "demo_sd15.yaml"
pytestmark = pytest.mark.slow  # each test starts a process that imports mlflow (~3 CPU-s)


def _config(name: str = "sidecar"):
    return load_config(PRESET, [f"logging.run_name={name}", "logging.log_system_metrics=false"])


@pytest.fixture()
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def _child_env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("MLFLOW_RUN_ID", None)
    return env


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# ------------------------------------------------------------------------------ recording
def test_calls_reach_the_run_in_order_and_answers_come_back(store: str, tmp_path: Path) -> None:
    from PIL import Image

    ready: list[float] = []
    tracker = TrackerProcess(store, on_ready=lambda: ready.append(time.monotonic()))
    assert tracker.start(_config(), tags={"studio.resumed": "False"}) is None  # store makes it
    assert tracker.process is not None and tracker.process.poll() is None
    # Before the run is ready nothing waits: metrics are sent, params answered "none refused".
    for step in range(1, 6):
        tracker.log_metrics({"loss": 1.0 / step, "lr": 0.1 * step}, step=step)
    assert tracker.log_params({"effective_batch_size": 2}) == []
    run_id = tracker.wait_started()
    assert tracker.ready and tracker.run_id == run_id and len(ready) == 1
    # Once ready, log_params waits for the child's answer: a changed value is refused.
    assert tracker.log_params({"effective_batch_size": 3, "fresh": "x"}) == ["effective_batch_size"]
    for step in range(6, 11):
        tracker.log_metrics({"loss": 1.0 / step, "lr": 0.1 * step}, step=step)
    tracker.set_tags({"custom.tag": "yes"})
    tracker.log_text("hello", "notes/hello.txt")
    lora = tmp_path / "demo.safetensors"
    lora.write_bytes(b"not really a LoRA")
    tracker.log_artifact(lora, "lora")
    tracker.log_image(Image.new("RGB", (8, 8), "red"), "sample 0", 10, {"prompt": "sks red"})
    tracker.log_dataset_input("0:demo", "abcdef0123456789", "/data/demo", {"images": 12})
    tracker.unlogged.folder = tmp_path  # forwarded; never raises
    tracker.flush(wait=True)  # returns once everything before it is written

    client = MlflowClient(store)
    history = client.get_metric_history(run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(s, 1.0 / s) for s in range(1, 11)]
    run = client.get_run(run_id)
    assert run.info.status == "RUNNING"
    assert run.data.params["effective_batch_size"] == "2" and run.data.params["fresh"] == "x"
    assert run.data.tags["custom.tag"] == "yes" and run.data.tags["studio.resumed"] == "False"
    assert run.data.tags[TAG_PID] == str(os.getpid())  # the trainer's pid, not the child's
    assert run.data.tags["mlflow.runName"] == "sidecar"
    artifacts = {a.path for a in client.list_artifacts(run_id, "lora")}
    assert artifacts == {"lora/demo.safetensors"}
    assert client.download_artifacts(run_id, "notes/hello.txt", str(tmp_path / "dl")).endswith(
        "hello.txt"
    )
    samples = {a.path for a in client.list_artifacts(run_id, "samples")}
    assert samples == {"samples/step_000010.json"}
    assert [d.dataset.name for d in run.inputs.dataset_inputs] == ["0:demo"]

    # A fire-and-forget call that fails in the child is raised by the next call, once.
    tracker.log_metrics({"loss": "not a number"}, step=11)  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="could not convert string to float"):
        # The child answers in order: the failure arrives before flush's answer, so flush
        # raises it (when it had arrived before flush was called) or the next call does.
        tracker.flush(wait=True)
        tracker.set_tags({"after": "the failure"})
    tracker.set_tags({"after": "the failure"})  # raised once only

    tracker.set_description("stopped by the test")
    tracker.end("KILLED")
    assert tracker.process.returncode == 0  # the child exited with the end
    run = client.get_run(run_id)
    assert run.info.status == "KILLED" and run.data.tags[TAG_NOTE] == "stopped by the test"
    tracker.log_metrics({"loss": 0.0}, step=12)  # after the end: nothing, no error
    tracker.end("FINISHED")
    assert client.get_run(run_id).info.status == "KILLED"


def test_a_failed_start_raises_the_stores_message_and_the_failure_path_stays_quiet(
    store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = "0" * 32
    monkeypatch.setenv("MLFLOW_RUN_ID", missing)  # a run the store does not hold
    tracker = TrackerProcess(store)
    assert tracker.start(_config()) == missing  # known up front: nothing waits
    assert tracker.run_id == missing
    tracker.log_metrics({"loss": 1.0}, step=1)  # sent before the failure is known: dropped
    with pytest.raises(TrackingError, match=f"Run with id={missing} not found") as raised:
        tracker.wait_started()
    assert type(raised.value).__name__ == "MlflowException"  # the note reads as in-process
    with pytest.raises(TrackingError, match="not found"):
        tracker.log_metrics({"loss": 1.0}, step=2)
    with pytest.raises(TrackingError, match="not found"):  # every later call, not only the first
        tracker.flush(wait=True)
    tracker.set_description("Run failed")  # what the failure path calls: no second error
    tracker.end("FAILED")
    assert tracker.process.returncode == 0
    assert MlflowClient(store).search_experiments()  # the store opened; no run was made


def test_a_tracking_process_that_dies_fails_the_run_and_the_failure_path_stays_quiet(
    store: str,
) -> None:
    tracker = TrackerProcess(store)
    tracker.start(_config())
    assert tracker.process is not None
    tracker.process.kill()  # before it made a run (killed while it imports mlflow)
    with pytest.raises(TrackingError, match=r"ended unexpectedly \(exit code -9\)"):
        tracker.wait_started()
    assert tracker.run_id is None
    with pytest.raises(TrackingError, match="ended unexpectedly"):
        tracker.log_metrics({"loss": 1.0}, step=1)
    tracker.set_description("Run failed")
    tracker.end("FAILED")  # nothing to end, nothing raised


def test_errors_travel_as_themselves_when_they_can() -> None:
    own = portable_error(ValueError("run x is deleted"))
    assert isinstance(error_from_child(own), ValueError)
    assert str(error_from_child(own)) == "run x is deleted"

    class Foreign(Exception):  # a type the trainer must not import to unpickle (mlflow's)
        pass

    Foreign.__module__ = "mlflow.exceptions"
    sent = portable_error(Foreign("store said no"))
    assert sent[0] is None
    rebuilt = error_from_child(sent)
    assert isinstance(rebuilt, TrackingError) and type(rebuilt).__name__ == "Foreign"
    assert str(rebuilt) == "store said no"


def test_the_cli_alone_asks_for_the_process_and_the_env_var_overrides_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(IN_PROCESS_ENV, raising=False)
    assert use_tracking_process(True) and not use_tracking_process(False)
    monkeypatch.setenv(IN_PROCESS_ENV, "1")
    assert not use_tracking_process(True)


# ------------------------------------------------------------------------- signals, death
_TRAINER_SCRIPT = """
import os, signal, sys, time
from trainer.config.io import load_config
from trainer.tracking.sidecar import TrackerProcess

mode, uri, preset = sys.argv[1], sys.argv[2], sys.argv[3]
stopped = []
signal.signal(signal.SIGTERM, lambda *_: stopped.append(True))
cfg = load_config(preset, ["logging.run_name=" + mode, "logging.log_system_metrics=false"])
tracker = TrackerProcess(uri)
tracker.start(cfg)
for step in (1, 2, 3):
    tracker.log_metrics({"loss": float(step)}, step=step)
print(tracker.wait_started(), tracker.process.pid, flush=True)
if mode == "sigkill":
    tracker.flush(wait=True)
    tracker.log_metrics({"loss": 4.0}, step=4)  # sent, not flushed: the child writes it
    time.sleep(0.5)
    os.kill(os.getpid(), signal.SIGKILL)
deadline = time.monotonic() + 120
while not stopped and time.monotonic() < deadline:
    time.sleep(0.05)
tracker.log_metrics({"loss": 4.0}, step=4)  # the child is still there after the SIGTERM
tracker.end("KILLED")
print("ended", tracker.process.returncode, flush=True)
"""


def _start_trainer(tmp_path: Path, mode: str, uri: str) -> tuple[subprocess.Popen, str, int]:
    script = tmp_path / "trainer_script.py"
    script.write_text(textwrap.dedent(_TRAINER_SCRIPT))
    proc = subprocess.Popen(
        [sys.executable, str(script), mode, uri, str(PRESET)],
        cwd=ROOT,
        env=_child_env(),
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as the studio starts a trainer
    )
    assert proc.stdout is not None
    first = proc.stdout.readline().split()
    assert len(first) == 2, f"the script did not start its run (exit {proc.poll()})"
    return proc, first[0], int(first[1])


def test_a_sigkilled_trainer_leaves_its_run_failed_and_no_process(
    store: str, tmp_path: Path
) -> None:
    proc, run_id, child_pid = _start_trainer(tmp_path, "sigkill", store)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    client = MlflowClient(store)
    wait_for(lambda: not _alive(child_pid), 30, "the tracking process to exit")
    run = client.get_run(run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags[TAG_NOTE] == ORPHANED_NOTE
    steps = [(m.step, m.value) for m in client.get_metric_history(run_id, "loss")]
    assert steps == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0)]  # what it had was written


def test_the_tracking_process_ignores_a_sigterm_to_the_process_group(
    store: str, tmp_path: Path
) -> None:
    proc, run_id, child_pid = _start_trainer(tmp_path, "sigterm", store)
    try:
        os.killpg(proc.pid, signal.SIGTERM)  # what a stop sends: the trainer and its child
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and out.split() == ["ended", "0"]
    assert not _alive(child_pid)
    client = MlflowClient(store)
    assert client.get_run(run_id).info.status == "KILLED"  # as the trainer decided
    steps = [m.step for m in client.get_metric_history(run_id, "loss")]
    assert steps == [1, 2, 3, 4]  # step 4 was logged after the signal


# --------------------------------------------------------------------------------- the CLI
def test_the_cli_tracks_its_run_in_a_child_process(demo_home: Path, tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    job = tmp_path / "job"
    env = {**os.environ, "STUDIO_HOME": str(demo_home), "MLFLOW_TRACKING_URI": uri}
    env.pop("MLFLOW_RUN_ID", None)
    env.pop(IN_PROCESS_ENV, None)
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "trainer", "run", str(PRESET), "--job-dir", str(job)),
            *("--set", "train.steps=4", "--set", "logging.log_every=1"),
            *("--set", "sample.sample_every=0", "--set", "logging.run_name=cli_sidecar"),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert "MLflow tracking process done:" in err  # the child ran, said its usage, exited

    client = MlflowClient(uri)
    [run] = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        filter_string="tags.mlflow.runName = 'cli_sidecar'",
    )
    assert run.info.status == "FINISHED"
    assert run.data.tags[TAG_PID] == str(proc.pid)  # dead-run detection watches the trainer
    assert run.data.params["total_steps"] == "4" and "effective_batch_size" in run.data.params
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "loss")]
    assert steps == [1, 2, 3, 4]
    lora = {a.path for a in client.list_artifacts(run.info.run_id, "lora")}
    assert "lora/demo_sd15.safetensors" in lora
    found = read_startup(job)
    assert found is not None and TRACKING_READY in found["other"]
    assert found["other"][TRACKING_READY] > 0
