"""The compare page in AppTest on a real SQLite store: tiny runs trained in-process with
``MlflowTracker`` plus runs created by ``trainer.tracking`` and logged through the same tracker."""

from __future__ import annotations

from pathlib import Path

import pytest
from options_support import tiny_config
from streamlit.testing.v1 import AppTest

from trainer.engine.context import RunContext
from trainer.engine.loop import train
from trainer.settings import load_settings
from trainer.tracking.artifacts import sample_images
from trainer.tracking.layout import TAG_PREDICTED, TAG_PREDICTED_TOTAL
from trainer.tracking.mlflow_tracker import MlflowTracker
from trainer.tracking.new_run import create_run
from trainer.tracking.ratings import sample_ratings, set_rating
from trainer.tracking.records import get_run_record, list_all_runs, list_runs

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow

ARCHS = ("sd15", "sdxl", "flux")
INTENTS = ("style", "character", "object")


def _cfg(i: int, arch: str = "sd15", sample: dict | None = None, **train_values):
    extra = {"datasets": [{"folder_path": "cats"}]} if i % 5 == 0 and i >= 3 else {}
    return tiny_config(
        **extra,
        sample=sample or {"sample_every": 0},
        name=f"run{i:02d}",
        intent=INTENTS[i % 3],
        preset=f"p{i % 2}",
        model={"arch": arch, "name_or_path": f"demo:{arch}"},
        train={"lr": 1e-3 * (1 + i % 3), **train_values},
        logging={"log_every": 1, "use_mlflow": True, "log_system_metrics": False},
    )


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, demo_home: Path) -> dict:
    home = tmp_path_factory.mktemp("compare") / "home"
    home.mkdir()
    for name in ("models", "datasets"):
        (home / name).symlink_to(demo_home / name, target_is_directory=True)
    settings = load_settings(home=home, tracking_uri_override=None)
    uri = settings.tracking_uri
    trained = []
    for i in range(3):  # real tiny trainings, samples at step 2
        cfg = _cfg(
            i,
            sample={
                "sample_every": 2,
                "prompts": ["[trigger] red circle"],
                "width": 64,
                "height": 64,
                "sample_steps": 2,
                "sampler": "euler",
            },
        )
        tracker = MlflowTracker(uri, artifact_root=settings.artifacts_dir)
        run_id = tracker.start(cfg)
        train(cfg, RunContext(home=home, job_dir=home / "jobs" / run_id, tracker=tracker))
        tracker.end("FINISHED")
        trained.append(run_id)
    made = []
    for i in range(3, 23):  # created by the tracking module, metrics logged by the tracker
        arch = ARCHS[i % 3]
        cfg = _cfg(i, arch, steps=10)
        # sdxl/flux runs carry a launch-time prediction and a measured speed (sd15 ones do not,
        # so the sd15 speed history is the three real trainings above)
        timed = arch != "sd15"
        tags = {TAG_PREDICTED: "0.05", TAG_PREDICTED_TOTAL: "0.6"} if timed else {}
        if i % 4 == 1:
            tags["team"] = "a" if i % 8 == 1 else "b"
        run_id = create_run(settings, cfg, tags)
        tracker = MlflowTracker(uri, background=False)
        tracker.start(cfg, run_id=run_id)
        for step in range(10):
            loss = 1.0 / (1 + step) + 0.01 * i
            values = {"loss": loss, "loss_smoothed": loss, "lr": cfg.train.lr}
            tracker.log_metrics({**values, **({"s_per_step": 0.1} if timed else {})}, step)
        tracker.end(("FINISHED", "FAILED", "KILLED", "FINISHED")[i % 4])
        made.append(run_id)
    set_rating(uri, made[0], 5)
    set_rating(uri, made[3], 2)
    return {"home": home, "settings": settings, "trained": trained, "made": made}


