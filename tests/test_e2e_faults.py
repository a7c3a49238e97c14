"""End-to-end: what a user uploads or types gives a plain message, never a traceback (issue 16,
item 2), in Debian's Chromium. The AppTest half: ``test_faults_imports.py``,
``test_security_writes.py`` and ``test_config_yaml_limits.py``; the bad inputs come from there.

One studio server for the module (the pages below change nothing the others read):
- Datasets: a truncated zip, a bad CRC, a corrupt deflate stream, the encrypted flag, an
  unsupported compression method, each refused with a message naming the file; a PNG that passes
  ``verify()`` but cannot be decoded is skipped by name, and one already in a dataset is listed
  as removable and removed.
- Review & launch and Presets: YAML nested 600 deep and YAML with a repeated key are refused with
  a message (the repeated key's line numbers), the draft unchanged.
- LoRA utilities: a text file named ``.safetensors``, a model's weights and a half LoRA in the
  path box each give "is not a LoRA file the utilities can use".
Every step checks that the page holds no traceback, no exception class name, no Streamlit
exception box and no "Something went wrong" (the page's error boundary catching a bug), and that
the server's log holds no traceback either (the fault was handled, not caught by a boundary).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import expect

pytest.register_assert_rewrite("e2e_support")
pytest_plugins = ["e2e_support"]  # the fixtures: chromium_browser (and demo_home from conftest)

from e2e_support import (  # noqa: E402
    Studio,
    choose,
    main_area,
    new_page,
    open_page,
    shot,
    start_studio,
    wait_idle,
)
from test_faults_imports import (  # noqa: E402
    BAD_ZIPS,
    ZIP_MESSAGES,
    non_loras,
    png,
    undecodable_png,
)

from trainer.data import library as dm  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
DEEP_YAML = "[" * 600 + "]" * 600
REPEATED_KEY_YAML = "name: twice\ntrain:\n  steps: 5\n  steps: 6\n"  # 'steps' at lines 3 and 4
# What must never reach a browser: a traceback, a server path from one, an exception's class.
LEAKS = (
    "Traceback",
    'File "/',
    "BadZipFile",
    "BadZipfile",
    "RuntimeError",
    "NotImplementedError",
    "RecursionError",
    "UnidentifiedImageError",
    "SafetensorError",
    "HeaderTooLarge",
    "zlib.error",
    "struct.error",
    "ConstructorError",
    "Something went wrong",  # the page's error boundary: a bug was caught, not a fault handled
)


@pytest.fixture(scope="module")
def studio(demo_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Studio]:
    with start_studio(tmp_path_factory.mktemp("faults") / "studio_home", demo_home) as server:
        yield server


@pytest.fixture()
def page(chromium_browser: object, studio: Studio) -> Iterator[object]:
    opened = new_page(chromium_browser, studio.url)
    try:
        yield opened
    finally:
        opened.context.close()


def no_traceback(page, where: str, studio: Studio) -> None:
    """Nothing of a traceback in the page, and none in the server's log either: the fault was
    handled where it happened, not caught by a page's error boundary (which logs one)."""
    text = page.locator('[data-testid="stApp"]').inner_text()
    leaked = [word for word in LEAKS if word in text]
    assert not leaked, f"{where}: the page shows {leaked}:\n{text[-3000:]}"
    boxes = page.locator('[data-testid="stException"]')
    assert not boxes.count(), f"{where}: Streamlit's exception box: {boxes.first.inner_text()}"
    assert "Traceback" not in studio.log.read_text(errors="replace"), (
        f"{where}:\n{studio.log_tail()}"
    )


def upload(page, label: str, files: list[tuple[str, bytes, str]]) -> None:
    """Choose ``files`` in the file uploader labelled ``label``, as a user's file dialog does,
    and wait until they are listed and the rerun they cause is over."""
    uploader = main_area(page).locator('[data-testid="stFileUploader"]').filter(has_text=label)
    payload = [{"name": name, "mimeType": mime, "buffer": data} for name, data, mime in files]
    uploader.locator('input[type="file"]').set_input_files(payload)
    for name, _, _ in files:
        # (a long name is shown shortened; its Remove button has it whole)
        expect(uploader.get_by_role("button", name=f"Remove {name}", exact=True)).to_be_visible()
    wait_idle(page)


def click(page, name: str) -> None:
    main_area(page).get_by_role("button", name=name, exact=True).click()
    wait_idle(page)


def shown(page, message: str):
    """The one element whose text holds ``message`` (a plain substring), visible."""
    found = main_area(page).get_by_text(re.compile(re.escape(message))).first
    expect(found).to_be_visible()
    return found


