"""One dataset analysis: the wizard's dataset step and the Datasets page count the same buckets and
steps per epoch at the draft's settings; the demo's own images are not flagged; sentence captions
are shown as words, not as a table of whole captions."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from ui_support import go_to_step, open_page, texts, widget

from trainer.config.schema import TrainingConfig
from trainer.config.sections.datasets import DatasetConfig
from trainer.data import library as dm
from trainer.data.buckets import epoch_bucket_counts
from trainer.data.scanning import scan_dataset


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("STUDIO_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    return tmp_path / "home"


def with_draft(home: Path, resolution: int = 64, batch: int = 2) -> None:
    """An autosaved draft on the demo model and demo dataset (restored when a session starts)."""
    draft = TrainingConfig().model_dump(mode="json")
    draft["datasets"][0]["resolution"] = [resolution]
    draft["train"]["batch_size"] = batch
    (home / "drafts").mkdir(parents=True, exist_ok=True)
    (home / "drafts" / "current.yaml").write_text(json.dumps(draft), encoding="utf-8")


def shown_numbers(at) -> tuple[str, str, str]:
    """(images, steps per epoch, the buckets line) as the page shows them."""
    metrics = {m.label: m.value for m in at.metric}
    buckets = [c.value for c in at.caption if "Buckets: " in c.value]
    assert len(buckets) == 1, buckets
    return metrics["Images"], metrics["Steps per epoch"], buckets[0].split("Buckets: ")[1]


def caption_table(at):
    """The table of the captions' tags or words (read-only tables have no key in AppTest)."""
    found = [d.value for d in at.dataframe if list(d.value.columns)[:1] in (["word"], ["tag"])]
    assert len(found) == 1, [list(d.value.columns) for d in at.dataframe]
    return found[0]


def wizard_numbers(at):
    go_to_step(at, "dataset")
    if any(b.key == "wiz:analyse:0" for b in at.button):
        at.button(key="wiz:analyse:0").click().run()
    return shown_numbers(at)


def datasets_page_numbers(at):
    at.switch_page("pages/datasets.py").run()
    assert not at.exception, [e.value for e in at.exception]
    at.selectbox(key="dsm:pick").set_value("demo").run()
    return shown_numbers(at)


def test_the_wizard_and_the_datasets_page_count_the_same(home: Path) -> None:
    with_draft(home, resolution=64, batch=2)
    at = open_page("pages/wizard.py")
    in_wizard = wizard_numbers(at)
    # 12 demo images (64x64, 96x64, 64x96) at 64 px with SD1.5's multiple of 8: 3 buckets of 4,
    # 2 batches of 2 each.
    assert in_wizard == ("12", "6", "48x80 (4), 64x64 (4), 80x48 (4)")
    assert datasets_page_numbers(at) == in_wizard
    assert "At the draft's settings (64 px, batch size 2, 1 repeat)" in texts(at)
    # the draft changes: both follow it
    at.switch_page("pages/wizard.py").run()
    go_to_step(at, "memory")
    widget(at, "cfg:train.batch_size").set_value("4").run()
    in_wizard = wizard_numbers(at)
    assert in_wizard[1] == "3"  # one batch of 4 per bucket
    assert datasets_page_numbers(at) == in_wizard


def test_the_demo_datasets_grayscale_shapes_are_not_flagged(home: Path) -> None:
    with_draft(home)
    at = open_page("pages/wizard.py")
    wizard_numbers(at)  # builds the demo dataset in the studio's datasets folder
    datasets_page_numbers(at)
    assert not [w.value for w in at.warning if "grayscale" in w.value]
    assert "Expected here: the demo draws some of its shapes in black and white." in texts(at)


def grey_png(size: int = 64) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (size, size), 128).save(buf, "PNG")
    return buf.getvalue()


def colour_png(seed: int, size: int = 64) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def test_a_users_grayscale_image_is_flagged_with_what_it_means(home: Path) -> None:
    with_draft(home)
    files = [("grey.png", grey_png()), ("a.png", colour_png(1)), ("b.png", colour_png(2))]
    dm.import_files(home / "datasets", "mine", files)
    at = open_page("pages/datasets.py")
    assert at.selectbox(key="dsm:pick").value == "mine"
    assert [w.value for w in at.warning if w.value.startswith("Flagged")] == [
        "Flagged: grey.png: grayscale"
    ]
    assert "**grayscale**: black and white" in texts(at)


def test_sentence_captions_are_shown_as_words_not_as_a_table_of_captions(home: Path) -> None:
    with_draft(home)
    at = open_page("pages/wizard.py")
    wizard_numbers(at)
    datasets_page_numbers(at)
    assert "The captions are sentences, not comma-separated tags" in texts(at)
    table = caption_table(at)
    assert list(table.columns) == ["word", "captions"]
    counts = dict(zip(table["word"], table["captions"], strict=True))
    assert counts["sks"] == counts["photo"] == 12  # every demo caption: "a photo of sks ..."
    assert "a" not in counts and "of" not in counts  # filler words are not counted
    assert all(len(word.split()) == 1 for word in counts)  # words, never whole captions


def test_tag_captions_keep_the_tag_table(home: Path) -> None:
    files = [(f"{i}.png", colour_png(i)) for i in range(3)]
    files += [("0.txt", b"sks, red dress"), ("1.txt", b"sks, smiling"), ("2.txt", b"sks")]
    dm.import_files(home / "datasets", "tagged", files)
    at = open_page("pages/datasets.py")
    table = caption_table(at)
    assert list(table.columns) == ["tag", "captions"]
    assert dict(zip(table["tag"], table["captions"], strict=True)) == {
        "sks": 3,
        "red dress": 1,
        "smiling": 1,
    }
    assert "sentences" not in texts(at)


def test_caption_style_and_word_counts() -> None:
    assert dm.caption_style(["a photo of sks on a beach", "sks smiling in a red car"]) == (
        "sentences"
    )
    assert dm.caption_style(["sks, red dress", "sks", "sks, beach, smiling"]) == "tags"
    assert dm.caption_style(["", "  "]) == "none"
    words = dm.word_frequency(["A photo of sks.", "a photo of sks on a beach", "sks"])
    assert words == {"sks": 3, "photo": 2, "beach": 1}


@pytest.mark.parametrize(
    ("resolutions", "bucketing", "no_upscale", "repeats"),
    [
        ([64], True, False, 1),
        ([64, 96], True, False, 3),
        ([64], False, True, 2),
        ([128], True, True, 1),
    ],
)
def test_epoch_bucket_counts_are_the_trainers(
    demo_dataset: Path, resolutions: list[int], bucketing: bool, no_upscale: bool, repeats: int
) -> None:
    from trainer.data.batches import BucketBatches  # imports torch: only this test needs it

    ds = DatasetConfig(
        folder_path=str(demo_dataset),
        resolution=resolutions,
        enable_bucketing=bucketing,
        bucket_no_upscale=no_upscale,
        num_repeats=repeats,
    )
    scan = scan_dataset(ds, demo_dataset)
    trainer = BucketBatches([scan], batch_size=2, size_multiple=8).bucket_counts
    counted = epoch_bucket_counts(
        [(i.width, i.height) for i in scan.images],
        resolutions,
        8,
        enable_bucketing=bucketing,
        no_upscale=no_upscale,
        repeats=repeats,
    )
    assert list(counted.items()) == list(trainer.items())  # same buckets, counts and order
