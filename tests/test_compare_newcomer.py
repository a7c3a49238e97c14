"""A newcomer's two demo runs on the compare page: the second differs only in its learning rate,
and both drew the same noise (same seed), so their raw losses nearly coincide.

The page opens with the two most recent finished runs picked, lists the learning rate as a
column of the runs table, draws each run in its own colour of a categorical palette (the same in
every chart) and explains why the raw losses overlap. Runs are made by the tracking module
(``create_run`` + ``MlflowTracker``) in a temporary SQLite store; no trainer process runs."""

from __future__ import annotations

import colorsys
import json
import random
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from streamlit.testing.v1 import AppTest
from ui_support import texts

from trainer.config.schema import TrainingConfig
from trainer.settings import load_settings
from trainer.tracking.mlflow_tracker import MlflowTracker
from trainer.tracking.new_run import create_run
from ui.compare_curves import RUN_COLOURS, Overlap, near_identical, overlap_caption
from ui.compare_table import differing_settings, latest_finished

ROOT = Path(__file__).resolve().parent.parent
STEPS = 12
OVERLAP_WORDS = "mostly reflects the random noise level drawn at each step"


def _noise_loss(seed: int) -> list[float]:
    """A diffusion-like raw loss: each step's value is set by the noise level drawn for it."""
    rng = random.Random(seed)
    return [0.05 + 0.8 * rng.random() for _ in range(STEPS)]


def _run(settings, name: str, lr: float, loss: list[float], status: str | None, seed=42) -> str:
    cfg = TrainingConfig.model_validate(
        {
            "name": name,
            "model": {"arch": "sd15", "name_or_path": "demo:sd15"},
            "train": {"lr": lr, "steps": STEPS, "seed": seed},
            "logging": {"log_system_metrics": False},
        }
    )
    run_id = create_run(settings, cfg)
    tracker = MlflowTracker(settings.tracking_uri, background=False)
    tracker.start(cfg, run_id=run_id)
    for step, value in enumerate(loss):
        smoothed = sum(loss[: step + 1]) / (step + 1)
        tracker.log_metrics({"loss": value, "loss_smoothed": smoothed, "lr": lr}, step)
    if status:
        tracker.end(status)
    time.sleep(0.02)  # start times apart: "most recent" is well defined
    return run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict:
    home = tmp_path_factory.mktemp("newcomer") / "home"
    home.mkdir()
    settings = load_settings(home=home, tracking_uri_override=None)
    noise = _noise_loss(7)
    older = _run(settings, "first_try", 1e-4, _noise_loss(3), "FINISHED", seed=1)
    first = _run(settings, "my_lora", 1e-4, noise, "FINISHED")
    second = _run(settings, "my_lora_2", 2e-4, [v * 1.004 for v in noise], "FINISHED")
    failed = _run(settings, "broken", 1e-4, noise[:3], "FAILED")  # newest, but not finished
    return {
        "settings": settings,
        "older": older,
        "first": first,
        "second": second,
        "failed": failed,
    }