# ------------------------------------------------------------------------------- Datasets
def test_damaged_zips_and_an_undecodable_png_give_messages_on_the_datasets_page(
    page, studio: Studio
) -> None:
    main = main_area(page)
    open_page(page, "Datasets")
    new_dataset = main.locator('[data-testid="stExpander"]').filter(has_text="New dataset")
    if not main.get_by_role("textbox", name="Name", exact=True).is_visible():
        new_dataset.locator("summary").click()  # closed when the home has datasets (the demo's)
    main.get_by_role("textbox", name="Name", exact=True).fill("pets")
    main.get_by_role("textbox", name="Name", exact=True).press("Enter")
    wait_idle(page)
    main.get_by_text("Zip upload", exact=True).click()
    wait_idle(page)
    for kind in sorted(BAD_ZIPS):
        name = kind.replace(" ", "_") + ".zip"
        upload(page, "Zip of images and .txt captions", [(name, BAD_ZIPS[kind], "application/zip")])
        click(page, "Create dataset")
        expected = ZIP_MESSAGES[kind].replace("photos.zip", name)
        shown(page, f"Not created: {expected}")
        no_traceback(page, f"Datasets, {kind} zip", studio)
        assert not (studio.home / "datasets" / "pets").exists(), kind
        shot(page, f"faults-01-zip-{name.removesuffix('.zip')}")

    # A PNG that passes verify() but cannot be decoded: skipped by name, the good one imported.
    main.get_by_text("Image files", exact=True).click()
    wait_idle(page)
    images = [("good.png", png(2), "image/png"), ("bad.png", undecodable_png(), "image/png")]
    upload(page, "Images and captions", images)
    click(page, "Create dataset")
    shown(page, "Created pets: 1 images, 0 captions.")
    shown(page, "Skipped: bad.png (not a readable image)")
    no_traceback(page, "Datasets, undecodable PNG", studio)
    folder = studio.home / "datasets" / "pets"
    assert [p.name for p in dm.images_in(folder)] == ["good.png"]
    assert not (folder / "bad.png").exists()
    shot(page, "faults-02-png-skipped")

    # The same PNG already in the dataset (imported before imports decoded fully): the page
    # renders around it, names it, and removes it from the UI.
    (folder / "bad.png").write_bytes(undecodable_png())
    page.reload(wait_until="domcontentloaded")
    wait_idle(page)
    open_page(page, "Datasets")
    choose(page, "Dataset", "pets")  # a new session: the first dataset (the demo's) is shown
    shown(page, "1 image in this dataset cannot be used")
    shown(page, "bad.png: corrupt or truncated image")
    no_traceback(page, "Datasets, a broken image in the dataset", studio)
    shot(page, "faults-03-png-in-dataset")
    main.locator(".st-key-dsm-broken").get_by_role("button", name="Remove").click()
    wait_idle(page)
    expect(main.get_by_text("cannot be used")).to_have_count(0)
    assert [p.name for p in dm.images_in(folder)] == ["good.png"]
    no_traceback(page, "Datasets, the broken image removed", studio)


# ------------------------------------------------------------------------ Review and Presets
YAML_FAULTS = {
    "deep.yaml": (DEEP_YAML, "nested more than 50 levels deep"),
    "twice.yaml": (REPEATED_KEY_YAML, "line 4, column 3: the key 'steps' appears twice (first "
                   "at line 3)"),
}  # fmt: skip


def test_deep_yaml_and_a_repeated_key_give_messages_on_review_and_presets(
    page, studio: Studio
) -> None:
    open_page(page, "Review & launch")
    for name, (text, why) in YAML_FAULTS.items():
        upload(page, "Import a config (YAML)", [(name, text.encode(), "application/x-yaml")])
        shown(page, f"Import refused: {name} has problems; your draft is unchanged.")
        shown(page, why)
        no_traceback(page, f"Review, {name}", studio)
        shot(page, f"faults-04-review-{name.removesuffix('.yaml')}")

    open_page(page, "Presets")
    for name, (text, why) in YAML_FAULTS.items():
        upload(page, "A preset YAML file", [(name, text.encode(), "application/x-yaml")])
        click(page, "Import")
        shown(page, "Not a valid config:")
        shown(page, why)
        no_traceback(page, f"Presets, {name}", studio)
        shot(page, f"faults-05-presets-{name.removesuffix('.yaml')}")
    presets = studio.home / "presets"
    assert not presets.exists() or not [p.name for p in presets.iterdir()]  # nothing saved


# ------------------------------------------------------------------------------- utilities
def test_a_non_lora_file_in_the_utilities_path_box_gives_a_message(page, studio: Studio) -> None:
    files = non_loras(studio.home / "downloads")
    main = main_area(page)
    open_page(page, "LoRA utilities")
    box = main.get_by_role("textbox", name="LoRA file (path)", exact=True)
    for kind, path in files.items():
        box.fill(str(path))
        box.press("Enter")
        wait_idle(page)
        shown(  # a text file is no safetensors file at all; the others hold no LoRA
            page,
            f"Not a LoRA file: {path.name} is not a .safetensors LoRA (it holds text)"
            if kind == "text"
            else f"{path.name} is not a LoRA file the utilities can use",
        )
        no_traceback(page, f"LoRA utilities, {kind}", studio)
        expect(main.get_by_role("tab", name="Resize")).to_have_count(0)  # nothing to resize
        shot(page, f"faults-06-utilities-{kind}")
