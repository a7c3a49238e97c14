"""A newcomer's Compare walk with a 30-step and a 60-step run of one seed: the samples start on
each run's last ones (the one-step slider left the shorter run's column and the two-run slider
empty at the longer run's end), every sample of the row is drawn at one width (a 64 px sample
enlarged to 192 px sat beside a 160 px one enlarged to 320), the loss chart's line-style legend
says what each dash means, and same-seed runs' coinciding lines are drawn at widths that keep
both colours in sight."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from compare_runs import logged_run
from PIL import Image
from streamlit.testing.v1 import AppTest

from trainer.settings import load_settings
from trainer.tracking.artifacts import SampleImage
from trainer.tracking.ratings import sample_ratings
from trainer.tracking.records import get_run_record
from ui.compare_curves import LOSS_STYLES, loss_frame, run_widths
from ui.compare_samples import (
    MODE_LAST,
    MODE_STEP,
    _thumb,
    at_step,
    default_mode,
    last_missing,
    last_steps,
    thumb_width,
)

ROOT = Path(__file__).resolve().parent.parent


def _images(*steps: int, key: str = "sample_0") -> list[SampleImage]:
    return [SampleImage(step=s, key=key, path_or_uri="", prompt=None, seed=None) for s in steps]


# ------------------------------------------------------------------------ pure functions
def test_runs_ending_at_different_steps_start_on_their_last_samples() -> None:
    short, long = _images(10, 20, 30), _images(10, 20, 30, 40, 50, 60)
    assert last_steps({"a": short, "b": long, "c": []}) == {"a": 30, "b": 60, "c": None}
    assert default_mode({"a": short, "b": long}) == MODE_LAST
    assert default_mode({"a": long, "b": _images(60)}) == MODE_STEP  # they end together
    assert default_mode({"a": short, "b": []}) == MODE_STEP  # one run has nothing to compare
    assert default_mode({"a": short}) == MODE_STEP


def test_a_step_sampled_twice_shows_its_newest_image_once() -> None:
    older, newer = _images(30), _images(30)
    older[0].timestamp, newer[0].timestamp = 1, 2
    images = [*_images(20), *older, *newer, *_images(30, key="sample_1")]
    shown = at_step(images, 30)
    assert [s.key for s in shown] == ["sample_0", "sample_1"]
    assert shown[0] is newer[0]


def test_the_slider_says_which_run_has_no_last_samples() -> None:
    labels = {"a": "short_run", "b": "long_run"}
    assert last_missing({"a": _images(30), "b": _images(60)}, labels) is None
    assert last_missing({"a": [], "b": _images(60)}, labels) == (
        "No slider: short_run logged no samples."
    )


def test_samples_of_different_sizes_get_one_width(tmp_path: Path) -> None:
    paths = {}
    for px in (64, 160, 512):
        paths[px] = str(tmp_path / f"s{px}.png")
        Image.new("RGB", (px, px), (200, 30, 30)).save(paths[px])
    assert thumb_width([paths[64], paths[160]]) == 192  # at least a thumbnail
    assert thumb_width([paths[64], paths[512]]) == 512  # the widest sample's
    assert thumb_width([]) == 192
    # the images handed over are at least that wide: the page only ever scales them down
    assert _thumb(paths[64], 512).size == (512, 512)  # pixel for pixel, x8
    assert _thumb(paths[160], 192).size == (320, 320)
    assert _thumb(paths[512], 512) == paths[512]  # the file itself


def test_the_loss_lines_have_readable_names_and_the_baseline_is_widest() -> None:
    import pandas as pd

    from trainer.tracking.layout import METRIC_VAL_LOSS

    data = pd.DataFrame(
        {"run": "a", "metric": ["loss", "loss_smoothed", METRIC_VAL_LOSS, "lr"], "value": 1.0}
    )
    assert list(loss_frame(data).curve) == [
        "raw loss (faint, dashed)",
        "smoothed loss (solid)",
        "validation loss (long dashes)",
    ]
    assert set(LOSS_STYLES) == {"loss", "loss_smoothed", METRIC_VAL_LOSS}  # keyed by metric
    from types import SimpleNamespace

    runs = [SimpleNamespace(name=f"r{i}", run_id=f"{i}" * 12) for i in range(5)]
    assert list(run_widths(runs).values()) == [3.5, 2.0, 1.0, 1.0, 1.0]


# ------------------------------------------------------------------------ the page
def _run(settings, name: str, steps: int, loss: list[float], tmp: Path) -> str:
    run_id, tracker = logged_run(settings, name, steps, loss)
    # a second prompt at its own size (160 px): it was drawn wider than the 64 px one
    big = Image.new("RGB", (160, 160), (30, 30, 200))
    tracker.log_image(big, "sample_1", steps, {"prompt": "a blue square", "seed": 1})
    tracker.end("FINISHED")
    return run_id


@pytest.fixture(scope="module")
def walk(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("walk8")
    (root / "home").mkdir()
    settings = load_settings(home=root / "home", tracking_uri_override=None)
    rng = random.Random(5)
    loss = [0.05 + 0.8 * rng.random() for _ in range(60)]
    short = _run(settings, "short_run", 30, loss, root)
    long = _run(settings, "long_run", 60, loss, root)  # one seed: the same raw loss
    twin = _run(settings, "twin_run", 60, loss, root)  # ends where long_run does
    return {"settings": settings, "short": short, "long": long, "twin": twin}


@pytest.fixture()
def drawn(monkeypatch: pytest.MonkeyPatch) -> list[tuple[object, tuple[int, int]]]:
    """``(width, pixel size)`` of every ``st.image`` call, in order."""
    from streamlit.elements.image import ImageMixin

    calls: list[tuple[object, tuple[int, int]]] = []
    original = ImageMixin.image

    def image(self, image, *args, **kwargs):
        if isinstance(image, str):
            with Image.open(image) as opened:
                size = opened.size
        else:
            size = image.size
        calls.append((kwargs.get("width", "content"), size))
        return original(self, image, *args, **kwargs)

    monkeypatch.setattr(ImageMixin, "image", image)
    return calls


@pytest.fixture()
def app(walk: dict, drawn: list, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("STUDIO_HOME", str(walk["settings"].home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=60)
    at.run()
    at.switch_page("pages/compare.py").run()
    at.multiselect(key="cmp:picked").set_value([walk["short"], walk["long"]]).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _image_captions(at: AppTest) -> list[str]:
    return [img.caption for el in at.get("image") for img in el.proto.imgs]


def test_the_page_starts_on_each_runs_last_samples(app: AppTest, walk: dict) -> None:
    mode = app.radio(key="cmp:sample_mode")
    assert list(mode.options) == [MODE_LAST, MODE_STEP] and mode.value == MODE_LAST
    assert "cmp:sample_step" not in {el.key for el in app.select_slider}
    assert _image_captions(app) == [
        "step 30 (last): a red circle",
        "step 30 (last): a blue square",
        "step 60 (last): a red circle",
        "step 60 (last): a blue square",
    ]
    assert not [c.value for c in app.caption if c.value.startswith("No sample")]
    (slider,) = [el for el in app.get("bidi_component") if el.key == "cmp:slider"]
    shown = json.loads(slider.proto.json)
    assert (shown["label1"], shown["label2"]) == (
        "short_run (step 30, last)",
        "long_run (step 60, last)",
    )
    assert (
        "◀ short_run (step 30, last) | long_run (step 60, last) ▶: drag the divider to compare"
        in [c.value for c in app.caption]
    )
    # the one-step view is still there, at the newest step both runs sampled
    mode.set_value(MODE_STEP).run()
    assert not app.exception, [e.value for e in app.exception]
    assert app.select_slider(key="cmp:sample_step").value == 30
    assert _image_captions(app) == ["a red circle", "a blue square", "a red circle"]


def test_last_samples_are_rated_at_their_own_step(app: AppTest, walk: dict) -> None:
    uri, short, long = walk["settings"].tracking_uri, walk["short"], walk["long"]
    app.selectbox(key=f"cmp:srate:{long[:12]}:60:sample_1").set_value(5).run()
    assert not app.exception, [e.value for e in app.exception]
    assert sample_ratings(get_run_record(uri, long).tags) == {(60, "sample_1"): 5}
    assert app.selectbox(key=f"cmp:srate:{short[:12]}:30:sample_0").value == 0
    app.selectbox(key=f"cmp:srate:{long[:12]}:60:sample_1").set_value(0).run()  # clears it
    assert sample_ratings(get_run_record(uri, long).tags) == {}


def test_every_sample_is_drawn_at_one_width(app: AppTest, drawn: list) -> None:
    drawn.clear()
    app.run()
    samples = drawn  # two runs' 64 px and 160 px samples
    assert {width for width, _ in samples} == {192}  # was 'content': each at its own size
    assert sorted(size for _, size in samples) == [(192, 192)] * 2 + [(320, 320)] * 2
    assert all(size[0] >= 192 for _, size in samples)  # never blown up by the browser
    app.radio(key="cmp:sample_mode").set_value(MODE_STEP).run()
    assert {width for width, _ in drawn[-3:]} == {192}


def test_the_line_style_legend_names_each_line(app: AppTest) -> None:
    import pyarrow as pa

    loss_chart, lr_chart = app.get("arrow_vega_lite_chart") or app.get("vega_lite_chart")
    spec = json.loads(loss_chart.proto.spec)
    dash = spec["encoding"]["strokeDash"]
    assert dash["field"] == "curve" and dash["title"] == "line style"
    assert dash["scale"]["domain"] == ["raw loss (faint, dashed)", "smoothed loss (solid)"]
    assert dash["scale"]["range"] == [[4, 3], [1, 0]]
    assert spec["encoding"]["opacity"]["scale"]["range"] == [0.45, 1.0]
    # channels of one field share a legend: one of them without it hid the run legend too
    hidden = [ch for ch, enc in spec["encoding"].items() if "legend" in enc and not enc["legend"]]
    assert hidden == []
    assert spec["encoding"]["opacity"]["title"] == "line style"
    assert spec["encoding"]["strokeWidth"]["title"] == spec["encoding"]["color"]["title"] == "run"
    data = pa.ipc.open_stream(loss_chart.proto.datasets[0].data.data).read_all().to_pydict()
    assert set(data["curve"]) == {"raw loss (faint, dashed)", "smoothed loss (solid)"}
    for chart in (loss_chart, lr_chart):  # same seed: the later run drawn thinner, on top
        width = json.loads(chart.proto.spec)["encoding"]["strokeWidth"]
        assert width["scale"] == {"domain": ["short_run", "long_run"], "range": [3.5, 2.0]}


def test_the_choice_follows_the_picked_runs_until_the_user_makes_one(
    app: AppTest, walk: dict
) -> None:
    short, long, twin = walk["short"], walk["long"], walk["twin"]
    pick = app.multiselect(key="cmp:picked")
    assert app.radio(key="cmp:sample_mode").value == MODE_LAST
    pick.set_value([twin, long]).run()  # they end together: one step (the radio kept LAST)
    assert app.radio(key="cmp:sample_mode").value == MODE_STEP
    assert app.select_slider(key="cmp:sample_step").value == 60
    pick.set_value([short, long]).run()
    assert app.radio(key="cmp:sample_mode").value == MODE_LAST
    app.radio(key="cmp:sample_mode").set_value(MODE_STEP).run()
    pick.set_value([short, long, twin]).run()  # the default is the same: the user's choice stays
    assert not app.exception, [e.value for e in app.exception]
    assert app.radio(key="cmp:sample_mode").value == MODE_STEP
    assert app.select_slider(key="cmp:sample_step").value == 30