@pytest.fixture()
def app(store: dict, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("STUDIO_HOME", str(store["home"]))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=60)
    at.run()
    at.switch_page("pages/compare.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def chart_data(chart) -> dict:
    import pyarrow as pa

    return pa.ipc.open_stream(chart.proto.datasets[0].data.data).read_all().to_pydict()


def table(at: AppTest):
    return at.dataframe[0].value


def test_table_lists_every_run_with_its_numbers(app: AppTest, store: dict) -> None:
    df = table(app)
    assert len(df) == 23
    row = df[df["run id"] == store["made"][0]].iloc[0]
    assert row["rating"] == "5 ★" and row["steps"] == 10 and row["arch"] == "sd15"
    assert row["final loss"] == pytest.approx(0.1 + 0.03)
    trained = df[df["run id"] == store["trained"][0]].iloc[0]
    assert trained["status"] == "FINISHED" and trained["duration (s)"] > 0
    history = [m.value for m in app.markdown if "similar runs" in m.value]
    assert history and "the best rated (5★ ('run03'))" in history[0]  # advisor on these runs


def test_filters_narrow_the_table(app: AppTest, store: dict) -> None:
    app.selectbox(key="cmp:arch").set_value("flux").run()
    df = table(app)
    assert len(df) > 0 and set(df["arch"]) == {"flux"}
    app.selectbox(key="cmp:arch").set_value("(any)")
    app.selectbox(key="cmp:status").set_value("FAILED").run()
    assert set(table(app)["status"]) == {"FAILED"}
    app.selectbox(key="cmp:status").set_value("(any)")
    app.selectbox(key="cmp:rating").set_value(4).run()
    assert list(table(app)["run id"]) == [store["made"][0]]
    app.selectbox(key="cmp:rating").set_value(0)
    app.selectbox(key="cmp:intent").set_value("style")
    app.selectbox(key="cmp:preset").set_value("p1").run()
    df = table(app)
    assert len(df) > 0 and set(df["intent"]) == {"style"} and set(df["preset"]) == {"p1"}


def test_diff_curves_and_samples_of_picked_runs(app: AppTest, store: dict) -> None:
    a, b = store["trained"][0], store["trained"][1]
    app.multiselect(key="cmp:picked").set_value([a, b]).run()
    assert not app.exception
    rows = [row for t in app.table for row in t.value.to_dict("records")]
    lr = [r for r in rows if r["setting"] == "train.lr"]
    assert len(lr) == 1 and lr[0]["what it does"]
    assert {r["setting"] for r in rows} >= {"train.lr", "name", "intent"}
    assert not any(r["setting"] == "train.steps" for r in rows)  # same in both: not shown
    charts = app.get("arrow_vega_lite_chart") or app.get("vega_lite_chart")
    assert len(charts) == 2  # loss and lr
    assert "Loss (raw and smoothed)" in charts[0].proto.spec
    data = chart_data(charts[0])
    assert set(data["run"]) == {"run00", "run01"}
    assert set(data["metric"]) == {"loss", "loss_smoothed"} and max(data["step"]) == 2
    assert set(chart_data(charts[1])["value"]) == {1e-3, 2e-3}  # the two constant LRs
    assert len(app.get("image")) >= 2  # samples of both runs at step 2
    assert app.button(key="cmp:mlflow").label == "Open in MLflow UI"
    adapters = [c.value for c in app.caption if "lora/" in c.value]
    assert len(adapters) == 2 and all(".safetensors" in a for a in adapters)


def test_rating_and_note_are_stored_in_mlflow(app: AppTest, store: dict) -> None:
    rid = store["made"][5]
    uri = store["settings"].tracking_uri
    app.multiselect(key="cmp:picked").set_value([rid]).run()
    key = rid[:12]
    app.selectbox(key=f"cmp:rate:{key}").set_value(4)
    app.text_area(key=f"cmp:note:{key}").set_value("too soft").run()
    app.button(key=f"cmp:save:{key}").click().run()
    rec = get_run_record(uri, rid)
    assert rec.rating == 4 and rec.note == "too soft"
    df = table(app)
    assert df[df["run id"] == rid].iloc[0]["rating"] == "4 ★"  # table refreshed


def test_reuse_as_preset_and_as_draft(app: AppTest, store: dict) -> None:
    rid = store["trained"][2]
    app.multiselect(key="cmp:picked").set_value([rid]).run()
    key = rid[:12]
    app.text_input(key=f"cmp:pname:{key}").set_value("my best").run()
    app.button(key=f"cmp:preset:{key}").click().run()
    preset = store["settings"].presets_dir / "my_best.yaml"
    text = preset.read_text()
    assert text.startswith("# Preset 'my best'") and rid in text
    from trainer.config.io import loads_config

    assert loads_config(text).train.lr == pytest.approx(3e-3)
    app.button(key=f"cmp:draft:{key}").click().run()
    assert not app.exception
    draft = app.session_state["draft"]
    assert draft["name"] == "run02" and draft["train"]["lr"] == pytest.approx(3e-3)


def test_monitor_offers_start_a_new_run_from_this_one(app: AppTest, store: dict) -> None:
    rid = store["trained"][1]
    app.session_state["monitor_run_id"] = rid
    app.switch_page("pages/monitor.py").run()
    assert not app.exception, [e.value for e in app.exception]
    app.button(key=f"cmp:draft:{rid[:12]}").click().run()
    assert not app.exception
    assert app.session_state["draft"]["name"] == "run01"


def ids(at: AppTest) -> list[str]:
    return sorted(table(at)["run id"])


def test_dataset_filter_by_folder_and_fingerprint(app: AppTest, store: dict) -> None:
    made, trained = store["made"], store["trained"]
    cats = sorted(made[k] for k in (2, 7, 12, 17))  # i = 5, 10, 15, 20: folder 'cats'
    app.multiselect(key="cmp:dataset").set_value(["cats"]).run()
    assert ids(app) == cats
    rec = get_run_record(store["settings"].tracking_uri, trained[0])
    (name, digest), fingerprint = rec.datasets[0], rec.dataset_fingerprint
    assert name.startswith("0:") and fingerprint and fingerprint.startswith(digest)
    app.multiselect(key="cmp:dataset").set_value([f"#{fingerprint[:12]}"]).run()
    assert ids(app) == sorted(trained)  # the MLflow input's fingerprint: the real trainings
    app.multiselect(key="cmp:dataset").set_value([f"#{fingerprint[:12]}", "cats"]).run()
    assert ids(app) == sorted([*trained, *cats])
    assert "cats" in table(app)["dataset"].tolist()


def test_tag_filter_key_value_terms(app: AppTest, store: dict) -> None:
    made = store["made"]
    app.text_input(key="cmp:tags").set_value("team=a").run()
    assert ids(app) == sorted([made[6], made[14]])  # i = 9, 17
    app.text_input(key="cmp:tags").set_value("team").run()  # has the tag
    assert ids(app) == sorted(made[k] for k in (2, 6, 10, 14, 18))
    app.text_input(key="cmp:tags").set_value("team, arch=flux").run()  # studio. left out
    assert ids(app) == sorted([made[2], made[14]])  # i = 5, 17 are flux
    app.text_input(key="cmp:tags").set_value("team=zzz").run()
    assert ids(app) == [] and not app.exception


def test_predicted_vs_actual_time_columns(app: AppTest, store: dict) -> None:
    import pandas as pd

    df = table(app)
    row = df[df["run id"] == store["made"][1]].iloc[0]  # i = 4 (sdxl): prediction recorded
    assert row["predicted s/step"] == 0.05 and row["s/step"] == pytest.approx(0.1)
    assert row["s/step actual÷predicted"] == pytest.approx(2.0)
    assert row["predicted total (s)"] == 0.6 and row["duration (s)"] > 0
    assert row["time actual÷predicted"] == pytest.approx(row["duration (s)"] / 0.6, abs=0.2)
    trained = df[df["run id"] == store["trained"][0]].iloc[0]  # trained outside the studio
    assert pd.isna(trained["predicted s/step"]) and trained["s/step"] > 0


def test_launch_prediction_is_calibrated_by_the_store(store: dict, monkeypatch) -> None:
    from ui import advice
    from ui.compare_store import local_history
    from ui.context import hardware
    from ui.jobs import launch_prediction

    monkeypatch.setenv("STUDIO_HOME", str(store["home"]))
    cfg = _cfg(0)
    step, total = launch_prediction(cfg, store["settings"])
    history = local_history(store["settings"].tracking_uri)
    expected = advice.predict(cfg, hardware(), history)
    assert expected.history_runs == 3 and step == pytest.approx(expected.step_s)
    assert total == pytest.approx(expected.total_s) and total > step


def test_rating_a_sample_round_trips_through_mlflow(app: AppTest, store: dict) -> None:
    from ui.compare_store import load_runs

    a, b = store["trained"][0], store["trained"][1]
    uri = store["settings"].tracking_uri
    app.multiselect(key="cmp:picked").set_value([a, b]).run()
    key = f"cmp:srate:{a[:12]}:2:sample_0"
    app.selectbox(key=key).set_value(4).run()
    assert not app.exception
    rec = get_run_record(uri, a)
    assert rec.tags["studio.sample_rating.2.sample_0"] == "4"  # a tag: the MLflow UI shows it
    assert sample_ratings(rec.tags) == {(2, "sample_0"): 4}
    assert sample_ratings(get_run_record(uri, b).tags) == {}
    load_runs.clear()  # a new session reads the store again: the rating is shown beside it
    fresh = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=60)
    fresh.run()
    fresh.switch_page("pages/compare.py").run()
    fresh.multiselect(key="cmp:picked").set_value([a, b]).run()
    assert fresh.selectbox(key=key).value == 4
    assert fresh.selectbox(key=f"cmp:srate:{b[:12]}:2:sample_0").value == 0
    fresh.selectbox(key=key).set_value(0).run()  # 0 clears it
    assert "studio.sample_rating.2.sample_0" not in get_run_record(uri, a).tags


