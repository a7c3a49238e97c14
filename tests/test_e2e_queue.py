"""End-to-end: two runs queued from Review in Debian's Chromium train one after the other while the
studio server is stopped and started again (issue 17, item 1).

The studio's server goes away mid-queue: its runner, a process of its own, goes on. The runner is
then killed as well, so the restarted studio must start a new one on its own; the Monitor's queue
panel shows both runs finish, in queue order, and MLflow has them one after the other.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
from pathlib import Path

import pytest

pytest.register_assert_rewrite("e2e_support")
pytest_plugins = ["e2e_support"]  # the fixtures: chromium_browser

from e2e_support import (  # noqa: E402
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
from trainer.jobs.queue import entries  # noqa: E402
from trainer.jobs.queue_runner import RUNNER_FILE, runner_alive  # noqa: E402
from trainer.settings import load_settings  # noqa: E402
from trainer.tracking.records import list_runs  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]
QUEUE_S = 240.0  # two 3-step demo runs: ~30 s on a quiet 2-core machine
NAMES = ("queued_first", "queued_second")


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
    done = top.get_by_text(re.compile(rf"Queued {name}: {position} in the queue"))
    assert done.count() == 1, top.inner_text()


def test_two_runs_queued_on_review_finish_in_order_across_a_studio_restart(
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
            shot(page, "queue-01-review-queued")
            assert [e.name for e in entries(settings)] == list(NAMES)
            wait_for(lambda: runner_alive(settings), scaled(30), "the queue runner to start")
            killed = runner_pid(home)

            open_page(page, "Monitor")
            panel = queue_panel(page)
            panel.wait_for()
            assert NAMES[0] in panel.inner_text() and NAMES[1] in panel.inner_text()
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

                def both_finished() -> bool:
                    text = queue_panel(page).inner_text() if queue_panel(page).count() else ""
                    return len(re.findall(r"— finished", text)) == 2

                wait_for(both_finished, scaled(QUEUE_S), "both queued runs to finish", page, second)
                wait_idle(page)
                shot(page, "queue-03-monitor-finished")
                text = queue_panel(page).inner_text()
                ended = text.split("Ended", 1)[1]
                assert ended.index(NAMES[0]) < ended.index(NAMES[1]), text
                assert "Nothing waiting" in text, text
    finally:
        pid = runner_pid(home)
        if pid and runner_alive(settings):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    done = entries(settings)
    assert [(e.name, e.state) for e in done] == [(n, "done") for n in NAMES], done
    runs = {r.run_id: r for r in list_runs(settings.tracking_uri)}
    one, two = (runs[e.run_id] for e in done)
    assert one.status == two.status == "FINISHED"
    assert (one.name, two.name) == NAMES
    assert one.end_time <= two.start_time  # one at a time, in queue order
    assert one.tags["studio.launched_from"] == "queue"
