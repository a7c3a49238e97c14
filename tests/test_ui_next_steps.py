"""The next step is always in sight (issue 15, item 9), in AppTest: Home's "Start here" (Preflight
until it is confirmed, then the wizard) and "Train the demo now"; Compare keeps the picked runs
when the user leaves the page and comes back. (The wizard's last step: test_ui_wizard.py; Launch
near the top of Review and its banner: test_ui_review.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from ui_support import draft, open_page

from trainer.config.schema import TrainingConfig
from trainer.demo.tiny import demo_is_built
from trainer.settings import load_settings
from trainer.tracking.mlflow_tracker import MlflowTracker
from trainer.tracking.new_run import create_run
from ui.status import PREFLIGHT_PAGE, WIZARD_PAGE, start_here


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("STUDIO_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path / "home"


def _titles(at: AppTest) -> list[str]:
    return [t.value for t in at.title]


# ------------------------------------------------------------------------------------ home
def test_start_here_is_preflight_until_it_is_confirmed_then_the_wizard() -> None:
    first, then = start_here(False), start_here(True)
    assert (first.label, first.page) == ("Preflight: check this machine →", PREFLIGHT_PAGE)
    assert (then.label, then.page) == ("Continue in the wizard →", WIZARD_PAGE)


def test_home_starts_a_newcomer_at_preflight(home: Path) -> None:
    at = open_page("pages/home.py")
    start = at.button(key="home:start")
    assert start.label == "Preflight: check this machine →" and start.proto.type == "primary"
    assert next(s.value for s in at.subheader).endswith("Start here")  # above the status
    assert at.button(key="home:demo").label == "Train the demo now"
    start.click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert _titles(at) == ["Preflight"]


def test_after_preflight_home_points_to_the_wizard(home: Path) -> None:
    at = open_page("pages/preflight.py")
    at.button(key="pf:confirm").click().run()
    assert at.session_state["draft_meta"]["preflight_done"] is True
    at.switch_page("pages/home.py").run()
    start = at.button(key="home:start")
    assert start.label == "Continue in the wizard →" and start.proto.type == "primary"
    # it would replace the draft: it asks first (tests/test_walk8_small.py)
    assert at.button(key="home:demo").label == "Start over with the demo"
    assert "Review and launch" in [p.proto.label for p in at.get("page_link")]
    start.click().run()
    assert _titles(at) == ["Wizard"]


def test_train_the_demo_now_fills_the_draft_and_opens_review_ready_to_launch(home: Path) -> None:
    at = open_page("pages/home.py")
    at.button(key="home:demo").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert _titles(at) == ["Review & launch"]
    data = draft(at)
    assert data["model"]["name_or_path"] == "demo:sd15"
    assert data["datasets"][0]["folder_path"] == "demo:dataset"
    meta = at.session_state["draft_meta"]
    assert meta["preflight_done"] is True and meta["recommendations"]  # preflight's defaults
    assert demo_is_built(home, "sd15") and demo_is_built(home, "dataset")
    assert not at.button(key="rv:launch").disabled  # one more click trains it


# --------------------------------------------------------------------------------- compare
@pytest.fixture()
def two_runs(home: Path) -> list[str]:
    home.mkdir(parents=True)
    settings = load_settings(home=home, tracking_uri_override=None)
    ids = []
    for lr in (1e-4, 3e-4):
        cfg = TrainingConfig.model_validate(
            {"train": {"lr": lr, "steps": 2}, "logging": {"log_system_metrics": False}}
        )
        run_id = create_run(settings, cfg)
        tracker = MlflowTracker(settings.tracking_uri, background=False)
        tracker.start(cfg, run_id=run_id)
        tracker.log_metrics({"loss": lr * 1000, "lr": lr}, 0)
        tracker.end("FINISHED")
        ids.append(run_id)
    return ids


def test_compare_keeps_the_picked_runs_across_page_switches(two_runs: list[str]) -> None:
    at = open_page("pages/compare.py")
    assert at.multiselect(key="cmp:picked").value == two_runs  # the latest two, older first
    picked = [two_runs[1], two_runs[0]]  # the order matters: the first is the baseline
    at.multiselect(key="cmp:picked").set_value(picked).run()
    assert "What changed" in [s.value for s in at.subheader]
    at.switch_page("pages/home.py").run()
    at.switch_page("pages/wizard.py").run()
    at.switch_page("pages/compare.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.multiselect(key="cmp:picked").value == picked
    assert "What changed" in [s.value for s in at.subheader]
    at.multiselect(key="cmp:picked").set_value([two_runs[0]]).run()  # a change is kept too
    at.switch_page("pages/home.py").run()
    at.switch_page("pages/compare.py").run()
    assert at.multiselect(key="cmp:picked").value == [two_runs[0]]
