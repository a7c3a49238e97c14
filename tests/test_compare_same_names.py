"""Runs that share a name (every new config is called 'my_lora'): the compare page still shows
each run apart — a value column each in the diff, a curve each, its own sample captions — and a
launch gives a taken name the next free number. Runs are made by the tracking module
(``create_run`` + ``MlflowTracker``) in a temporary SQLite store; no trainer process runs."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from trainer.config.io import load_config
from trainer.config.schema import TrainingConfig
from trainer.settings import StudioSettings, load_settings
from trainer.tracking.mlflow_tracker import MlflowTracker
from trainer.tracking.new_run import create_run
from trainer.tracking.records import get_run_record
from trainer.tracking.run_names import free_name, run_labels, taken_run_names

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "presets" / "demo_sd15.yaml"
LRS = (1e-4, 3e-4)
COLOURS = ((200, 30, 30), (30, 30, 200))


def _config(lr: float) -> TrainingConfig:
    return TrainingConfig.model_validate(
        {
            "model": {"arch": "sd15", "name_or_path": "demo:sd15"},
            "train": {"lr": lr, "steps": 4},
            "logging": {"log_system_metrics": False},
        }
    )


def _store(home: Path) -> StudioSettings:
    home.mkdir(parents=True, exist_ok=True)
    return load_settings(home=home, tracking_uri_override=None)


@pytest.fixture(scope="module")
def twins(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two finished runs named 'my_lora' (the default), lr 1e-4 and 3e-4, a sample each."""
    settings = _store(tmp_path_factory.mktemp("twins") / "home")
    ids = []
    for lr, colour in zip(LRS, COLOURS, strict=True):
        cfg = _config(lr)
        assert cfg.name == "my_lora"  # the default this is about
        run_id = create_run(settings, cfg)
        tracker = MlflowTracker(settings.tracking_uri, background=False)
        tracker.start(cfg, run_id=run_id)
        for step in range(4):
            loss = 1 / (1 + step) + lr * 1000
            tracker.log_metrics({"loss": loss, "loss_smoothed": loss, "lr": lr}, step)
        image = Image.new("RGB", (64, 64), colour)
        tracker.log_image(image, "sample_0", 2, {"prompt": "a red circle", "seed": 1})
        tracker.end("FINISHED")
        ids.append(run_id)
    return {"settings": settings, "ids": ids}


