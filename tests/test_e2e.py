"""End-to-end: the real studio (a Streamlit server on a fresh home) driven in Debian's Chromium."""

from __future__ import annotations

import pytest

pytest.register_assert_rewrite("e2e_support")
pytest_plugins = ["e2e_support"]  # the fixtures: chromium_browser, studio_server, studio_page

from e2e_support import Studio, shot  # noqa: E402

pytestmark = pytest.mark.e2e


def test_a_new_home_shows_the_studio_and_its_demo_models(
    studio_page, studio_server: Studio
) -> None:
    main = studio_page.locator('[data-testid="stMain"]')
    main.get_by_role("heading", name="LoRA Studio", level=1).wait_for()
    assert str(studio_server.home) in main.inner_text()
    assert main.get_by_text("ready").count() == 4  # sd15, sdxl, flux and the dataset, linked in
    assert main.get_by_text("The store is created with your first run.").is_visible()
    shot(studio_page, "home")
