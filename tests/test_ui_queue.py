"""The queue in the studio (AppTest): "Add to queue" beside Launch on Review, the Monitor's queue
panel (order, up/down, start now, cancel), the router starting the runner, and the queue's line in
the sidebar. No process runs: ``ensure_runner`` is replaced by a recorder."""

from __future__ import annotations

from pathlib import Path

import pytest
from ui_support import open_page, texts

from trainer.config.io import load_config
from trainer.jobs.queue import cancel, claim_next, enqueue, entries, update_entry
from trainer.settings import StudioSettings, load_settings
from ui.sidebar import queue_summary, queue_work

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "presets" / "demo_sd15.yaml"


@pytest.fixture()
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> StudioSettings:
    monkeypatch.setenv("STUDIO_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return load_settings()


@pytest.fixture()
def runner_starts(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The homes ``ensure_runner`` was asked to serve (only when the queue has work)."""
    from ui import queue_panel

    started: list[Path] = []

    def fake(settings: StudioSettings) -> bool:
        if any(entry.active for entry in entries(settings)):
            started.append(settings.home)
            return True
        return False

    monkeypatch.setattr(queue_panel, "ensure_runner", fake)
    monkeypatch.setattr(queue_panel, "_last_resume", {})
    return started


def test_add_to_queue_queues_the_draft_and_starts_the_runner(settings, runner_starts) -> None:
    at = open_page("pages/review.py")
    assert runner_starts == []  # nothing queued: no runner
    button = at.button(key="rv:queue")
    assert not button.disabled and at.button(key="rv:queue_bottom")
    button.click().run()
    assert not at.exception
    [entry] = entries(settings)
    cfg = at.session_state["draft"]
    assert entry.state == "queued" and entry.name == cfg["name"]
    assert entry.config["train"] == cfg["train"] and entry.config["model"] == cfg["model"]
    assert runner_starts == [settings.home]
    assert "Queued" in texts(at) and "1st in the queue" in texts(at)
    at.button(key="rv:queue_bottom").click().run()
    assert [e.name for e in entries(settings)] == [cfg["name"]] * 2
    assert "2nd in the queue" in texts(at)


def test_add_to_queue_is_locked_with_launch(settings, runner_starts) -> None:
    at = open_page("pages/review.py")
    at.session_state["draft"]["train"]["steps"] = "auto"
    at.session_state["draft_rev"] = 99
    at.run()
    assert at.button(key="rv:launch").disabled and at.button(key="rv:queue").disabled
    assert entries(settings) == []


def test_the_monitor_panel_lists_reorders_starts_and_cancels(settings, runner_starts) -> None:
    cfg = load_config(DEMO, ["train.steps=3"])
    a, b, c = (enqueue(settings, cfg, name) for name in ("q_a", "q_b", "![x](http://x/y.png)"))
    at = open_page("pages/monitor.py")
    panel = texts(at)
    assert "Queue" in [h.value for h in at.subheader] and "3 waiting or training" in panel
    order = [m.value for m in at.markdown if "— queued" in m.value]
    assert [line.split(".")[0] for line in order] == ["1", "2", "3"]
    assert "**q_a**" in order[0] and "**q_b**" in order[1]
    assert "`![x](http://x/y.png)`" in order[2]  # a name is text (code), never an image
    assert at.button(key=f"queue_up_{a.id}").disabled
    assert at.button(key=f"queue_down_{c.id}").disabled

    at.button(key=f"queue_down_{a.id}").click().run()
    assert [e.name for e in entries(settings)][:2] == ["q_b", "q_a"]
    at.button(key=f"queue_first_{c.id}").click().run()
    assert [e.id for e in entries(settings)] == [c.id, b.id, a.id]
    at.button(key=f"queue_cancel_{b.id}").click().run()
    assert [e.state for e in entries(settings)] == ["queued", "cancelled", "queued"]
    assert not at.exception
    assert any("cancelled" in m.value for m in at.markdown)

    # A running entry has no up/down; its run can be watched; ended ones are listed apart.
    claim_next(settings)
    update_entry(settings, c.id, run_id="r" * 32, run_name="q_c_2")
    update_entry(settings, b.id, message="Cancelled before it started.")
    at.run()
    assert not at.exception
    assert f"queue_up_{c.id}" not in {w.key for w in at.button}
    assert "training" in texts(at) and "Ended" in texts(at)


def test_the_router_resumes_a_queue_left_with_work(settings, runner_starts) -> None:
    enqueue(settings, load_config(DEMO), "waiting")
    open_page("pages/home.py")
    assert runner_starts == [settings.home]


# ------------------------------------------------------------------------------- the sidebar
def _sidebar(at) -> str:
    return "\n".join(str(e.value) for kind in ("markdown", "caption") for e in at.sidebar.get(kind))


def test_the_sidebar_tells_the_queues_state_and_links_to_the_monitor(
    settings, runner_starts
) -> None:
    cfg = load_config(DEMO, ["train.steps=3"])
    at = open_page("pages/home.py")
    assert "No run is training now." in _sidebar(at) and "Queue:" not in _sidebar(at)

    first, second, third = (enqueue(settings, cfg, n) for n in ("q_one", "q_two", "[q](x)"))
    at.run()
    shown = _sidebar(at)
    assert "Queue: 3 waiting · next: **q_one**" in shown, shown
    assert "No run is training now." not in shown
    [link] = [e for e in at.sidebar.get("page_link") if "queue" in e.proto.label]
    assert link.proto.page == "monitor"

    claim_next(settings)  # the runner took q_one; its trainer is not up yet
    at.run()
    assert "Queue: starting **q_one** · 2 waiting · next: **q_two**" in _sidebar(at)
    cancel(settings, second.id)
    at.run()
    assert "1 waiting · next: **\\[q\\](x)**" in _sidebar(at)  # a name is text, never a link

    update_entry(settings, first.id, state="done")
    cancel(settings, third.id)
    at.run()
    assert "No run is training now." in _sidebar(at) and "Queue:" not in _sidebar(at)
    assert not at.exception


def test_the_sidebar_leaves_out_the_queued_run_it_shows_as_training(settings) -> None:
    cfg = load_config(DEMO)
    running, waiting = enqueue(settings, cfg, "now"), enqueue(settings, cfg, "later")
    claim_next(settings)
    running = update_entry(settings, running.id, run_id="r" * 32)
    work = queue_work(settings)
    assert [e.id for e in work] == [running.id, waiting.id]
    assert queue_summary(work, {"r" * 32}) == "Queue: 1 waiting · next: **later**"
    assert queue_summary(work, set()) == ("Queue: starting **now** · 1 waiting · next: **later**")
    assert queue_summary(work[:1], {"r" * 32}) is None  # only the run shown above
