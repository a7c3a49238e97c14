"""The monitor page and the sidebar's active run in AppTest, on real demo runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from jobs_support import make_home, wait_for
from streamlit.testing.v1 import AppTest

from trainer.config.io import load_config
from trainer.jobs.control import stop, wait_for_exit
from trainer.jobs.folder import job_alive, log_tail
from trainer.jobs.launch import launch
from trainer.settings import StudioSettings, load_settings
from trainer.tracking.job_file import read_job
from trainer.tracking.progress import read_progress
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
    assert '"Learning rate"' in charts[1].proto.spec
    assert len(at.get("image")) == 8  # 2 prompts at steps 0, 10, 20 and 30
    assert "Samples at step 30" in text
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
        resume = at.button(key=f"resume_{job.run_id}")
        assert not resume.disabled
        resume.click().run()
        assert not at.exception
        relaunched = read_job(job.job_dir)
        assert relaunched.pid != job.pid and job_alive(relaunched)
        shown = texts(at)  # the page re-rendered after the click
        assert "**Status:** :material/sync: resuming" in shown and (
            "Queued" in shown or "Loading" in shown
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