def test_slider_shows_a_left_and_b_right(app: AppTest, store: dict) -> None:
    import io
    import json

    import numpy as np
    from PIL import Image
    from ui_support import texts

    from ui.compare_samples import slider_pair

    a, b = store["trained"][0], store["trained"][1]
    app.multiselect(key="cmp:picked").set_value([a, b]).run()
    assert "◀ run00 | run01 ▶ (step 2)" in texts(app)
    (slider,) = [el for el in app.get("bidi_component") if el.key == "cmp:slider"]
    assert slider.proto.component_name == "streamlit-extras.image_compare_slider"
    shown = json.loads(slider.proto.json)
    assert (shown["label1"], shown["label2"]) == ("run00", "run01")
    uri = store["settings"].tracking_uri
    (pa,), (pb,) = ([s.path_or_uri for s in sample_images(uri, r) if s.step == 2] for r in (a, b))
    with Image.open(pa) as ia, Image.open(pb) as ib:
        A, B = np.asarray(ia.convert("RGB")), np.asarray(ib.convert("RGB"))
        left, right = (np.asarray(Image.open(io.BytesIO(png))) for png in slider_pair(ia, ib))
    assert not np.array_equal(A, B)  # the runs' samples differ
    scale = left.shape[1] // A.shape[1]  # 64 px samples, enlarged pixel for pixel
    assert scale > 1 and left.shape == right.shape
    assert np.array_equal(left[::scale, ::scale], A)  # left of the divider: run A
    assert np.array_equal(right[::scale, ::scale], B)  # right of it: run B


