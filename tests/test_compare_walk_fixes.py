"""A newcomer's walk of the Compare page with a 40-step and an 80-step run of one seed: the later
samples of the longer run can be picked (a run without a sample there says which steps it has),
the overlap note says its gap is measured over the steps both runs logged (never "0.0%"), and the
artifacts list sums the checkpoints logged to MLflow up in one line."""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace

import pytest
from compare_runs import logged_run
from streamlit.testing.v1 import AppTest

from trainer.settings import load_settings
from trainer.tracking.artifacts import SampleImage
from ui.compare_actions import adapter_lines
from ui.compare_curves import Overlap, gap_text, overlap_caption
from ui.compare_samples import missing_sample, sample_steps, slider_missing

ROOT = Path(__file__).resolve().parent.parent


def _images(*steps: int) -> list[SampleImage]:
    return [
        SampleImage(step=s, key="sample_0", path_or_uri="", prompt=None, seed=None) for s in steps
    ]


# ------------------------------------------------------------------------ pure functions
def test_sample_steps_offer_every_step_any_run_sampled() -> None:
    short, long = _images(10, 20, 30, 40), _images(10, 20, 30, 40, 50, 60, 70, 80)
    steps, first = sample_steps({"a": short, "b": long})
    assert steps == [10, 20, 30, 40, 50, 60, 70, 80]  # was [10, 20, 30, 40]: the shared steps
    assert first == 40  # the newest step both sampled
    assert sample_steps({"a": _images(5), "b": _images(10, 20)}) == ([5, 10, 20], 20)  # none shared
    assert sample_steps({"a": [], "b": _images(10)}) == ([10], 10)
    assert sample_steps({"a": [], "b": []}) == ([], None)


def test_a_run_without_a_sample_at_the_step_says_which_steps_it_has() -> None:
    short = _images(10, 20, 30, 40)
    assert missing_sample(40, short) is None
    assert missing_sample(60, short) == "No sample at step 60: this run sampled at steps 10–40."
    assert (
        missing_sample(60, _images(40)) == "No sample at step 60: this run sampled only at step 40."
    )
    assert missing_sample(60, []) == "No sample at step 60: this run logged no samples."


def test_the_slider_says_why_it_is_not_shown() -> None:
    labels = {"a": "short_run", "b": "long_run"}
    pair = {"a": _images(10, 20, 30, 40), "b": _images(10, 20, 40, 80)}
    assert slider_missing(40, pair, labels) is None
    assert slider_missing(80, pair, labels) == (
        "No slider at step 80: short_run has no sample there (it sampled at steps 10–40)."
    )
    assert slider_missing(30, pair, labels) == (
        "No slider at step 30: long_run has no sample there (it sampled at steps 10–80)."
    )


def test_gap_text_never_says_zero() -> None:
    assert gap_text(0.0) == "< 0.1%" and gap_text(0.0004) == "< 0.1%"
    assert gap_text(0.0006) == "0.1%" and gap_text(0.004) == "0.4%" and gap_text(0.02) == "2.0%"


def test_overlap_caption_says_the_gap_is_over_the_steps_both_logged() -> None:
    runs = [
        SimpleNamespace(name=n, run_id=n * 8, params={"train.seed": "3"}) for n in ("a", "b", "c")
    ]
    text = overlap_caption(runs[:2], [Overlap("a", "b", 0.0002, 40)])
    assert text.startswith(
        "Over the 40 steps both logged, the raw losses of a and b are on average < 0.1% apart."
    )
    assert "0.0%" not in text and "share seed 3" in text
    text = overlap_caption(runs, [Overlap("a", "b", 0.004, 40), Overlap("a", "c", 0.02, 12)])
    assert text.startswith(
        "The raw loss of a nearly coincides with that of b (0.4% apart over the 40 steps both "
        "logged) and c (2.0% apart over the 12 steps both logged)."
    )


