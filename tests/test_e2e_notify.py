"""End-to-end: a run's end shows in the browser (issue 17, item 3), in Debian's Chromium.

A studio page is open while a run trains (a stand-in trainer process with its job folder); the
run ends; within the sidebar's refresh a toast says so and the tab title reads
"✓ <name> finished — LoRA Studio", and the title stays on another page. (The message to a
notification URL, with real trainers: tests/test_notify.py.)
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

pytest.register_assert_rewrite("e2e_support")
pytest_plugins = ["e2e_support"]  # the fixtures: chromium_browser, studio_server

from e2e_support import Studio, new_page, open_page, scaled_ms, shot, wait_idle  # noqa: E402

from trainer.tracking.job_file import write_job  # noqa: E402
from trainer.tracking.progress import write_progress  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_a_run_end_toasts_and_sets_the_tab_title(
    chromium_browser: object, studio_server: Studio
) -> None:
    trainer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    try:
        folder = studio_server.home / "jobs" / "e2erun"
        folder.mkdir(parents=True)
        write_job(
            folder, trainer.pid, "e2erun", time.time(), ["python"], folder / "c.yaml", name="tabby"
        )
        write_progress(folder, {"phase": "training", "step": 3, "total_steps": 30})
        page = new_page(chromium_browser, studio_server.url)
        sidebar = page.locator('[data-testid="stSidebar"]')
        sidebar.get_by_text("tabby").first.wait_for()
        page.wait_for_function(  # the training run is the newest: the title follows it
            "document.title === '▶ tabby 10% — LoRA Studio'", timeout=scaled_ms(10_000)
        )

        write_progress(folder, {"phase": "finished", "step": 30, "total_steps": 30})
        trainer.kill()
        trainer.wait()
        toast = page.locator('[data-testid="stToast"]')
        toast.filter(has_text="tabby").first.wait_for(timeout=scaled_ms(20_000))
        assert "finished" in toast.first.inner_text()
        page.wait_for_function(
            "document.title === '✓ tabby finished — LoRA Studio'", timeout=scaled_ms(10_000)
        )
        shot(page, "notify_run_end")
        open_page(page, "Presets")
        wait_idle(page)
        assert page.title() == "✓ tabby finished — LoRA Studio"
        page.context.close()
    finally:
        trainer.kill()
        trainer.wait()