def test_slider_pair_resizes_b_to_a_and_enlarges_small_images() -> None:
    import io

    from PIL import Image

    from ui.compare_samples import slider_pair

    a, b = Image.new("RGB", (40, 20), (255, 0, 0)), Image.new("RGB", (80, 40), (0, 0, 255))
    left, right = (Image.open(io.BytesIO(png)) for png in slider_pair(a, b))
    assert left.format == right.format == "PNG"  # no JPEG blur on tiny samples
    assert left.size == right.size == (400, 200)  # b at a's size, both ×10 (≥ 384 px wide)
    assert left.getpixel((399, 199)) == (255, 0, 0) and right.getpixel((0, 0)) == (0, 0, 255)


def test_history_calibrates_the_predicted_speed(app: AppTest, store: dict) -> None:
    import re
    import statistics

    from ui_support import texts

    a = store["trained"][0]
    app.multiselect(key="cmp:picked").set_value([a]).run()
    app.button(key=f"cmp:draft:{a[:12]}").click().run()  # the draft is now run00's config
    app.run()
    found = [m.value for m in app.markdown if "Predicted speed" in m.value]
    number = r"([0-9.]+(?:e[-+]?\d+)?)"
    match = re.search(
        rf"\*\*{number} s/step\*\*, based on (\d+) similar run\(s\).*priors alone: {number}",
        found[0] if found else "",
    )
    assert match, found
    calibrated, runs, prior = float(match[1]), int(match[2]), float(match[3])
    uri = store["settings"].tracking_uri
    measured = statistics.median(
        get_run_record(uri, rid).metrics["s_per_step"] for rid in store["trained"]
    )
    assert runs == 3  # the three real sd15 trainings of this host at 64 px
    assert abs(calibrated - measured) < abs(prior - measured)
    assert calibrated == pytest.approx(measured, rel=0.35)
    app.switch_page("pages/wizard.py").run()  # the wizard's predictions use the same history
    assert not app.exception
    assert "corrected by 3 past run(s)" in texts(app)


def test_bulk_read_matches_mlflow_client_and_skips_deleted_runs(store: dict) -> None:
    import dataclasses

    from mlflow import MlflowClient

    uri = store["settings"].tracking_uri
    MlflowClient(uri).delete_run(store["made"][-1])  # last test of the module: the store changes

    def same(rec):  # duration of a RUNNING run grows between the two reads
        return dataclasses.replace(rec, duration_s=None)

    fast, slow = list_all_runs(uri), list_runs(uri)
    assert len(fast) == 22 and store["made"][-1] not in {r.run_id for r in fast}
    assert [same(r) for r in fast] == [same(r) for r in slow]


def test_wizard_advisor_column_shows_what_similar_runs_did(app: AppTest, store: dict) -> None:
    best = store["made"][0]  # run03, rated 5
    app.multiselect(key="cmp:picked").set_value([best]).run()
    app.button(key=f"cmp:draft:{best[:12]}").click().run()  # the draft is now run03's config
    app.switch_page("pages/wizard.py").run()
    assert not app.exception, [e.value for e in app.exception]
    assert any("Based on your past runs" in m.value for m in app.markdown)
    assert any("the best rated (5★ ('run03'))" in c.value for c in app.caption)
