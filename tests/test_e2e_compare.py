"""End-to-end: two finished demo runs (trained by the trainer into the server's store) compared in
the real studio in Debian's Chromium: config diff, curves, samples and the slider."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest.register_assert_rewrite("e2e_support")
pytest_plugins = ["e2e_support"]  # the fixtures: chromium_browser, studio_server, studio_page

from e2e_support import link_demo, new_page, open_page, shot, start_studio  # noqa: E402
from options_support import tiny_config  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SAMPLE = {
    "sample_every": 2,
    "prompts": ["[trigger] red circle"],
    "width": 64,
    "height": 64,
    "sample_steps": 2,
    "sampler": "euler",
}


def train_two_runs(home: Path, demo_home: Path) -> list[str]:
    """Two real tiny trainings (lr 1e-3 and 3e-3) logged to ``home``'s MLflow store."""
    from trainer.engine.context import RunContext
    from trainer.engine.loop import train
    from trainer.settings import load_settings
    from trainer.tracking.mlflow_tracker import MlflowTracker

    link_demo(home, demo_home)
    settings = load_settings(home=home, tracking_uri_override=None)
    ids = []
    for name, lr in (("e2e_a", 1e-3), ("e2e_b", 3e-3)):
        cfg = tiny_config(
            name=name,
            train={"lr": lr, "steps": 2},
            sample=SAMPLE,
            logging={"log_every": 1, "use_mlflow": True, "log_system_metrics": False},
        )
        tracker = MlflowTracker(settings.tracking_uri, artifact_root=settings.artifacts_dir)
        run_id = tracker.start(cfg)
        train(cfg, RunContext(home=home, job_dir=home / "jobs" / run_id, tracker=tracker))
        tracker.end("FINISHED")
        ids.append(run_id)
    return ids


def test_compare_two_finished_demo_runs(chromium_browser, demo_home: Path, tmp_path: Path) -> None:
    home = tmp_path / "studio_home"
    home.mkdir()
    train_two_runs(home, demo_home)
    with start_studio(home, demo_home) as studio:
        page = new_page(chromium_browser, studio.url)
        try:
            open_page(page, "Compare")
            main = page.locator('[data-testid="stMain"]')
            main.get_by_role("heading", name="Compare runs").wait_for()
            assert "2 run(s) match" in main.inner_text()
            runs = main.locator('[data-testid="stMultiSelect"]').filter(has_text="Runs to compare")
            picked = runs.inner_text()  # a first visit picks the two latest runs, older first
            assert picked.index("e2e_a") < picked.index("e2e_b"), picked
            main.get_by_role("heading", name="What changed").wait_for()
            diff = main.locator('[data-testid="stTable"]').filter(has_text="train.lr")
            diff.first.wait_for()
            text = diff.first.inner_text()
            assert "0.001" in text and "0.003" in text  # the one training setting that differs
            assert "train.steps" not in text
            charts = main.locator('[data-testid="stVegaLiteChart"]')
            charts.first.wait_for()
            assert charts.count() == 2  # loss and learning rate
            assert main.locator("canvas, svg").count() >= 2
            images = main.locator('[data-testid="stImage"] img')
            images.last.wait_for()
            assert images.count() >= 2  # a sample of each run
            page.wait_for_function(
                "() => [...document.querySelectorAll('[data-testid=\"stImage\"] img')]"
                ".every(img => img.complete && img.naturalWidth > 0)"
            )
            slider = main.get_by_role("slider", name=re.compile("arrow keys"))
            assert slider.count() == 1  # the divider between the two runs' images
            for name in ("e2e_a", "e2e_b"):  # its two images, named by run
                side = main.locator(f'img[alt="{name}"]')
                side.wait_for()
                page.wait_for_function(
                    "img => img.complete && img.naturalWidth > 0", arg=side.element_handle()
                )
            assert "◀ e2e_a | e2e_b ▶" in main.inner_text()
            path = shot(page, "compare")
            assert path.stat().st_size > 20_000
        finally:
            page.context.close()