@pytest.fixture()
def app(twins: dict, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("STUDIO_HOME", str(twins["settings"].home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=60)
    at.run()
    at.switch_page("pages/compare.py").run()
    assert not at.exception, [e.value for e in at.exception]
    at.multiselect(key="cmp:picked").set_value(twins["ids"]).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _labels(twins: dict) -> list[str]:
    a, b = twins["ids"]
    return [f"my_lora · {a[:8]}", f"my_lora · {b[:8]}"]


def test_run_labels_add_the_short_id_only_where_names_collide() -> None:
    runs = [
        SimpleNamespace(name="my_lora", run_id="aaaaaaaa1111"),
        SimpleNamespace(name="my_lora", run_id="bbbbbbbb2222"),
        SimpleNamespace(name="cats", run_id="cccccccc3333"),
        SimpleNamespace(name="", run_id="dddddddd4444"),
    ]
    assert run_labels(runs) == {
        "aaaaaaaa1111": "my_lora · aaaaaaaa",
        "bbbbbbbb2222": "my_lora · bbbbbbbb",
        "cccccccc3333": "cats",
        "dddddddd4444": "dddddddd",
    }
    assert run_labels(runs[1:3]) == {"bbbbbbbb2222": "my_lora", "cccccccc3333": "cats"}


def test_the_diff_shows_both_learning_rates(app: AppTest, twins: dict) -> None:
    left, right = _labels(twins)
    rows = [row for t in app.table for row in t.value.to_dict("records")]
    [lr] = [r for r in rows if r["setting"] == "train.lr"]
    assert float(lr[left]) == LRS[0] and float(lr[right]) == LRS[1]  # a column per run
    assert not any(r["setting"] == "name" for r in rows)  # the names are the same
    assert f"**{left}** → **{right}**" in [m.value for m in app.markdown]


def test_each_run_has_its_own_curve(app: AppTest, twins: dict) -> None:
    import pyarrow as pa

    charts = app.get("arrow_vega_lite_chart") or app.get("vega_lite_chart")
    loss, lr = (
        pa.ipc.open_stream(c.proto.datasets[0].data.data).read_all().to_pydict() for c in charts
    )
    assert set(loss["run"]) == set(_labels(twins))  # two series, two legend entries
    points = zip(loss["run"], loss["metric"], loss["step"], strict=True)
    per_run: dict[str, list[int]] = {}
    for run, metric, step in points:
        if metric == "loss":
            per_run.setdefault(run, []).append(step)
    assert all(sorted(steps) == [0, 1, 2, 3] for steps in per_run.values())  # not one zigzag line
    by_run = dict(zip(lr["run"], lr["value"], strict=True))
    assert [by_run[label] for label in _labels(twins)] == list(LRS)


def test_sample_captions_name_each_run(app: AppTest, twins: dict) -> None:
    import json

    left, right = _labels(twins)
    headings = [m.value for m in app.markdown]
    assert f"**{left}**" in headings and f"**{right}**" in headings
    captions = [c.value for c in app.caption]
    assert f"◀ {left} | {right} ▶ (step 2): drag the divider to compare" in captions
    (slider,) = [el for el in app.get("bidi_component") if el.key == "cmp:slider"]
    shown = json.loads(slider.proto.json)
    assert (shown["label1"], shown["label2"]) == (left, right)


def test_free_name_counts_on_from_the_taken_numbers() -> None:
    assert free_name("my_lora", []) == "my_lora"
    assert free_name("my_lora", ["my_lora"]) == "my_lora_2"
    assert free_name("my_lora", ["my_lora", "my_lora_2"]) == "my_lora_3"
    assert free_name("my_lora_2", ["my_lora", "my_lora_2"]) == "my_lora_3"
    assert free_name("sdxl_1024", ["sdxl_1024"]) == "sdxl_1024_2"  # its digits are its own
    long = "x" * 100
    assert free_name(long, [long]) == "x" * 98 + "_2"  # the config allows 100 characters


def test_a_launch_gives_a_taken_name_the_next_number(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trainer.jobs import launch as launching

    settings = _store(tmp_path / "home")
    spawned: list[str] = []

    def no_process(settings, run_id, folder, cmd, *, name, **_):
        spawned.append(name)  # what the job file and the monitor would call it
        return launching.LaunchedJob(run_id, folder, 0, cmd, folder, folder, "cpu", 0.0, name=name)

    monkeypatch.setattr(launching, "_spawn", no_process)
    names = []
    for _ in range(3):
        job = launching.launch(settings, load_config(DEMO, ["name=my_lora"]))
        saved = load_config(job.job_dir / "config.yaml")
        rec = get_run_record(settings.tracking_uri, job.run_id)
        assert rec.name == saved.name == job.name  # the run, its config and its files agree
        names.append(rec.name)
    assert names == ["my_lora", "my_lora_2", "my_lora_3"] and spawned == names
    assert taken_run_names(settings.tracking_uri, "my_lora") == set(names)
    # a run name set in the config is the one that gets the number; the files keep theirs
    first = launching.launch(settings, load_config(DEMO, ["logging.run_name=team"]))
    again = launching.launch(settings, load_config(DEMO, ["logging.run_name=team"]))
    assert [first.name, again.name] == ["team", "team_2"]
    assert load_config(again.job_dir / "config.yaml").name == "demo_sd15"


def test_curves_of_distinct_losses_get_their_own_colours_and_no_noise_note(
    app: AppTest, twins: dict
) -> None:
    import json

    from ui.compare_curves import RUN_COLOURS

    charts = app.get("arrow_vega_lite_chart") or app.get("vega_lite_chart")
    scales = [json.loads(c.proto.spec)["encoding"]["color"]["scale"] for c in charts]
    expected = {"domain": _labels(twins), "range": list(RUN_COLOURS[:2])}
    assert [{k: s[k] for k in ("domain", "range")} for s in scales] == [expected, expected]
    captions = " ".join(c.value for c in app.caption)
    assert "random noise level" not in captions  # lr 1e-4 vs 3e-4 here: losses 0.2 apart
