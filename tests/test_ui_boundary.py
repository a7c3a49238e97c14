"""An advisor bug shows as a short message where the advisor's part was, with the traceback in
the log; the rest of the page renders, and no guessed answer stands in for the advisor's."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from ui_support import open_page, texts

from ui.boundary import advisor_boundary


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("STUDIO_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path / "home"


def _broken(*args, **kwargs):
    raise RuntimeError("advisor bug 1234")


def test_the_boundary_logs_the_traceback_and_carries_on(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR), advisor_boundary("testing") as outcome:
        _broken()
    assert outcome.failed
    (record,) = caplog.records
    assert record.getMessage() == "The advisor failed while testing"
    assert "advisor bug 1234" in caplog.text  # the traceback: the error itself
    with advisor_boundary("testing") as fine:
        pass
    assert not fine.failed


def test_a_broken_rule_check_is_reported_on_the_wizard(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("ui.advice.validate", _broken)
    with caplog.at_level(logging.ERROR, logger="ui.boundary"):
        at = open_page("pages/wizard.py")  # asserts no exception reached the page
    errors = [e.value for e in at.error]
    assert any("The advisor failed while checking the draft" in e for e in errors), errors
    assert "advisor bug 1234" not in texts(at)  # the page stays short; the log has it
    assert "advisor bug 1234" in caplog.text
    assert [t.value for t in at.title] == ["Wizard"]
    assert at.selectbox(key="wiz:step")  # the rest of the page is there


def test_a_broken_prediction_is_not_replaced_by_a_guess(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("ui.advice.predict_run", _broken)
    at = open_page("pages/review.py")
    assert any("The advisor failed while predicting" in e.value for e in at.error)
    assert "Predictions unavailable" in texts(at)  # no numbers shown
