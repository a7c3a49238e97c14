"""Served beyond loopback, the queue takes no config that Launch would refuse (issue 16's rule
applied to issue 17's queue): "Add to queue" and "Queue N variants" on Review say Launch's refusal
for a config that reads outside the allowed roots, and queue nothing. On loopback the same draft is
queued as ever. AppTest; ``ensure_runner`` is replaced by a recorder (no process runs)."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit import config
from streamlit.testing.v1 import AppTest
from ui_support import open_page

import ui.queue_panel
import ui.sweep_form
from trainer.jobs.queue import entries, has_work
from trainer.settings import StudioSettings, load_settings

OUTSIDE = "is outside the folders this studio may read"
SWEEP = "rv:sweep"


@pytest.fixture()
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> StudioSettings:
    monkeypatch.setenv("STUDIO_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("STUDIO_ALLOWED_FOLDERS", raising=False)
    monkeypatch.delenv("STUDIO_HOST", raising=False)
    return load_settings()


@pytest.fixture()
def runner_starts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Who asked for a runner while the queue had work (the router asks on every page)."""
    started: list[str] = []

    def recorder(who: str):
        def ensure_runner(settings: StudioSettings) -> bool:
            if has_work(settings):
                started.append(who)
            return False

        return ensure_runner

    monkeypatch.setattr(ui.queue_panel, "ensure_runner", recorder("panel"))
    monkeypatch.setattr(ui.queue_panel, "_last_resume", {})
    monkeypatch.setattr(ui.queue_panel, "RESUME_EVERY_S", 1e9)  # the router asks once, not per run
    monkeypatch.setattr(ui.sweep_form, "ensure_runner", recorder("sweep"))
    return started


def _review_reading(folder: str) -> AppTest:
    """Review with a draft whose mask folder is ``folder``: the advisor does not look at masks,
    so Launch and Add to queue stay unlocked and the launch check is what must refuse."""
    at = open_page("pages/review.py")
    at.session_state["draft"]["datasets"][0]["mask_path"] = folder
    at.session_state["draft_rev"] = 99
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.button(key="rv:queue").disabled and not at.button(key="rv:launch").disabled
    return at


def _errors(at: AppTest, prefix: str) -> list[str]:
    return [str(e.value).removeprefix(prefix) for e in at.error if str(e.value).startswith(prefix)]


def test_served_to_a_network_a_config_reading_outside_the_roots_is_not_queued(
    settings: StudioSettings, served_publicly: None, runner_starts: list[str]
) -> None:
    at = _review_reading("/etc")
    at.button(key="rv:launch").click().run()
    [launch_said] = _errors(at, "**Not launched:** ")
    assert launch_said.startswith(f"datasets.0.mask_path: /etc {OUTSIDE}"), launch_said

    at.button(key="rv:queue").click().run()
    assert not at.exception
    assert _errors(at, "**Not queued:** ") == [launch_said]  # Launch's words, word for word
    assert entries(settings) == [] and runner_starts == []

    sweep = at.button(key=f"{SWEEP}:queue")
    assert sweep.label == "Queue 3 variants" and not sweep.disabled
    sweep.click().run()
    assert not at.exception
    assert launch_said in _errors(at, "**Not queued:** ")
    assert entries(settings) == [] and runner_starts == []  # no variant, not the first either
    assert not any("Queued" in str(s.value) for s in at.success)


def test_on_loopback_the_same_draft_is_queued(
    settings: StudioSettings, runner_starts: list[str]
) -> None:
    assert config.get_option("server.address") == "127.0.0.1"  # .streamlit/config.toml
    at = _review_reading("/etc")
    at.button(key="rv:queue").click().run()
    at.button(key=f"{SWEEP}:queue").click().run()
    assert not at.exception and not _errors(at, "**Not queued:** ")
    queued = entries(settings)
    assert len(queued) == 4 and {e.config["datasets"][0]["mask_path"] for e in queued} == {"/etc"}
    assert runner_starts == ["panel", "sweep"]
