"""End-to-end: two runs and a sweep of three queued from Review in Debian's Chromium train one
after the other while the studio server is stopped and started again, and Compare opens the sweep
as a group (issue 17, item 1, its acceptance test).

The studio's server goes away mid-queue: its runner, a process of its own, goes on. The runner is
then killed as well, so the restarted studio must start a new one on its own; the Monitor's queue
panel shows all five runs finish, in queue order; MLflow has them one after the other, never two
at once; Compare's "Sweep" selector picks the sweep's three runs, ranked by their loss.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
from itertools import pairwise
from pathlib import Path

import pytest

pytest.register_assert_rewrite("e2e_support")
pytest_plugins = ["e2e_support"]  # the fixtures: chromium_browser

from e2e_support import (  # noqa: E402
    choose,
    main_area,
    new_page,
    open_page,
    scaled,
    set_number,
    shot,
    start_studio,
    wait_idle,
)
from jobs_support import stop_process_group  # noqa: E402
from test_e2e import preflight, wait_for  # noqa: E402

from trainer.files import read_json  # noqa: E402
from trainer.jobs.queue import TAG_GROUP, entries  # noqa: E402
from trainer.jobs.queue_runner import RUNNER_FILE, runner_alive  # noqa: E402
from trainer.settings import load_settings  # noqa: E402
from trainer.tracking.records import RunRecord, list_runs  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1200)]
QUEUE_S = 480.0  # five 3-step demo runs, each ~15-20 s (mostly the trainer's start-up) when quiet
NAMES = ("queued_first", "queued_second")
SWEEP_BASE = "queued_sweep"
SWEEP_SIZE = 3
# what Compare ranks a sweep by when no run has a validation loss: the first one the runs logged
RANK_METRICS = ("loss_smoothed", "loss")


def queue_panel(page):
    return main_area(page).locator(".st-key-queue_panel")


def runner_pid(home: Path) -> int | None:
    return (read_json(home / "queue" / RUNNER_FILE) or {}).get("pid")


def add_to_queue(page, name: str, position: str) -> None:
    """Name the LoRA on the review page's summary, then "Add to queue" beside the top Launch."""
    main = main_area(page)
    box = main.get_by_role("textbox", name="LoRA name", exact=True)
    box.fill(name)
    box.press("Enter")
    wait_idle(page)
    top = main.locator(".st-key-rv_launch_top")
    button = top.get_by_role("button", name="Add to queue")
    assert button.is_enabled(), top.inner_text()  # what locks it is said above it
    button.click()
    wait_idle(page)
    said = top.get_by_text(re.compile(rf"Queued {name}: "))
    said.first.wait_for()  # a loaded machine may answer after wait_idle saw the page idle
    assert re.search(rf"Queued {name}: {position} in the queue", said.first.inner_text()), (
        top.inner_text()
    )


def queue_sweep(page, base: str) -> None:
    """Name the draft ``base``, open "Queue variants" under the bottom Launch and queue the
    suggested three learning rates as one sweep."""
    main = main_area(page)
    box = main.get_by_role("textbox", name="LoRA name", exact=True)
    box.fill(base)
    box.press("Enter")
    wait_idle(page)
    main.get_by_text(re.compile(r"^Queue variants: ")).click()
    wait_idle(page)
    form = main.get_by_test_id("stExpander").filter(has_text="Queue variants: ")
    assert "Values of Learning rate" in form.inner_text(), form.inner_text()  # the default
    button = form.get_by_role("button", name=f"Queue {SWEEP_SIZE} variants")
    assert button.is_enabled(), form.inner_text()
    button.click()
    wait_idle(page)
    done = form.get_by_text(re.compile(rf"Queued {SWEEP_SIZE} variants as sweep-{base}-"))
    assert done.count() == 1, form.inner_text()


def one_at_a_time(runs: list[RunRecord]) -> None:
    """Each run started after the one before it ended (MLflow's start and end times)."""
    for before, after in pairwise(runs):
        assert before.end_time is not None and after.start_time is not None, (before, after)
        assert before.end_time <= after.start_time, (before.name, after.name)


