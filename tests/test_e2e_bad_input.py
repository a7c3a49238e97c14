"""End-to-end: bad input on a newcomer's path (issue 15), in Debian's Chromium.

Number fields are text boxes: letters ("3o", "abc") and values out of range are refused with a
visible message, and the box shows the value in force again (the summary header agrees). A missing
dataset folder and a missing model folder lock Launch on the review page, which names them.
(The journey itself, on the defaults, is in ``test_e2e_newcomer.py``.)
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

pytest.register_assert_rewrite("e2e_support")
pytest_plugins = ["e2e_support"]  # the fixtures: chromium_browser, studio_server, studio_page

from e2e_support import Studio, choose, main_area, open_page, shot, wait_idle  # noqa: E402
from test_e2e import wizard_heading  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
MISSING_DATA = "/nonexistent/newcomer_photos"
MISSING_MODEL = "/nonexistent/newcomer_model"


def type_into(page, label: str, text: str):
    """Type ``text`` into the text box labelled ``label`` and press Enter, as a user does."""
    box = main_area(page).get_by_role("textbox", name=label, exact=True)
    box.fill(text)
    box.press("Enter")
    wait_idle(page)
    return box


def summary_steps(page) -> str:
    """The Steps value of the summary header above the wizard."""
    header = page.locator(".st-key-summary_header").inner_text()
    found = re.search(r"Steps\s+(\S+)", header)
    return found.group(1) if found else header


def refused(page, label: str, typed: str, why: str, in_force: str) -> None:
    """After typing ``typed``: a visible message says why and what is still in force; the box
    shows the value in force, not what was typed."""
    box = type_into(page, label, typed)
    message = main_area(page).get_by_text(
        re.compile(rf"Not accepted: .*{re.escape(why)}.*The value in force is still {in_force}")
    )
    expect(message).to_be_visible()
    assert box.input_value() == in_force, f"{label}: shows {box.input_value()!r} after {typed!r}"


def test_bad_input_is_refused_in_words_and_missing_folders_lock_launch(
    studio_page, studio_server: Studio
) -> None:
    from trainer.tracking.records import list_runs

    page, main = studio_page, main_area(studio_page)
    open_page(page, "Preflight")
    main.get_by_role("button", name="Confirm and fill the wizard").click()
    wait_idle(page)
    open_page(page, "Wizard")

    # ---- a whole number: letters, and a value past the limit
    choose(page, "Wizard step", re.compile(r"^9 · "))
    assert wizard_heading(page) == "Training core"
    steps = main.get_by_role("textbox", name="Training steps", exact=True).input_value()
    assert steps.isdigit(), steps
    refused(page, "Training steps", "3o", "'3o' is not a whole number", steps)
    assert summary_steps(page) == steps
    refused(page, "Training steps", "abc", "'abc' is not a whole number", steps)
    refused(page, "Training steps", "5000000", "5000000 is too large: it must be at most", steps)
    assert summary_steps(page) == steps  # the header says what is in force, as the box does
    shot(page, "bad-input-01-steps-refused")
    more = str(int(steps) + 10)
    assert type_into(page, "Training steps", more).input_value() == more  # a good value is taken
    assert not main.get_by_text("Not accepted").count()  # and the message goes
    assert summary_steps(page) == more

    # ---- a decimal number: letters, and a value past the limit
    choose(page, "Wizard step", re.compile(r"^7 · "))
    lr = main.get_by_role("textbox", name="Learning rate", exact=True).input_value()
    refused(page, "Learning rate", "1e-3x", "'1e-3x' is not a number", lr)
    refused(page, "Learning rate", "20", "20 is too large: it must be at most 10", lr)
    shot(page, "bad-input-02-learning-rate-refused")

    # ---- a dataset folder and a model folder that do not exist
    choose(page, "Wizard step", re.compile(r"^4 · "))
    demo_data = main.get_by_role("switch", name="Use the generated demo dataset")
    main.get_by_text("Use the generated demo dataset", exact=True).click()  # its label
    wait_idle(page)
    expect(demo_data).not_to_be_checked()
    type_into(page, "Dataset folder", MISSING_DATA)
    expect(main.get_by_text(re.compile(r"Folder not found")).first).to_be_visible()
    choose(page, "Wizard step", re.compile(r"^1 · "))
    main.get_by_role("radio", name="Local diffusers folder").click()
    wait_idle(page)
    type_into(page, "Base model", MISSING_MODEL)
    shot(page, "bad-input-03-missing-model")

    open_page(page, "Review & launch")
    launch = main.get_by_role("button", name="Launch training")
    expect(launch).to_be_disabled()
    locked = main.locator(".st-key-rv_launch_top")  # under the summary, without scrolling
    expect(locked.get_by_text(re.compile(r"Launch is locked"))).to_be_visible()
    reasons = locked.inner_text()
    assert f"no folder at {MISSING_DATA}" in reasons.replace("`", ""), reasons
    assert MISSING_MODEL in reasons, reasons
    shot(page, "bad-input-04-review-locked")
    store = studio_server.home / "mlflow.db"
    assert not store.exists() or not list_runs(f"sqlite:///{store}")  # nothing was launched
