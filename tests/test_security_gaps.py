"""The last gaps of issue 16: what users type shows as text everywhere, a studio served to a
network neither reveals nor uses paths outside its allowed roots, a SQL store that refuses the
studio is named in seconds, and a finished run's warning reaches the Monitor.

- Text: a hostile value (an image beacon and a link) echoed by a field's message, a dataset
  folder named by the wizard and the advisor, a trigger word read from captions, a store's
  refusal and a reconcile problem renders as text: CommonMark (``test_security_text``'s
  checks) draws no image and no link from any of them.
- Roots: served on 0.0.0.0, the Model step, the advisor's dataset scan, Launch and Resume refuse
  a path outside the roots with the same words whether it exists (``/etc``) or not.
- Store: ``use_studio_store_retries`` (the studio's start-up) lowers MLflow's engine retries;
  a local fake PostgreSQL server that refuses the password is reported as ``StoreRefused``
  within seconds, its password redacted.
- Monitor: a FINISHED run tagged ``studio.warning.hub_upload`` shows that warning.
"""

from __future__ import annotations

import re
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from test_security_text import markdown_strings, markup_problems, shown_text
from ui_support import go_to_step, new_app, open_page, widget

from trainer.config.schema import TrainingConfig
from trainer.jobs.folder import CONFIG_FILE, job_folder
from trainer.settings import load_settings
from trainer.tracking import connect
from trainer.tracking.connect import StoreRefused, mlflow_client, use_studio_store_retries
from trainer.tracking.mlflow_tracker import MlflowTracker
from trainer.tracking.new_run import create_run
from trainer.tracking.tracker import TAG_HUB_UPLOAD_FAILED
from ui import advice
from ui.access import config_refusal, model_ref_refusal
from ui.dataset_facts import dataset_info
from ui.jobs import MONITOR_RUN_KEY, LaunchRefused, launch_draft, resume_job

IMAGE = "![x](http://127.0.0.1:9/beacon.png)"  # a URL: plain() shows the word as code
RELATIVE = "![y](b.png)"  # no URL: plain() escapes its brackets
LINK = "[link](http://evil)"
OUTSIDE = "is outside the folders this studio may read"
PAGE_ICON = re.compile(r":material/\w+:")