def test_two_runs_and_a_sweep_queued_on_review_finish_in_order_across_a_studio_restart(
    chromium_browser, demo_home: Path, tmp_path: Path
) -> None:
    home = tmp_path / "studio_home"
    settings = load_settings(home=home)
    try:
        with start_studio(home, demo_home) as first:
            page = new_page(chromium_browser, first.url)
            preflight(page)
            open_page(page, "Review & launch")
            main = main_area(page)
            main.get_by_text(re.compile(r"^Training core — ")).click()
            set_number(page, "Training steps", 3)
            main.get_by_text(re.compile(r"^Sampling — ")).click()
            set_number(page, "Sample every", 0)
            main.get_by_text(re.compile(r"^Save & logging — ")).click()
            add_to_queue(page, NAMES[0], "1st")
            add_to_queue(page, NAMES[1], "2nd")
            queue_sweep(page, SWEEP_BASE)
            shot(page, "queue-01-review-queued")
            queued = entries(settings)
            assert [e.name for e in queued[:2]] == list(NAMES) and len(queued) == 5, queued
            sweep = queued[2:]
            group = sweep[0].group
            assert group and all(e.group == group for e in sweep) and not queued[0].group
            assert all(e.name.startswith(f"{SWEEP_BASE} lr=") for e in sweep), sweep
            assert len({e.config["train"]["lr"] for e in sweep}) == SWEEP_SIZE
            order = [e.name for e in queued]
            wait_for(lambda: runner_alive(settings), scaled(30), "the queue runner to start")
            killed = runner_pid(home)

            open_page(page, "Monitor")
            panel = queue_panel(page)
            panel.wait_for()
            assert all(name in panel.inner_text() for name in order), panel.inner_text()
            sidebar = page.locator('[data-testid="stSidebar"]')
            sidebar.get_by_text(re.compile(r"Queue: .*\d waiting · next: ")).first.wait_for()
            # The studio created the store before its runner's first launch: no two processes
            # created MLflow's tables at once (the monitor's check of dead runs would say so).
            assert not main_area(page).get_by_text("Could not check for runs").count()
            shot(page, "queue-02-monitor-queue")
            page.context.close()
            # The studio's server stops; the runner does not (closing the studio never stops
            # the queue). Then the runner dies too: the next studio must resume the queue.
            stop_process_group(first.process)
            assert runner_alive(settings), "the runner stopped with the studio"
            os.kill(killed, signal.SIGKILL)
            wait_for(lambda: not runner_alive(settings), scaled(30), "the runner to die")

            with start_studio(home) as second:
                page = new_page(chromium_browser, second.url)
                open_page(page, "Monitor")
                wait_for(lambda: runner_alive(settings), scaled(30), "a new runner")
                assert runner_pid(home) != killed

                def all_ended() -> bool:
                    text = queue_panel(page).inner_text() if queue_panel(page).count() else ""
                    return "Nothing waiting" in text

                wait_for(all_ended, scaled(QUEUE_S), "the five queued runs to end", page, second)
                wait_idle(page)
                shot(page, "queue-03-monitor-finished")
                text = queue_panel(page).inner_text()
                assert len(re.findall(r"— finished", text)) == len(order), text
                ended = text.split("Ended", 1)[1]
                where = [ended.index(name) for name in order]
                assert where == sorted(where), text

                # Compare opens the sweep as a group: its three runs picked, the best first
                open_page(page, "Compare")
                main = main_area(page)
                main.get_by_role("heading", name="Compare runs").wait_for()
                choose(page, "Sweep", re.compile(rf"^{re.escape(group)} \({SWEEP_SIZE} runs\)"))
                picks = main.locator('[data-testid="stMultiSelect"]').filter(
                    has_text="Runs to compare"
                )
                picked_text = picks.inner_text()
                shot(page, "queue-04-compare-sweep")
                ranking = main.get_by_text(re.compile(rf"^{SWEEP_SIZE} runs of ")).first
                ranking = ranking.inner_text()
    finally:
        pid = runner_pid(home)
        if pid and runner_alive(settings):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    done = entries(settings)
    assert [(e.name, e.state) for e in done] == [(n, "done") for n in order], done
    by_id = {r.run_id: r for r in list_runs(settings.tracking_uri)}
    runs = [by_id[e.run_id] for e in done]
    assert [r.status for r in runs] == ["FINISHED"] * len(order)
    assert [r.name for r in runs] == order
    one_at_a_time(runs)  # in queue order, never two at once, across the restart
    assert all(r.tags["studio.launched_from"] == "queue" for r in runs)
    assert [r.tags.get(TAG_GROUP) for r in runs] == [None, None, *[group] * SWEEP_SIZE]

    # Compare showed the sweep's runs and only them, ranked: the lowest loss first
    members = runs[2:]
    assert not any("val_loss" in r.metrics for r in members)  # no validation images here
    metric = next(m for m in RANK_METRICS if all(m in r.metrics for r in members))
    then = "loss" if metric != "loss" else "loss_smoothed"  # equal values: the other loss
    ranked = sorted(members, key=lambda r: (r.metrics[metric], r.metrics.get(then, 0.0)))
    where = [picked_text.find(r.name) for r in ranked]
    assert -1 not in where and where == sorted(where), (picked_text, [r.name for r in ranked])
    assert not any(name in picked_text for name in NAMES), picked_text
    assert f"best: {ranked[0].name}" in ranking, ranking
