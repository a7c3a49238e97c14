"""In Chromium: a Hub model from a (local, fake) Hugging Face Hub, as a new user gets one.

Type a gated id on the Model step, see its size, that it is not cached and that access is
missing; sign in with a token; download it with the progress bar; launch from Review; the run
trains and finishes on the downloaded model. Afterwards the token is nowhere in the studio's
home, its MLflow store, the job folders, the logs or the Hugging Face cache.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

pytest.register_assert_rewrite("e2e_support", "hub_server")
pytest_plugins = ["e2e_support", "hub_server"]

from e2e_support import (  # noqa: E402
    main_area,
    new_page,
    open_page,
    scaled,
    scaled_ms,
    set_number,
    shot,
    start_studio,
    wait_idle,
)
from hub_server import GATED_REPO, TOKEN_WITH_ACCESS, HubEnv  # noqa: E402
from test_e2e import header_status, trainer_log, wait_for, wizard_heading  # noqa: E402

from trainer.models.hub import cache_status, format_bytes, inspect_repo  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
TRAIN_TIMEOUT_S = 180.0


def files_with(root: Path, secret: str, skip: tuple[Path, ...] = ()) -> list[Path]:
    needle = secret.encode()
    return [
        path
        for path in root.rglob("*")
        if path.is_file() and path not in skip and needle in path.read_bytes()
    ]


def test_a_gated_hub_model_is_signed_in_for_downloaded_and_trained(
    chromium_browser, hub_env: HubEnv, demo_home: Path, tmp_path: Path
) -> None:
    from trainer.tracking.records import list_runs

    plan = inspect_repo(GATED_REPO, "sd15").plan
    hub_env.server.throttle(plan.total_bytes / 4)  # about 4 s: the progress bar is seen
    with start_studio(tmp_path / "studio_home", demo_home, hub_env.env) as studio:
        page = new_page(chromium_browser, studio.url)
        main = main_area(page)
        try:
            main.get_by_role("heading", name="LoRA Studio", level=1).wait_for()
            open_page(page, "Wizard")
            assert wizard_heading(page) == "Model"
            main.get_by_role("radio", name="Hugging Face id").click()
            wait_idle(page)
            box = main.get_by_role("textbox", name="Base model")
            box.fill(GATED_REPO)
            box.press("Enter")
            wait_idle(page)

            # ---- what it is and costs, before anything is downloaded
            needed = format_bytes(plan.total_bytes)
            main.get_by_text(re.compile(r"has no access yet")).first.wait_for()
            expect(main.get_by_text(re.compile(rf"{re.escape(needed)}")).first).to_be_visible()
            expect(main.get_by_text("not cached").first).to_be_visible()
            download = main.get_by_role("button", name=re.compile(r"^Download"))
            expect(download).to_be_disabled()
            shot(page, "hub-01-gated-not-cached")

            # ---- sign in: the token goes to huggingface_hub's store, the box empties
            main.get_by_role("textbox", name="Hugging Face token").fill(TOKEN_WITH_ACCESS)
            main.get_by_role("button", name="Sign in").click()
            wait_idle(page)
            main.get_by_text(re.compile(r"Signed in to Hugging Face as alice")).first.wait_for()
            expect(main.get_by_text(re.compile(r"has access")).first).to_be_visible()
            assert hub_env.token_path.read_text().strip() == TOKEN_WITH_ACCESS
            shot(page, "hub-02-signed-in")

            # ---- download with the progress bar, then cached
            expect(download).to_be_enabled()
            download.click()
            progress = main.locator('[data-testid="stProgress"]')
            progress.first.wait_for(timeout=scaled_ms(30_000))
            shot(page, "hub-03-downloading")

            def cached() -> bool:
                return main.get_by_text(re.compile(r"cached \(all \d+ files\)")).count() > 0

            wait_for(cached, 90, "the download to finish", page, studio)
            assert cache_status(plan).complete
            shot(page, "hub-04-cached")

            # ---- a short run: 64 px, 4 steps (the tiny model; a real one keeps its defaults)
            for _ in range(11):
                heading = wizard_heading(page)
                if heading == "Resolution & augmentation":
                    resolution = main.get_by_role("textbox", name="Resolution")
                    resolution.fill("64")
                    resolution.press("Enter")
                    wait_idle(page)
                elif heading == "Training core":
                    set_number(page, "Training steps", 4)
                elif heading == "Save & logging":
                    break
                main.get_by_role("button", name=re.compile("→$")).click()
                wait_idle(page)

            # ---- review opens Launch; the run trains on the downloaded model
            open_page(page, "Review")
            launch = main.get_by_role("button", name="Launch training")
            expect(launch).to_be_enabled()
            shot(page, "hub-05-review")
            launch.click()
            page.wait_for_url(re.compile(r"/monitor"), timeout=scaled_ms(90_000))
            uri = f"sqlite:///{studio.home / 'mlflow.db'}"
            run_id = list_runs(uri)[0].run_id

            def finished() -> bool:
                return "finished" in header_status(page)

            try:
                wait_for(finished, scaled(TRAIN_TIMEOUT_S), "the run to finish", page, studio)
            except AssertionError as err:
                raise AssertionError(f"{err}\n{trainer_log(studio, run_id)}") from None
            shot(page, "hub-06-finished")
            assert [r.status for r in list_runs(uri)] == ["FINISHED"]
            assert (
                f"name_or_path: {GATED_REPO}"
                in (studio.home / "jobs" / run_id / "config.yaml").read_text()
            )
        finally:
            page.context.close()

    # ---- the token is only where huggingface_hub keeps it
    token_files = (hub_env.token_path, hub_env.hf_home / "stored_tokens")
    assert files_with(studio.home, TOKEN_WITH_ACCESS) == []
    assert files_with(hub_env.hf_home, TOKEN_WITH_ACCESS, skip=token_files) == []
    assert TOKEN_WITH_ACCESS.encode() not in studio.log.read_bytes()