# ------------------------------------------------------------------------------- fixtures
@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("STUDIO_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.delenv("STUDIO_ALLOWED_FOLDERS", raising=False)
    monkeypatch.delenv("STUDIO_HOST", raising=False)
    (tmp_path / "home").mkdir()
    return tmp_path / "home"


def run(target) -> AppTest:
    at = target.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def hostile_strings(at: AppTest, marker: str) -> list[tuple[str, str]]:
    return [(kind, text) for kind, text in markdown_strings(at) if marker in text]


def assert_text_only(found: list[tuple[str, str]], shown: str) -> None:
    """Each string draws no image, link or markup, and shows ``shown`` literally."""
    assert found, "the hostile value is not on the page at all"
    for kind, text in found:
        own = PAGE_ICON.sub("", text)  # the page's own icons (the hostile values have none)
        assert markup_problems(own, page=True) == [], (kind, text)
        assert shown in shown_text(text), (kind, text)


# ---------------------------------------------------------------------- text, never markdown
def test_the_check_catches_an_unescaped_beacon() -> None:
    raw = f"**Not accepted:** {RELATIVE} {LINK}"
    assert "<img" in markup_problems(raw, page=True) and "<a " in markup_problems(raw, page=True)


def test_a_refused_number_is_echoed_as_text(home: Path) -> None:
    at = open_page("pages/wizard.py")
    go_to_step(at, "optimizer")
    typed = f"{RELATIVE} {LINK} {IMAGE}"
    run(widget(at, "cfg:train.lr").set_value(typed))
    errors = [e.value for e in at.error if "Not accepted" in e.value]
    assert errors and "!\\[y\\](b.png)" in errors[0] and "![y](" not in errors[0]
    assert_text_only([("error", e) for e in errors], typed)


def test_dataset_folders_show_as_text_in_the_wizard_and_the_advisor(home: Path) -> None:
    at = open_page("pages/wizard.py")
    go_to_step(at, "dataset")
    run(at.button(key="wiz:ds_add").click())  # two datasets: each is headed by its folder
    run(at.toggle(key="wiz:ds_demo:1").set_value(True))  # the draft validates: the advisor speaks
    # a backtick would close a code span made with single backticks; no "//": the advisor quotes
    # the path resolved
    folder = f"a`b {RELATIVE} [link](evil.html)"
    run(widget(at, "cfg:datasets.0.folder_path").set_value(folder))
    found = hostile_strings(at, "b.png")
    kinds = [kind for kind, _ in found]
    # the per-dataset heading (ui.widgets), "Folder not found" (ui.wizard), the advisor's
    # finding (ui.advice): all text
    assert kinds.count("markdown") >= 3, found
    assert any("dataset 1: no folder at" in shown_text(t) for _, t in found), found
    assert_text_only(found, folder)


def _handoff_page(folder: str) -> None:
    from pathlib import Path

    from ui.dataset_handoff import render_train_handoff

    render_train_handoff(Path(folder))


def test_a_trigger_word_from_captions_shows_as_text(tmp_path: Path, home: Path) -> None:
    folder = tmp_path / "ds"
    folder.mkdir()
    for i in range(2):
        (folder / f"{i}.png").write_bytes(_png())
        (folder / f"{i}.txt").write_text(f"`{RELATIVE}, a photo {i}", encoding="utf-8")
    at = run(AppTest.from_function(_handoff_page, args=(str(folder),)))
    found = hostile_strings(at, "b.png")
    assert [kind for kind, _ in found] == ["caption"], found
    assert_text_only(found, f"`{RELATIVE}")


def _store_error_page() -> None:
    from trainer.tracking.reachability import StoreUnreachable
    from ui.store_errors import store_boundary

    with store_boundary():
        raise StoreUnreachable("postgresql://u:hunter2@db.example/mlflow", "![y](b.png) said no")


def test_a_store_error_shows_as_text_without_the_password() -> None:
    at = run(AppTest.from_function(_store_error_page))
    (error,) = at.error
    assert "hunter2" not in error.value and "db.example" in error.value
    assert_text_only([("error", error.value)], "![y](b.png) said no")


def _reconcile_problem_page() -> None:
    from ui import jobs

    jobs._reconcile_problem["store"] = "Could not check: ![y](b.png) [link](http://evil)"
    jobs._show_reconcile_problem("store")


def test_a_reconcile_problem_shows_as_text() -> None:
    at = run(AppTest.from_function(_reconcile_problem_page))
    assert_text_only([("warning", w.value) for w in at.warning], f"{RELATIVE} {LINK}")


def test_advisor_texts_are_markdown_with_user_values_escaped(home: Path) -> None:
    """The advisor speaks plain text; ui.advice hands pages markdown (message, fix label)."""
    from advisor.findings import Finding as AdvisorFinding

    raw = AdvisorFinding("x", "error", ("name",), f"'{RELATIVE}' {LINK}", {"name": RELATIVE})
    found = advice._from_advisor(raw)
    assert markup_problems(found.message) == [] and markup_problems(found.fix_label) == []
    assert shown_text(found.message) == f"'{RELATIVE}' {LINK}"
    assert shown_text(found.fix_label) == f"LoRA name = {RELATIVE}"


# ------------------------------------------------------------------ served beyond loopback
def _model_step(at: AppTest, path: str) -> str:
    run(widget(at, "cfg:model.name_or_path").set_value(path))
    return "\n".join(t for _, t in markdown_strings(at) if path in t)


def test_model_step_tells_nothing_about_paths_outside_the_roots(
    home: Path, served_publicly: None
) -> None:
    at = open_page("pages/wizard.py")
    run(widget(at, "wiz:model_source").set_value("folder"))
    exists = _model_step(at, "/etc")
    missing = _model_step(at, "/no/such/model")
    assert OUTSIDE in missing and str(home) in missing
    assert exists.replace("/etc", "X") == missing.replace("/no/such/model", "X")
    assert "no folder at" not in exists + missing and "model_index.json" not in exists


def test_model_step_on_loopback_as_before(home: Path) -> None:
    at = open_page("pages/wizard.py")
    run(widget(at, "wiz:model_source").set_value("folder"))
    assert "no folder at" in _model_step(at, "/no/such/model")


def test_model_references_under_the_roots_hub_ids_and_demos_pass(
    home: Path, served_publicly: None
) -> None:
    assert model_ref_refusal(str(home / "models" / "sd15")) is None
    assert model_ref_refusal("demo:sd15") is None
    assert model_ref_refusal("stabilityai/sdxl-base") is None  # a Hub id: asked of the Hub
    assert OUTSIDE in (model_ref_refusal("stabilityai/sdxl-base", "folder") or "")
    assert OUTSIDE in (model_ref_refusal("/etc/x.safetensors") or "")


def _advisor_dataset_messages(home: Path, folder: str) -> list[str]:
    cfg = TrainingConfig.model_validate({"datasets": [{"folder_path": folder}]})
    draft = cfg.model_dump(mode="json")
    info = dataset_info(draft, cfg)
    assert info is not None and info.folders[0].missing  # nothing is counted
    hw = advice.detect_hardware(home)
    found = advice.findings(draft, [], cfg, hw)
    return [f.message for f in found if f.rule == "dataset_missing"]


def test_advisor_scan_tells_nothing_about_folders_outside_the_roots(
    home: Path, served_publicly: None
) -> None:
    (exists,) = _advisor_dataset_messages(home, "/etc")
    (missing,) = _advisor_dataset_messages(home, "/no/such/folder")
    assert OUTSIDE in missing and "no folder at" not in missing
    assert exists.replace("/etc", "X") == missing.replace("/no/such/folder", "X")


def test_advisor_scan_on_loopback_as_before(home: Path) -> None:
    (missing,) = _advisor_dataset_messages(home, "/no/such/folder")
    assert "no folder at /no/such/folder" in missing


def _config(folder: str, model: str = "demo:sd15") -> TrainingConfig:
    return TrainingConfig.model_validate(
        {"model": {"name_or_path": model}, "datasets": [{"folder_path": folder}]}
    )


def test_launch_refuses_a_config_reading_outside_the_roots(
    home: Path, served_publicly: None
) -> None:
    settings = load_settings()
    refusals = []
    for cfg in (_config("/etc"), _config("/no/such/folder"), _config("demo:dataset", "/etc")):
        with pytest.raises(LaunchRefused) as err:
            launch_draft(cfg, settings)
        refusals.append(str(err.value))
    assert refusals[0].startswith("datasets.0.folder_path: /etc " + OUTSIDE)
    assert refusals[0].replace("/etc", "X") == refusals[1].replace("/no/such/folder", "X")
    assert refusals[2].startswith("model.name_or_path: /etc " + OUTSIDE)
    assert not settings.jobs_dir.exists() or not any(settings.jobs_dir.iterdir())  # no job
    assert config_refusal(_config(str(home / "datasets" / "x")).model_dump(), settings) is None
    assert config_refusal(_config("demo:dataset", "owner/model").model_dump(), settings) is None


def test_launch_check_passes_everything_on_loopback(home: Path) -> None:
    assert config_refusal(_config("/etc", "/etc").model_dump(), load_settings()) is None


def test_resume_refuses_a_run_whose_config_reads_outside_the_roots(
    home: Path, served_publicly: None
) -> None:
    settings = load_settings()
    folder = job_folder(settings, "run-outside")
    folder.mkdir(parents=True)
    (folder / CONFIG_FILE).write_text(
        "model: {name_or_path: 'demo:sd15'}\ndatasets: [{folder_path: /etc}]\n", encoding="utf-8"
    )
    with pytest.raises(LaunchRefused, match=f"datasets.0.folder_path: /etc {OUTSIDE}"):
        resume_job("run-outside", settings=settings)


# ------------------------------------------------------------------- a store that refuses
@pytest.fixture()
def studio_retries(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This process as the studio: MLflow's engine retries lowered; restored afterwards."""
    import mlflow.store.db.utils as db_utils

    # MLflow's own count (what a trainer keeps); an earlier AppTest here ran the studio's start-up
    monkeypatch.setattr(db_utils, "MAX_RETRY_COUNT", 10)
    monkeypatch.setattr(connect, "_sql_retries", None)
    yield


def test_studio_start_up_lowers_mlflows_engine_retries(
    studio_retries: None, tmp_path: Path
) -> None:
    import mlflow.store.db.utils as db_utils

    mlflow_client(f"sqlite:///{tmp_path / 'a.db'}")
    assert db_utils.MAX_RETRY_COUNT == 10  # not asked for: as MLflow has it
    use_studio_store_retries()
    assert db_utils.MAX_RETRY_COUNT == connect.STUDIO_SQL_RETRIES == 2


def test_the_studio_app_asks_for_few_retries(home: Path, studio_retries: None) -> None:
    run(new_app())
    assert connect._sql_retries == connect.STUDIO_SQL_RETRIES


def _refuse_password(conn: socket.socket) -> None:
    """PostgreSQL's side of a wrong password: no SSL, then a FATAL error for the start-up."""
    with conn:
        while (head := conn.recv(8)) and len(head) == 8:
            length, code = struct.unpack("!ii", head)
            if length > 8:
                conn.recv(length - 8)
            if code in (80877103, 80877104):  # SSLRequest, GSSENCRequest: not offered
                conn.sendall(b"N")
                continue
            fields = b'SFATAL\0VFATAL\0C28P01\0Mpassword authentication failed for user "u"\0\0'
            conn.sendall(b"E" + struct.pack("!i", len(fields) + 4) + fields)
            return


@pytest.fixture()
def refusing_postgres() -> Iterator[int]:
    server = socket.create_server(("127.0.0.1", 0))
    connections: list[socket.socket] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            connections.append(conn)
            threading.Thread(target=_refuse_password, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield server.getsockname()[1]
    server.close()


def test_a_wrong_password_is_reported_in_seconds(
    refusing_postgres: int, studio_retries: None
) -> None:
    pytest.importorskip("psycopg2")
    import mlflow  # noqa: F401  # imported before the clock starts: 1-2 s that are not MLflow's retries

    use_studio_store_retries()
    uri = f"postgresql+psycopg2://u:hunter2@127.0.0.1:{refusing_postgres}/mlflow"
    started = time.monotonic()
    with pytest.raises(StoreRefused) as err:
        mlflow_client(uri)
    assert time.monotonic() - started < 10  # MLflow's 10 retries: ~104 s
    message = str(err.value)
    assert 'password authentication failed for user "u"' in message
    assert "hunter2" not in message and "MLFLOW_TRACKING_URI" in message


# -------------------------------------------------------------------------------- Monitor
def test_a_finished_run_with_a_failed_upload_shows_the_warning(home: Path) -> None:
    settings = load_settings()
    runs = {}
    for key, tags in (("warned", {TAG_HUB_UPLOAD_FAILED: f"403 for {RELATIVE}"}), ("clean", {})):
        cfg = TrainingConfig.model_validate(
            {"train": {"steps": 2}, "logging": {"log_system_metrics": False, "run_name": key}}
        )
        run_id = create_run(settings, cfg)
        tracker = MlflowTracker(settings.tracking_uri, background=False)
        tracker.start(cfg, run_id=run_id)
        tracker.set_tags(tags)
        tracker.end("FINISHED")
        runs[key] = run_id
    at = open_page("pages/home.py")
    at.session_state[MONITOR_RUN_KEY] = runs["warned"]
    run(at.switch_page("pages/monitor.py"))
    warnings = [w.value for w in at.warning if "Hugging Face Hub" in w.value]
    assert len(warnings) == 1, [w.value for w in at.warning]
    assert "**The LoRA was not uploaded to the Hugging Face Hub:**" in warnings[0]
    assert_text_only([("warning", warnings[0])], f"403 for {RELATIVE}")
    assert not at.error  # it finished: no failure is shown
    at.session_state[MONITOR_RUN_KEY] = runs["clean"]
    run(at.switch_page("pages/monitor.py"))
    assert not [w.value for w in at.warning if "Hugging Face Hub" in w.value]


def _png() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 10, 10)).save(buf, "PNG")
    return buf.getvalue()
