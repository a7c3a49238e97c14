"""The "Queue variants" form on Review (ui/sweep_form.py) in AppTest: the suggestions prefilled,
the variants previewed, a value out of bounds refused, and "Queue N variants" adding N entries to
the queue under one group."""

from __future__ import annotations

from pathlib import Path

import pytest
from ui_support import open_page

import ui.sweep_form
from trainer.jobs.queue import entries
from trainer.settings import load_settings

KEY = "rv:sweep"


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("STUDIO_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path / "home"


@pytest.fixture()
def runner_starts(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    started: list[int] = []
    monkeypatch.setattr(ui.sweep_form, "ensure_runner", lambda settings: started.append(1))
    return started


def test_queue_n_variants_on_review_adds_n_entries_with_one_group(runner_starts) -> None:
    at = open_page("pages/review.py")
    draft = at.session_state["draft"]
    lr, rank = draft["train"]["lr"], draft["network"]["linear"]
    assert at.selectbox(key=f"{KEY}:setting1").value == "train.lr"
    assert at.button(key=f"{KEY}:queue").label == "Queue 3 variants"  # two clicks: open, queue
    at.selectbox(key=f"{KEY}:setting2").set_value("network.linear").run()
    values = at.text_input(key=f"{KEY}:values2:network.linear")
    assert values.value == f"{rank // 2}, {rank}, {rank * 2}"
    values.set_value(f"{rank // 2}, {rank}").run()
    rows = next(df.value for df in at.dataframe if "run name" in df.value.columns)
    assert len(rows) == 6 and rows["run name"].iloc[1] == (
        f"{draft['name']} lr={ui.sweep_form.value_text(lr / 2)} rank={rank}"
    )
    button = at.button(key=f"{KEY}:queue")
    assert button.label == "Queue 6 variants"
    button.click().run()
    assert not at.exception, [e.value for e in at.exception]
    queued = entries(load_settings())
    assert len(queued) == 6 and list(rows["run name"]) == [e.name for e in queued]
    assert len({e.group for e in queued}) == 1
    assert queued[0].group.startswith(f"sweep-{draft['name']}-")
    assert [(e.config["train"]["lr"], e.config["network"]["linear"]) for e in queued] == [
        (value, r) for value in (lr / 2, lr, lr * 2) for r in (rank // 2, rank)
    ]
    assert all(e.state == "queued" for e in queued) and runner_starts == [1]
    assert any("Queued 6 variants" in str(s.value) for s in at.success)
    # a second sweep gets a group of its own
    at.button(key=f"{KEY}:queue").click().run()
    groups = [e.group for e in entries(load_settings())]
    assert len(groups) == 12 and len(set(groups)) == 2


def test_a_value_out_of_bounds_is_refused_and_nothing_queued(runner_starts) -> None:
    at = open_page("pages/review.py")
    at.text_input(key=f"{KEY}:values1:train.lr").set_value("1e-4, 20").run()
    errors = " ".join(str(e.value) for e in at.error)
    assert "Learning rate (train.lr) = 20: must be ≤ 10" in errors
    button = at.button(key=f"{KEY}:queue")
    assert button.disabled and button.label == "Queue variants"
    assert entries(load_settings()) == [] and runner_starts == []


def test_any_setting_can_be_swept_and_its_values_are_suggested(runner_starts) -> None:
    at = open_page("pages/review.py")
    at.selectbox(key=f"{KEY}:setting1").set_value("network.type").run()
    assert at.text_input(key=f"{KEY}:values1:network.type").value == "lora, locon, loha"
    assert at.button(key=f"{KEY}:queue").label == "Queue 3 variants"
    assert not at.exception
