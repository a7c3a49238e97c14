"""The monitor page and the sidebar's active run in AppTest, on real demo runs."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from jobs_support import make_home, wait_for
from mlflow import MlflowClient
from streamlit.testing.v1 import AppTest

from trainer.config.io import load_config
from trainer.jobs.control import stop, wait_for_exit
from trainer.jobs.folder import job_alive, job_folder, log_tail
from trainer.jobs.launch import launch
from trainer.settings import StudioSettings, load_settings
from trainer.tracking.job_file import read_job, write_job
from trainer.tracking.progress import read_progress, write_progress
from trainer.tracking.records import get_run_record

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "presets" / "demo_sd15.yaml"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory, demo_home: Path) -> Path:
    return make_home(tmp_path_factory.mktemp("monitor"), demo_home)


@pytest.fixture()
def settings(home: Path, monkeypatch: pytest.MonkeyPatch) -> StudioSettings:
    monkeypatch.setenv("STUDIO_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    return load_settings()


@pytest.fixture(scope="module")
def finished_run(home: Path) -> str:
    settings = load_settings(home=home, tracking_uri_override=None)
    job = launch(settings, load_config(DEMO, ["logging.run_name=monitor_done"]))
    assert job.process.wait(timeout=240) == 0, log_tail(job.job_dir)
    return job.run_id


def monitor(run_id: str | None) -> AppTest:
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=60)
    if run_id:
        at.session_state["monitor_run_id"] = run_id
    at.switch_page("pages/monitor.py")
    return at


def texts(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption]
    parts += [h.value for h in at.subheader]
    parts += [str(m.value) + " " + m.label for m in at.metric]
    return "\n".join(parts)


def chart_data(chart):
    import pyarrow as pa

    return pa.ipc.open_stream(chart.proto.datasets[0].data.data).read_all().to_pydict()


def test_an_empty_studio_says_how_to_start(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("STUDIO_HOME", str(tmp_path / "empty"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    at = monitor(None).run()
    assert not at.exception
    assert any("No runs yet" in i.value for i in at.info)
    assert not (tmp_path / "empty" / "mlflow.db").exists()  # looking creates no store


def test_a_finished_run_shows_progress_charts_samples_log_and_lora(
    settings: StudioSettings, finished_run: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = monitor(finished_run).run()
    assert not at.exception, at.exception
    assert at.selectbox(key="run").value == finished_run
    text = texts(at)
    assert "monitor_done" in text and "**Status:** :material/check_circle: finished" in text
    assert "Step 30 / 30" in at.get("progress")[0].proto.text
    assert "30 / 30" in text
    charts = at.get("arrow_vega_lite_chart") or at.get("vega_lite_chart")
    assert len(charts) == 2  # loss (raw + smoothed) and learning rate
    assert '"Loss"' in charts[0].proto.spec and "strokeDash" in charts[0].proto.spec
    assert set(chart_data(charts[0])["series"]) == {"raw", "smoothed"}
    assert chart_data(charts[0])["series"].count("raw") == 30  # a point per step
    assert '"Learning rate"' in charts[1].proto.spec
    assert len(at.get("image")) == 8  # 2 prompts at steps 0, 10, 20 and 30
    assert "Samples at step 30" in text
    assert any("noise by design" in i.value for i in at.info)  # the tiny random demo model
    assert "Finished 30 steps" in at.code[0].value  # the log tail
    assert "demo_sd15.safetensors" in text
    assert at.get("download_button")
    # Open in MLflow UI: the same button as on Compare; it starts (here: is given) the UI first.
    monkeypatch.setattr(
        "ui.mlflow_ui.ensure_server", lambda settings: ("http://127.0.0.1:5999", True)
    )
    at.button(key="mon:mlflow").click().run()
    link = at.get("link_button")[0].proto.url
    assert link.startswith("http://127.0.0.1:5999/#/experiments/")
    assert link.endswith(f"/runs/{finished_run}?workflowType=machine_learning")
    assert f"stop_{finished_run}" not in [b.key for b in at.button]
    assert f"resume_{finished_run}" not in [b.key for b in at.button]  # finished: nothing to resume
    # AppTest drops the sidebar after switch_page, so the frame is checked on the home page.
    home = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=60).run()
    assert "No run is training now." in [c.value for c in home.sidebar.caption]


def test_a_running_run_has_stop_then_resume(settings: StudioSettings, finished_run: str) -> None:
    cfg = load_config(
        DEMO,
        ["train.steps=200", "sample.sample_every=0", "logging.run_name=monitor_live"],
    )
    job = launch(settings, cfg)
    try:
        wait_for(lambda: ((read_progress(job.job_dir) or {}).get("step") or 0) >= 2, 180, "step 2")
        at = monitor(job.run_id).run()
        assert not at.exception, at.exception
        text = texts(at)
        assert "**Status:** :material/play_circle: running" in text and "Training" in text
        assert at.button(key=f"stop_{job.run_id}")
        frame = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=60).run()
        assert frame.sidebar.button(key=f"sidebar_stop_{job.run_id}")  # the active run
        assert "monitor_live" in " ".join(m.value for m in frame.sidebar.markdown)
        assert "step" in frame.sidebar.get("progress")[0].proto.text
        assert "monitor_live" in text and "ETA" in text

        at.button(key=f"stop_{job.run_id}").click().run()
        assert not at.exception
        assert job.process.wait(timeout=30) == 3
        at.run()
        assert get_run_record(settings.tracking_uri, job.run_id).status == "KILLED"
        assert "**Status:** :material/stop_circle: stopped" in texts(at)
        # the stop's note: where, and how to resume
        assert any("Stopped at step" in i.value for i in at.info)
        # No final LoRA yet: the newest checkpoint can be one now, and Resume still trains on.
        offer = [b for b in at.button if b.key.startswith(f"ckpt_final_{job.run_id}_")]
        assert len(offer) == 1 and "**Your LoRA**" not in texts(at)
        offer[0].click().run()
        assert not at.exception, at.exception
        assert "**Your LoRA**" in texts(at) and at.get("download_button")
        assert list((job.job_dir / "lora").glob("*.safetensors"))  # the final, in the job folder
        assert not [b for b in at.button if b.key.startswith("ckpt_final_")]
        resume = at.button(key=f"resume_{job.run_id}")
        assert not resume.disabled
        resume.click().run()
        assert not at.exception
        relaunched = read_job(job.job_dir)
        assert relaunched.pid != job.pid and job_alive(relaunched)
        shown = texts(at)  # the page re-rendered after the click
        assert not any("Stopped at step" in i.value for i in at.info)  # gone once resumed
        assert "**Status:** :material/sync: resuming" in shown and (
            "Starting the trainer" in shown or "Loading" in shown
        )
        wait_for(
            lambda: get_run_record(settings.tracking_uri, job.run_id).status == "RUNNING",
            120,
            "the resumed trainer to attach to the run",
        )
    finally:
        stop(settings, job.run_id, force=True)
        wait_for_exit(settings, job.run_id, timeout=20)


def test_a_dead_trainer_is_reconciled_when_the_monitor_loads(settings: StudioSettings) -> None:
    import os
    import signal

    # No checkpoint before the kill however fast the machine trains: the first save is far away.
    cfg = load_config(
        DEMO, ["train.steps=200", "save.save_every=1000", "logging.run_name=monitor_dead"]
    )
    job = launch(settings, cfg)
    wait_for(lambda: ((read_progress(job.job_dir) or {}).get("step") or 0) >= 1, 180, "step 1")
    os.killpg(job.pid, signal.SIGKILL)
    job.process.wait(timeout=10)
    at = monitor(job.run_id).run()
    assert not at.exception
    assert get_run_record(settings.tracking_uri, job.run_id).status == "FAILED"
    assert any("killed" in e.value.lower() for e in at.error)
    assert at.button(key=f"resume_{job.run_id}").disabled  # killed before its first checkpoint
    assert "No checkpoint was saved" in texts(at)


def test_a_stale_run_label_from_the_browser_still_picks_its_run(
    settings: StudioSettings, finished_run: str
) -> None:
    # A browser sends a select box's value as the label it showed; a run's label changes with
    # its status (running -> finished), so an old label must still mean the same run.
    at = monitor(None)
    at.session_state["run"] = f"monitor_done · running · 2026-01-01 00:00 · {finished_run[:8]}"
    at.run()
    assert not at.exception, at.exception
    assert at.selectbox(key="run").value == finished_run
    assert "monitor_done" in texts(at) and ":material/check_circle: finished" in texts(at)


def test_total_steps_are_known_before_the_trainer_reports_them(tmp_path: Path) -> None:
    from ui.monitor import RunView

    def view(progress: dict) -> RunView:
        return RunView(
            "r1",
            "my_lora",
            "RUNNING",
            "0",
            "",
            {},
            None,
            tmp_path,
            None,
            True,
            progress,
            None,
            None,
        )

    assert view({}).total_steps is None  # no config, no progress: unknown
    (tmp_path / "config.yaml").write_text("train:\n  steps: 30\n", encoding="utf-8")
    assert view({}).total_steps == 30  # from the launched config while the model loads
    assert view({"total_steps": 12}).total_steps == 12  # the trainer's own word wins


# ---------------------------------------------------------------- phases, a clean end, the demo
@contextmanager
def fake_trainer(settings: StudioSettings, finished_run: str, progress: dict, model: str):
    """An MLflow run still RUNNING with a live 'trainer' (a sleeping process of this test) and
    the given progress file; removed afterwards, so the other tests see no active run."""
    client = MlflowClient(settings.tracking_uri)
    experiment = client.get_run(finished_run).info.experiment_id
    run_id = client.create_run(experiment, run_name="monitor_fake").info.run_id
    folder = job_folder(settings, run_id)
    folder.mkdir(parents=True)
    config = folder / "config.yaml"
    config.write_text(f"model:\n  name_or_path: '{model}'\ntrain:\n  steps: 30\n")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    try:
        write_job(folder, sleeper.pid, run_id, time.time() - 5, ["trainer"], config, device="x")
        write_progress(folder, progress)
        yield run_id
    finally:
        sleeper.kill()
        sleeper.wait(timeout=10)
        shutil.rmtree(folder)
        client.delete_run(run_id)


def test_a_phase_shows_its_own_progress_and_the_time_left(
    settings: StudioSettings, finished_run: str
) -> None:
    progress = {
        "phase": "sampling",
        "step": 0,
        "total_steps": 30,
        "phase_done": 1,
        "phase_total": 3,
        "eta_s": 95.0,
    }
    with fake_trainer(settings, finished_run, progress, "some-org/real-sd15") as run_id:
        at = monitor(run_id).run()
        assert not at.exception, at.exception
        bar = at.get("progress")[0].proto.text
        assert bar == "Step 0 / 30 · Making baseline previews (before training): image 2 of 3"
        eta = next(m for m in at.metric if m.label == "ETA")
        assert eta.value.startswith("1 min 3")  # 95 s, counted down since the write
        assert "**Status:** :material/play_circle: running" in texts(at)
        assert at.button(key=f"stop_{run_id}")
        assert not [i for i in at.info if "noise" in i.value]  # a real base model: no demo note
        frame = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=60).run()
        side = frame.sidebar.get("progress")[0].proto.text  # the sidebar words it the same way
        assert side.startswith("step 0 / 30 · Making baseline previews (before training)")
        assert "image 2 of 3" in side and " · ETA 1 min" in side
        assert frame.sidebar.button(key=f"sidebar_stop_{run_id}")


def test_an_ended_run_shows_no_stop_and_no_running_while_its_trainer_exits(
    settings: StudioSettings, finished_run: str
) -> None:
    # The trainer has written 'finished' and is closing the MLflow run (still RUNNING there).
    progress = {"phase": "finished", "step": 30, "total_steps": 30, "eta_s": 0}
    with fake_trainer(settings, finished_run, progress, "demo:sd15") as run_id:
        at = monitor(run_id).run()
        assert not at.exception, at.exception
        text = texts(at)
        assert "**Status:** :material/check_circle: finished" in text
        assert "running" not in text.lower()
        assert f"stop_{run_id}" not in [b.key for b in at.button]
        assert "monitor_fake · finished ·" in at.selectbox(key="run").options[0]
        assert next(m for m in at.metric if m.label == "ETA").value == "done"
        assert at.get("progress")[0].proto.text == "Step 30 / 30 · Finished"
        assert any("noise by design" in i.value for i in at.info)  # the demo model
        frame = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=60).run()
        assert f"sidebar_stop_{run_id}" not in [b.key for b in frame.sidebar.button]
        assert frame.sidebar.get("progress")[0].proto.text == "step 30 / 30 · Finished"


def test_before_the_trainer_measures_the_eta_is_the_whole_run_prediction_counting_down(
    settings: StudioSettings, finished_run: str
) -> None:
    from trainer.tracking.layout import TAG_PREDICTED, TAG_PREDICTED_TOTAL

    loading = {"phase": "loading", "step": 0, "total_steps": 30}
    with fake_trainer(settings, finished_run, loading, "demo:sd15") as run_id:
        client = MlflowClient(settings.tracking_uri)
        client.set_tag(run_id, TAG_PREDICTED, "0.097")  # what launch records
        client.set_tag(run_id, TAG_PREDICTED_TOTAL, "123")
        at = monitor(run_id).run()
        assert not at.exception, at.exception
        eta = next(m for m in at.metric if m.label == "ETA (predicted)")
        # 123 s predicted for the whole run, launched 5 s ago: not "≈ 3 s" for 30 steps alone
        assert eta.value.startswith("≈ 1 min 5"), eta.value
        assert "Predicted, not measured yet" in eta.help and "whole run" in eta.help
        measured = {
            **loading,
            "phase": "training",
            "step": 5,
            "s_per_step": 4.092,
            "eta_s": 100.0,
            "updated": time.time(),
        }
        write_progress(job_folder(settings, run_id), measured)
        at.run()
        assert not at.exception, at.exception
        assert next(m for m in at.metric if m.label == "ETA").value.startswith("1 min ")  # 100 s
        speed = next(m for m in at.metric if m.label == "s / step")
        assert speed.value == "4.092 s" and speed.delta == "+4119%"  # short: never cut off
        assert "prediction at launch: 0.097 s per step" in speed.help


def test_mlflow_links_show_at_once_when_the_studios_mlflow_ui_runs(
    settings: StudioSettings, finished_run: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ui import mlflow_ui

    monkeypatch.setattr(mlflow_ui, "running_server", lambda s: "http://127.0.0.1:5998")
    started = []
    monkeypatch.setattr(mlflow_ui, "ensure_server", lambda s: started.append(s))
    at = monitor(finished_run).run()
    assert not at.exception, at.exception
    assert "mon:mlflow" not in [b.key for b in at.button]  # nothing to start: no button
    links = [b.proto.url for b in at.get("link_button")]
    assert any(u.startswith("http://127.0.0.1:5998/#/experiments/") for u in links), links
    assert any("MLflow's own UI (http://127.0.0.1:5998)" in c.value for c in at.caption)
    assert not started


def test_a_new_launch_refreshes_the_cached_samples(tmp_path: Path) -> None:
    """The samples and LoRA lists are cached on the progress; a resumed launch is another key even
    where its counts match an earlier moment of the first launch (it showed step 20 at step 80)."""
    from trainer.tracking.job_file import JobInfo
    from ui.monitor import RunView, _marker

    def view(started: float) -> RunView:
        job = JobInfo("r1", 1, started, ["python"], "config.yaml")
        progress = {"samples": 4, "phase_done": 2}
        return RunView(
            "r1", "my_lora", "RUNNING", "0", "", {}, None, tmp_path, job, True, progress, None, None
        )

    assert _marker(view(100.0), "samples", "phase_done") == _marker(
        view(100.0), "samples", "phase_done"
    )
    assert _marker(view(100.0), "samples", "phase_done") != _marker(
        view(200.0), "samples", "phase_done"
    )