def _open(store: dict, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("STUDIO_HOME", str(store["settings"].home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=60)
    at.run()
    at.switch_page("pages/compare.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


@pytest.fixture()
def app(store: dict, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    return _open(store, monkeypatch)


def _charts(at: AppTest) -> list:
    return at.get("arrow_vega_lite_chart") or at.get("vega_lite_chart")


def _colour_scale(chart) -> dict[str, str]:
    spec = json.loads(chart.proto.spec)
    scale = spec["encoding"]["color"]["scale"]
    return dict(zip(scale["domain"], scale["range"], strict=True))


def _hue(colour: str) -> float:
    r, g, b = (int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5))
    return colorsys.rgb_to_hsv(r, g, b)[0] * 360


# ------------------------------------------------------------------ opens on the two latest runs
def test_the_page_opens_on_the_two_latest_finished_runs(app: AppTest, store: dict) -> None:
    assert app.multiselect(key="cmp:picked").value == [store["first"], store["second"]]
    assert "Pick two or more runs" not in texts(app)
    rows = [row for t in app.table for row in t.value.to_dict("records")]
    [lr] = [r for r in rows if r["setting"] == "train.lr"]
    assert (float(lr["my_lora"]), float(lr["my_lora_2"])) == (1e-4, 2e-4)  # baseline: the older
    assert len(_charts(app)) == 2  # loss and learning rate, without a pick


def test_a_cleared_pick_stays_cleared_in_the_session(app: AppTest) -> None:
    app.multiselect(key="cmp:picked").set_value([]).run()
    assert "Pick two or more runs" in texts(app)
    app.switch_page("pages/review.py").run()
    app.switch_page("pages/compare.py").run()
    assert not app.exception
    assert app.multiselect(key="cmp:picked").value == []  # remembered: no preselection again
    assert not _charts(app)


def test_latest_finished_skips_running_and_failed_runs() -> None:
    def rec(name: str, minute: int, status: str = "FINISHED"):
        from datetime import UTC, datetime

        return SimpleNamespace(
            name=name, status=status, start_time=datetime(2026, 1, 1, 0, minute, tzinfo=UTC)
        )

    runs = [rec("c", 3, "RUNNING"), rec("a", 1), rec("d", 4, "FAILED"), rec("b", 2), rec("z", 0)]
    assert [r.name for r in latest_finished(runs)] == ["a", "b"]  # older first: the baseline
    assert [r.name for r in latest_finished(runs[:2])] == ["a"]
    assert latest_finished([]) == []


# ------------------------------------------------------------------------ the settings columns
def test_the_table_shows_the_learning_rate_that_differs(app: AppTest, store: dict) -> None:
    df = app.dataframe[0].value
    assert "Learning rate" in df.columns
    by_id = dict(zip(df["run id"], df["Learning rate"], strict=True))
    assert float(by_id[store["first"]]) == 1e-4 and float(by_id[store["second"]]) == 2e-4
    assert "Seed" in df.columns  # first_try used seed 1
    assert "LoRA name" not in df.columns and "Training steps" not in df.columns  # shown already
    columns = list(df.columns)
    assert columns.index("status") < columns.index("Learning rate") < columns.index("arch")


def _params_run(**params: str):
    return SimpleNamespace(params=params)


def test_differing_settings_ranks_key_settings_first_and_caps_the_columns() -> None:
    runs = [
        _params_run(
            **{
                "name": f"r{i}",
                "train.lr": str(1e-4 * (i + 1)),
                "network.linear": str(8 * (i + 1)),
                "train.seed": "42",
                "sample.sampler": ("euler", "ddim")[i],
                "model.vae_path": ("null", "vae")[i],
                "train.noise_offset": str(i / 10),
                "runtime.num_workers": str(i),
                "save.save_every": str(i + 1),
                "datasets.0.folder_path": f"d{i}",
            }
        )
        for i in range(2)
    ]
    columns, more = differing_settings(runs, limit=3)
    assert columns == {
        "network.linear": "Rank (dim)",  # the advisor's key settings first, in its order
        "train.lr": "Learning rate",
        "train.noise_offset": "Noise offset",
    }
    assert more == 2  # model.vae_path, sample.sampler (bookkeeping and shown columns never count)
    assert differing_settings(runs[:1]) == ({}, 0)  # one run: nothing differs


def test_a_setting_missing_from_older_runs_does_not_count_as_different() -> None:
    runs = [
        _params_run(**{"train.lr": "0.0001", "train.new_thing": "1"}),
        _params_run(**{"train.lr": "0.0001"}),
    ]
    assert differing_settings(runs) == ({}, 0)


# -------------------------------------------------------------------------- colours and overlap
def test_each_run_has_one_distinct_colour_in_every_chart(app: AppTest) -> None:
    loss, lr = (_colour_scale(c) for c in _charts(app))
    assert loss == lr == {"my_lora": RUN_COLOURS[0], "my_lora_2": RUN_COLOURS[1]}
    gap = abs(_hue(loss["my_lora"]) - _hue(loss["my_lora_2"]))
    assert min(gap, 360 - gap) > 90  # blue and orange, never two shades of one hue
    assert len(set(RUN_COLOURS)) == len(RUN_COLOURS) == 10


def test_three_runs_keep_their_colours_across_charts(app: AppTest, store: dict) -> None:
    picked = [store["older"], store["first"], store["second"]]
    app.multiselect(key="cmp:picked").set_value(picked).run()
    loss, lr = (_colour_scale(c) for c in _charts(app))
    assert list(loss) == ["first_try", "my_lora", "my_lora_2"] and loss == lr
    assert len(set(loss.values())) == 3


def test_overlapping_raw_losses_get_the_noise_caption(app: AppTest) -> None:
    [caption] = [c.value for c in app.caption if OVERLAP_WORDS in c.value]
    assert "Over the 12 steps both logged, the raw losses of my_lora and my_lora_2" in caption
    assert "are on average 0.4% apart" in caption
    assert "share seed 42" in caption and "smoothed loss" in caption and "samples" in caption


def test_runs_with_different_losses_get_no_noise_caption(app: AppTest, store: dict) -> None:
    app.multiselect(key="cmp:picked").set_value([store["older"], store["first"]]).run()
    assert len(_charts(app)) == 2
    assert OVERLAP_WORDS not in texts(app)


def test_near_identical_measures_against_the_baseline() -> None:
    import pandas as pd

    def frame(series: dict[str, list[float]]):
        rows = [
            {"run": run, "metric": "loss", "step": s, "seconds": s, "value": v}
            for run, values in series.items()
            for s, v in enumerate(values)
        ]
        return pd.DataFrame(rows)

    base = [0.5, 0.1, 0.9, 0.3]
    data = frame({"a": base, "b": [v * 1.02 for v in base], "c": [v * 1.1 for v in base]})
    [(first, other, gap, steps)] = near_identical(data, ["a", "b", "c"])
    assert (first, other, steps) == ("a", "b", 4) and gap == pytest.approx(0.02, rel=0.05)
    assert near_identical(data, ["c", "a"]) == []  # 10 % apart: curves a reader can tell apart
    assert near_identical(frame({"a": [0.5], "b": [0.5]}), ["a", "b"]) == []  # one shared step
    runs = [SimpleNamespace(name=n, run_id=f"{n}" * 8, params={"train.seed": "3"}) for n in "ab"]
    text = overlap_caption(runs, [Overlap("a", "b", 0.02, 4)])
    assert "the raw losses of a and b are on average 2.0% apart" in text
    assert "Over the 4 steps both logged" in text and "share seed 3" in text
    runs[1].params["train.seed"] = "4"
    assert "share seed" not in overlap_caption(runs, [Overlap("a", "b", 0.02, 4)])
