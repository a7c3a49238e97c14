"""Compare opens a sweep together (ui/compare_groups.py): runs in a real SQLite store carrying the
group tag are picked together, ranked by the chosen metric and then by the user's ratings; and
"queue variants of this run" queues a sweep of a run's logged config."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from options_support import tiny_config
from streamlit.testing.v1 import AppTest

import ui.sweep_form
from trainer.jobs.queue import entries
from trainer.settings import load_settings
from trainer.tracking.layout import TAG_BEST_VAL_LOSS, TAG_GROUP
from trainer.tracking.mlflow_tracker import MlflowTracker
from trainer.tracking.new_run import create_run
from trainer.tracking.ratings import set_rating
from trainer.tracking.records import RunRecord, list_all_runs
from ui.compare_groups import (
    NONE,
    RATING,
    metric_choices,
    rank_runs,
    ranked_rows,
    spread_share,
    sweep_caption,
    sweep_groups,
    too_close_note,
)
from ui.compare_table import table_caption

ROOT = Path(__file__).resolve().parent.parent
SWEEP = "sweep-t-20250101-1200"
OLD_SWEEP = "sweep-t-20241201-0900"


def _run(settings, name: str, lr: float, metrics: dict, group: str | None, **tags) -> str:
    cfg = tiny_config(name="t", train={"lr": lr}, logging={"run_name": name, "use_mlflow": True})
    run_id = create_run(settings, cfg, {**tags, **({TAG_GROUP: group} if group else {})})
    tracker = MlflowTracker(settings.tracking_uri, background=False)
    tracker.start(cfg, run_id=run_id)
    if metrics:
        tracker.log_metrics(metrics, 1)
    tracker.end("FINISHED")
    time.sleep(0.01)  # distinct start times: the earlier run wins a full tie
    return run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict:
    home = tmp_path_factory.mktemp("groups") / "home"
    home.mkdir()
    settings = load_settings(home=home, tracking_uri_override=None)
    best = {TAG_BEST_VAL_LOSS: "0.45"}  # its best checkpoint's, below its last 0.5
    old = [  # an older sweep with a validation loss: ranked by it by default
        _run(settings, "t lr=1e-3 old", 1e-3, {"loss": 0.1, "val_loss": 0.5}, OLD_SWEEP),
        _run(settings, "t lr=2e-3 old", 2e-3, {"loss": 0.2, "val_loss": 0.4}, OLD_SWEEP),
        _run(settings, "t lr=4e-3 old", 4e-3, {"loss": 0.3, "val_loss": 0.5}, OLD_SWEEP, **best),
    ]
    lone = _run(settings, "t alone", 1e-3, {"loss": 0.05}, None)
    runs = [
        _run(settings, "t lr=5e-4", 5e-4, {"loss": 0.3}, SWEEP),
        _run(settings, "t lr=1e-3", 1e-3, {"loss": 0.1}, SWEEP),
        _run(settings, "t lr=2e-3", 2e-3, {"loss": 0.1}, SWEEP),  # the same loss, more stars
        _run(settings, "t lr=4e-3", 4e-3, {}, SWEEP),  # logged no loss (failed early)
    ]
    for run_id, stars in zip(runs[:3], (5, 2, 4), strict=True):
        set_rating(settings.tracking_uri, run_id, stars)
    return {"home": home, "settings": settings, "sweep": runs, "old": old, "lone": lone}


def _records(store: dict):
    return list_all_runs(store["settings"].tracking_uri)


def test_runs_of_a_group_are_found_together_newest_group_first(store: dict) -> None:
    groups = sweep_groups(_records(store))
    assert list(groups) == [SWEEP, OLD_SWEEP]
    assert {r.run_id for r in groups[SWEEP]} == set(store["sweep"])
    assert {r.run_id for r in groups[OLD_SWEEP]} == set(store["old"])
    assert store["lone"] not in {r.run_id for rs in groups.values() for r in rs}


def test_ranked_by_metric_then_rating_or_by_rating_then_metric(store: dict) -> None:
    groups = sweep_groups(_records(store))
    a1, a2, a3, a4 = store["sweep"]
    assert metric_choices(groups[SWEEP]) == ["loss", RATING]
    # equal losses: the run rated 4 before the run rated 2; no loss at all: last
    assert [r.run_id for r in rank_runs(groups[SWEEP], "loss")] == [a3, a2, a1, a4]
    assert [r.run_id for r in rank_runs(groups[SWEEP], RATING)] == [a1, a3, a2, a4]
    b1, b2, b3 = store["old"]
    assert metric_choices(groups[OLD_SWEEP]) == ["val_loss", "loss", RATING]
    assert [r.run_id for r in rank_runs(groups[OLD_SWEEP], "val_loss")] == [b2, b3, b1]
    assert [r.run_id for r in rank_runs(groups[OLD_SWEEP], "loss")] == [b1, b2, b3]
    rows = ranked_rows(groups[SWEEP], "loss")
    assert [(row["rank"], row["name"], row["rating"]) for row in rows] == [
        (1, "t lr=2e-3", "4 ★"),
        (2, "t lr=1e-3", "2 ★"),
        (3, "t lr=5e-4", "5 ★"),
        (4, "t lr=4e-3", "not rated"),  # never "None"
    ]
    assert rows[0]["Learning rate"] == "0.002"  # the setting the variants differ in


@pytest.fixture()
def app(store: dict, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("STUDIO_HOME", str(store["home"]))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=60)
    at.run()
    at.switch_page("pages/compare.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_choosing_a_sweep_picks_its_runs_best_first(app: AppTest, store: dict) -> None:
    a1, a2, a3, a4 = store["sweep"]
    picker = app.selectbox(key="cmp:group")
    assert picker.value == NONE and picker.options[1:] == [
        f"{SWEEP} (4 runs)",
        f"{OLD_SWEEP} (3 runs)",
    ]
    picker.set_value(SWEEP).run()
    assert not app.exception, [e.value for e in app.exception]
    assert app.multiselect(key="cmp:picked").value == [a3, a2, a1, a4]
    table = next(df for df in app.dataframe if "rank" in df.value.columns).value
    assert list(table["run id"]) == [a3, a2, a1, a4]
    assert list(table["rating"]) == ["4 ★", "2 ★", "5 ★", "not rated"]
    # a3 and a2 logged the same loss: no "best" is claimed, the page says so
    assert any("the best 2 runs are the same: too close to call" in i.value for i in app.info)
    captions = [c.value for c in app.caption]
    assert not any("best: **" in c for c in captions)
    assert any("all 8 run(s) that match the filters, not only the sweep's 4" in c for c in captions)
    main_table = next(df for df in app.dataframe if "dataset" in df.value.columns).value
    assert "None" not in set(main_table["rating"].astype(str))
    app.selectbox(key="cmp:group_metric").set_value(RATING).run()
    assert app.multiselect(key="cmp:picked").value == [a1, a3, a2, a4]
    b1, b2, b3 = store["old"]
    app.selectbox(key="cmp:group").set_value(OLD_SWEEP).run()
    assert app.selectbox(key="cmp:group_metric").value == RATING  # still a choice there
    assert app.multiselect(key="cmp:picked").value == [b2, b3, b1]  # no stars: by val_loss
    app.selectbox(key="cmp:group_metric").set_value("loss").run()
    assert app.multiselect(key="cmp:picked").value == [b1, b2, b3]
    assert not any("too close" in i.value for i in app.info)  # 0.1, 0.2, 0.3: a clear best
    assert any("best: **t lr=1e-3 old**" in c.value for c in app.caption)
    assert not app.exception


def test_queue_variants_of_a_run_from_compare(
    app: AppTest, store: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = []
    monkeypatch.setattr(ui.sweep_form, "ensure_runner", lambda settings: started.append(1))
    monkeypatch.setattr(ui.sweep_form, "launch_prediction", lambda cfg, settings: (0.5, 1.0))
    run_id = store["sweep"][1]  # lr 1e-3
    app.multiselect(key="cmp:picked").set_value([run_id]).run()
    key = f"cmp:sweep:{run_id[:12]}"
    assert f"{key}:queue" not in {b.key for b in app.button}  # the run's config is not read yet
    app.toggle(key=f"{key}:open").set_value(True).run()
    assert not app.exception, [e.value for e in app.exception]
    assert app.text_input(key=f"{key}:values1:train.lr").value == "5e-4, 1e-3, 2e-3"
    button = app.button(key=f"{key}:queue")
    assert button.label == "Queue 3 variants" and not button.disabled
    button.click().run()
    queued = entries(store["settings"])
    assert [e.name for e in queued] == ["t lr=5e-4", "t lr=1e-3", "t lr=2e-3"]
    assert len({e.group for e in queued}) == 1 and queued[0].group.startswith("sweep-t-")
    assert [e.config["train"]["lr"] for e in queued] == [5e-4, 1e-3, 2e-3]
    # each variant saves a LoRA file of its own (the base run's is t.safetensors)
    assert [e.config["name"] for e in queued] == ["t_lr5e-4", "t_lr1e-3", "t_lr2e-3"]
    preview = next(df.value for df in app.dataframe if "LoRA file" in df.value.columns)
    assert list(preview["LoRA file"]) == [f"{e.config['name']}.safetensors" for e in queued]
    assert started == [1]
    assert any("Queued 3 variants" in str(s.value) for s in app.success)


def _rec(name: str, **metrics: float) -> RunRecord:
    return RunRecord(
        run_id=name,
        name=name,
        experiment_id="0",
        status="FINISHED",
        start_time=None,
        end_time=None,
        duration_s=None,
        params={},
        tags={},
        metrics=metrics,
        arch="sd15",
        intent=None,
        preset=None,
        dataset_fingerprint=None,
        rating=None,
        note="",
    )


def test_losses_within_noise_are_too_close_to_call() -> None:
    # the walk's sweep: 1.0874, 1.0889, 1.0895 were ranked "best: my_lora_b lr=2e-3"
    runs = [
        _rec("b lr=1e-3", val_loss=1.0889),
        _rec("b lr=2e-3", val_loss=1.0874),
        _rec("b lr=5e-4", val_loss=1.0895),
    ]
    share, count = spread_share(runs, "val_loss")
    assert share == pytest.approx((1.0895 - 1.0874) / 1.0874) and count == 3
    note = too_close_note(runs, "val_loss")
    assert note is not None
    assert "these runs are within 0.2% of each other: too close to call" in note
    assert "Look at the samples below and rate them" in note
    caption = sweep_caption(SWEEP, runs, "val_loss")
    assert "best: **" not in caption
    assert "first, though not a clear best: b lr=2e-3 (too close to call" in caption


def test_a_clear_best_is_named_and_only_the_close_ones_are_counted() -> None:
    clear = [_rec("a", loss=0.5), _rec("b", loss=0.6), _rec("c", loss=0.7)]
    assert too_close_note(clear, "loss") is None
    assert "best: **a**" in sweep_caption(SWEEP, clear, "loss")
    two_close = [_rec("a", loss=1.0), _rec("b", loss=1.004), _rec("c", loss=1.2)]
    assert "the best 2 runs are within 0.4% of each other" in too_close_note(two_close, "loss")
    same = [_rec("a", loss=1.0), _rec("b", loss=1.0)]
    assert "these runs are the same: too close to call" in too_close_note(same, "loss")
    assert too_close_note(same, RATING) is None  # stars are the user's call, not noise
    assert too_close_note([_rec("a", loss=1.0), _rec("b")], "loss") is None  # one value only


def test_the_runs_table_says_what_it_lists_under_a_sweep() -> None:
    assert table_caption(5).startswith("5 run(s) match the filters.")
    under_sweep = table_caption(5, sweep_runs=3)
    assert "all 5 run(s) that match the filters, not only the sweep's 3" in under_sweep