def test_checkpoints_are_summed_up_in_one_line() -> None:
    files = [
        "lora/README.md",
        "lora/my_lora.safetensors",
        *(f"checkpoints/step_{s:08d}/my_lora.safetensors" for s in range(10, 301, 10)),
        "checkpoints/step_00000300/extra.json",  # a second file of one checkpoint: still one
    ]
    assert adapter_lines(files) == [
        "- `lora/README.md`",
        "- `lora/my_lora.safetensors`",
        "- 30 checkpoints in MLflow under `checkpoints/` (steps 10–300)",
    ]
    one = adapter_lines(["checkpoints/step_00000010/my_lora.safetensors"])
    assert one == ["- 1 checkpoint in MLflow under `checkpoints/` (step 10)"]
    odd = adapter_lines(["checkpoints/manual/x.safetensors", "checkpoints/step_10/x.safetensors"])
    assert odd == ["- 2 checkpoints in MLflow under `checkpoints/` (step 10)"]
    assert adapter_lines([]) == []


# ------------------------------------------------------------------------ the page
def _run(settings, name: str, steps: int, loss: list[float], saves: int, tmp: Path) -> str:
    run_id, tracker = logged_run(settings, name, steps, loss)
    folder = tmp / name
    (folder / "lora").mkdir(parents=True)
    (folder / "lora" / f"{name}.safetensors").write_bytes(b"final")
    for step in range(10, 10 * saves + 1, 10):
        ckpt = folder / "checkpoints" / f"step_{step:08d}"
        ckpt.mkdir(parents=True)
        (ckpt / f"{name}.safetensors").write_bytes(b"ckpt")
    tracker.log_artifacts(folder)
    tracker.end("FINISHED")
    return run_id


@pytest.fixture(scope="module")
def walk(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("walk")
    (root / "home").mkdir()
    settings = load_settings(home=root / "home", tracking_uri_override=None)
    rng = random.Random(5)
    loss = [0.05 + 0.8 * rng.random() for _ in range(80)]
    short = _run(settings, "short_run", 40, loss, 4, root)
    long = _run(settings, "long_run", 80, [v * 1.0003 for v in loss], 8, root)
    return {"settings": settings, "short": short, "long": long}


@pytest.fixture()
def app(walk: dict, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("STUDIO_HOME", str(walk["settings"].home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=60)
    at.run()
    at.switch_page("pages/compare.py").run()
    at.multiselect(key="cmp:picked").set_value([walk["short"], walk["long"]]).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _captions(at: AppTest) -> list[str]:
    return [c.value for c in at.caption]


def test_the_longer_runs_later_samples_can_be_picked(app: AppTest) -> None:
    # the runs end at different steps: the page starts on each run's last samples
    app.radio(key="cmp:sample_mode").set_value("Samples at one step").run()
    slider = app.select_slider(key="cmp:sample_step")
    assert list(slider.options) == [str(s) for s in range(10, 81, 10)]
    assert slider.value == 40  # the newest step both runs sampled
    assert len(app.get("image")) == 2 and "cmp:slider" in {
        el.key for el in app.get("bidi_component")
    }
    slider.set_value(60).run()
    assert not app.exception, [e.value for e in app.exception]
    captions = _captions(app)
    assert "No sample at step 60: this run sampled at steps 10–40." in captions
    assert (
        "No slider at step 60: short_run has no sample there (it sampled at steps 10–40)."
        in captions
    )
    assert len(app.get("image")) == 1  # the long run's sample at step 60
    assert "cmp:slider" not in {el.key for el in app.get("bidi_component")}


def test_the_overlap_note_says_over_which_steps(app: AppTest) -> None:
    [note] = [c for c in _captions(app) if "raw losses" in c]
    assert (
        "Over the 40 steps both logged" in note and "on average \\< 0.1% apart" in note
    )  # markdown: "<"
    assert "0.0%" not in note


def test_the_artifacts_list_sums_checkpoints_up(app: AppTest) -> None:
    adapters = [c for c in _captions(app) if "lora/" in c]
    assert adapters == [
        "- `lora/short_run.safetensors`\n"
        "- 4 checkpoints in MLflow under `checkpoints/` (steps 10–40)",
        "- `lora/long_run.safetensors`\n"
        "- 8 checkpoints in MLflow under `checkpoints/` (steps 10–80)",
    ]
