"""Run-ended notifications (issue 17, item 3): a local HTTP server, reached through apprise's
json:// URL, receives exactly one message per finished, failed and stopped run, naming the run and
its status and holding no token; a message that cannot be sent leaves the run FINISHED; the
browser's toast shows once per session."""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from jobs_support import fresh_settings, training_at, wait_for
from options_support import tiny_config
from streamlit.testing.v1 import AppTest

from trainer.config.io import save_config
from trainer.engine import loop
from trainer.engine.run import EXIT_FAILED, EXIT_OK, run_job
from trainer.jobs.folder import LOG_FILE
from trainer.notify import (
    NOTICE_CLAIM_FILE,
    mask_url,
    notify_run_ended,
    protect_url,
    run_end_body,
    run_end_title,
    save_notify_url,
    url_problem,
)
from trainer.redaction import redact_text
from trainer.settings import StudioSettings, load_settings
from trainer.tracking.job_file import write_job
from trainer.tracking.progress import write_progress
from trainer.tracking.records import get_run_record

URL_TOKEN = "Zq7PathToken0xDEADBEEF42"  # sits in the URL's path, like a Discord webhook token
URL_PASSWORD = "pw-9f8e7d6c5b"
HF_TOKEN = "hf_FakeTokenForNotifyTests0123456789abcd"
REAL_REPORT = loop.report


class Receiver:
    """A webhook on 127.0.0.1 that keeps every JSON body posted to it."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.raw: list[bytes] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                data = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                owner.raw.append(data)  # what was sent; the URL's path is the URL's own
                owner.messages.append(json.loads(data))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        port = self.server.server_address[1]
        return f"json://notify:{URL_PASSWORD}@127.0.0.1:{port}/hooks/{URL_TOKEN}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


@pytest.fixture(autouse=True)
def forget_registered_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """protect_url registers the URL's secrets for the whole process (a trainer's lifetime): a
    test's fake ones (``code=abc123``) must not blank the same text in later tests."""
    import trainer.redaction as redaction

    monkeypatch.setattr(redaction, "_KNOWN_SECRETS", redaction._KNOWN_SECRETS)


@pytest.fixture()
def settings(tmp_path: Path, demo_home: Path, monkeypatch: pytest.MonkeyPatch) -> StudioSettings:
    monkeypatch.setenv("HF_TOKEN", HF_TOKEN)
    monkeypatch.delenv("STUDIO_NOTIFY_URL", raising=False)
    return fresh_settings(tmp_path, demo_home, monkeypatch)


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"json://127.0.0.1:{port}/hooks/{URL_TOKEN}"


def assert_no_secret(text: str) -> None:
    for secret in (URL_TOKEN, URL_PASSWORD, HF_TOKEN, HF_TOKEN[3:]):
        assert secret not in text


def assert_run_keeps_no_secret(settings: StudioSettings, run_id: str) -> None:
    record = get_run_record(settings.tracking_uri, run_id)
    assert_no_secret(json.dumps([record.params, record.tags]))
    assert not any("notify" in key.lower() for key in [*record.params, *record.tags])


# --------------------------------------------------------------------------- the message
def test_the_message_names_the_run_its_status_steps_loss_duration_and_why_it_failed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HF_TOKEN", "not-hf-shaped-token-123")  # any shape: its value is hidden
    note = f"RuntimeError: boom with {HF_TOKEN} and not-hf-shaped-token-123\nsecond line"
    summary = {"step": 7, "total_steps": 30, "loss": 0.123456, "duration_s": 125, "note": note}
    body = run_end_body("my_lora", "FAILED", summary)
    assert body.splitlines() == [
        "Run: my_lora",
        "Status: failed (FAILED)",
        "Steps: 7 of 30",
        "Final loss: 0.1235",
        "Duration: 2 min 05 s",
        "Why: RuntimeError: boom with hf_***REDACTED*** and ***",
    ]
    finished = run_end_body("my_lora", "FINISHED", {**summary, "duration_s": 7300})
    assert "Duration: 2 h 01 min" in finished and "Why" not in finished  # a note only for failures
    assert run_end_title("my_lora", "KILLED") == "■ my_lora stopped — LoRA Studio"
    assert run_end_title("my_lora", "FINISHED") == "✓ my_lora finished — LoRA Studio"


def test_the_url_is_shown_masked_and_never_in_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    url = f"json://user:{URL_PASSWORD}@hooks.example.com:8443/x/{URL_TOKEN}?code=abc123"
    assert mask_url(url) == "json://user:***@hooks.example.com:8443/x/***?code=***"
    assert mask_url(f"discord://1234567890/{URL_TOKEN}") == "discord://***/***"
    # a URL apprise cannot parse, the URL in use, the path urllib3 posts to: no token in a log
    bad = f"nosuchservice://{URL_TOKEN}/abc"
    with caplog.at_level(logging.DEBUG):
        problem = url_problem(bad)
        logging.getLogger("anything").error("cannot parse %s", bad)
        protect_url(url)  # what sending to it does first
        logging.getLogger("anything").warning("posting to %s", url)
        logging.getLogger("urllib3").debug("POST /x/%s HTTP/1.1", URL_TOKEN)
    assert problem is not None and "nosuchservice://" in problem and URL_TOKEN not in problem
    assert caplog.records and URL_TOKEN not in caplog.text and URL_PASSWORD not in caplog.text
    assert URL_TOKEN not in redact_text(f"see /x/{URL_TOKEN}")


def test_a_message_goes_out_once_and_a_closed_port_is_a_warning(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    assert notify_run_ended(receiver.url, "demo", "FINISHED", {"step": 3}) is None
    assert [m["title"] for m in receiver.messages] == ["✓ demo finished — LoRA Studio"]
    assert receiver.messages[0]["type"] == "success"
    with caplog.at_level(logging.WARNING):
        problem = notify_run_ended(closed_port_url(), "demo", "FINISHED", {})
    assert problem and "Could not send the notification" in caplog.text
    assert URL_TOKEN not in caplog.text and len(receiver.messages) == 1


def test_the_saved_url_is_private_and_reaches_the_trainer_only_in_its_environment(
    settings: StudioSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trainer.jobs.launch import trainer_env

    assert settings.notify_url_in_use() == "" and "STUDIO_NOTIFY_URL" not in trainer_env(
        settings, "r1"
    )
    save_notify_url(settings, "json://127.0.0.1:9/saved")
    assert settings.notify_file.stat().st_mode & 0o777 == 0o600
    assert trainer_env(settings, "r1")["STUDIO_NOTIFY_URL"] == "json://127.0.0.1:9/saved"
    monkeypatch.setenv("STUDIO_NOTIFY_URL", "json://127.0.0.1:9/from-env")
    assert load_settings().notify_url_in_use() == "json://127.0.0.1:9/from-env"  # env wins
    assert "from-env" not in repr(load_settings())  # a SecretStr: not in a printed setting
    monkeypatch.delenv("STUDIO_NOTIFY_URL")
    save_notify_url(settings, "")
    assert not settings.notify_file.exists() and settings.notify_url_in_use() == ""


# ------------------------------------------------------------- runs in this process
def tracked_config(tmp_path: Path, steps: int = 3) -> Path:
    cfg = tiny_config(
        train={"steps": steps},
        logging={"use_mlflow": True, "log_system_metrics": False, "run_name": "notify_demo"},
    )
    return save_config(cfg, tmp_path / "config.yaml")


def test_a_finished_and_a_failed_run_each_send_one_message_without_secrets(
    settings: StudioSettings,
    receiver: Receiver,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("STUDIO_NOTIFY_URL", receiver.url)
    config = tracked_config(tmp_path)
    finished = run_job(config, job_dir=tmp_path / "ok", tracking_uri=settings.tracking_uri)
    assert finished.exit_code == EXIT_OK
    assert len(receiver.messages) == 1
    message = receiver.messages[0]
    assert message["title"] == "✓ notify_demo finished — LoRA Studio"
    assert "Run: notify_demo" in message["message"] and "Steps: 3 of 3" in message["message"]
    assert "Final loss: " in message["message"] and "Duration: " in message["message"]
    assert (tmp_path / "ok" / NOTICE_CLAIM_FILE).exists()

    def crash_after_two(ctx, state, *args, **kwargs):
        REAL_REPORT(ctx, state, *args, **kwargs)
        if state.step == 2:
            raise RuntimeError(f"simulated crash, token {HF_TOKEN} at hand")

    monkeypatch.setattr(loop, "report", crash_after_two)
    failed = run_job(config, job_dir=tmp_path / "bad", tracking_uri=settings.tracking_uri)
    assert failed.exit_code == EXIT_FAILED
    assert len(receiver.messages) == 2
    message = receiver.messages[1]
    assert message["title"] == "✗ notify_demo failed — LoRA Studio" and message["type"] == "failure"
    assert "Status: failed (FAILED)" in message["message"]
    assert "Why: " in message["message"] and "simulated crash" in message["message"]
    train_log = capfd.readouterr().err  # what a trainer subprocess writes to train.log
    assert "simulated crash, token hf_" in train_log and HF_TOKEN not in train_log
    assert_no_secret(b"".join(receiver.raw).decode())
    for result in (finished, failed):
        assert_run_keeps_no_secret(settings, result.run_id)


def test_a_message_that_cannot_be_sent_leaves_the_run_finished(
    settings: StudioSettings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("STUDIO_NOTIFY_URL", closed_port_url())
    with caplog.at_level(logging.WARNING):
        result = run_job(tracked_config(tmp_path, steps=2), job_dir=tmp_path / "job")
    assert result.exit_code == EXIT_OK and result.status == "FINISHED"
    assert get_run_record(settings.tracking_uri, result.run_id).status == "FINISHED"
    assert "Could not send the notification" in caplog.text and URL_TOKEN not in caplog.text


# ----------------------------------------------------- the studio closes a vanished run
def test_a_run_whose_trainer_vanished_gets_its_message_from_the_reconcile_once(
    settings: StudioSettings, receiver: Receiver
) -> None:
    from mlflow import MlflowClient

    from trainer.jobs.control import reconcile

    save_notify_url(settings, receiver.url)
    client = MlflowClient(settings.tracking_uri)
    run_id = client.create_run(client.create_experiment("ghosts")).info.run_id
    gone = subprocess.Popen([sys.executable, "-c", "pass"])  # a trainer that is no more
    gone.wait()
    folder = settings.jobs_dir / run_id
    folder.mkdir(parents=True)
    write_job(folder, gone.pid, run_id, time.time() - 90, ["python"], folder / "c.yaml", name="gh")
    write_progress(folder, {"phase": "training", "step": 5, "total_steps": 30, "loss": 0.5})

    assert reconcile(settings) == [run_id]
    assert [m["title"] for m in receiver.messages] == ["✗ gh failed — LoRA Studio"]
    assert "Steps: 5 of 30" in receiver.messages[0]["message"]
    assert reconcile(settings) == [] and len(receiver.messages) == 1


# ------------------------------------------------------ a stopped trainer subprocess
@pytest.mark.slow
def test_a_run_stopped_from_the_studio_sends_one_message_from_its_trainer(
    settings: StudioSettings, receiver: Receiver
) -> None:
    from trainer.config.io import load_config
    from trainer.jobs.control import reconcile, stop, wait_for_exit
    from trainer.jobs.launch import launch

    save_notify_url(settings, receiver.url)  # as the Home page's form does
    cfg = load_config(
        Path(__file__).resolve().parent.parent / "presets" / "demo_sd15.yaml",
        [
            "train.steps=200",
            "sample.sample_every=0",
            "save.save_every=1000",
            "logging.run_name=notify_stop",
        ],
    )
    job = launch(settings, cfg)
    wait_for(training_at(job.job_dir, 2), 180, "step 2")
    assert receiver.messages == []
    assert stop(settings, job.run_id)
    assert wait_for_exit(settings, job.run_id, timeout=60)
    assert job.process.returncode == 3
    assert get_run_record(settings.tracking_uri, job.run_id).status == "KILLED"
    wait_for(lambda: receiver.messages, 10, "the message")
    assert [m["title"] for m in receiver.messages] == ["■ notify_stop stopped — LoRA Studio"]
    assert "Status: stopped (KILLED)" in receiver.messages[0]["message"]
    reconcile(settings)
    time.sleep(0.5)
    assert len(receiver.messages) == 1
    assert_no_secret(b"".join(receiver.raw).decode())
    assert_no_secret((job.job_dir / LOG_FILE).read_text())
    assert_no_secret("".join(p.read_text() for p in job.job_dir.glob("*.json")))
    assert_no_secret((job.job_dir / "config.yaml").read_text())
    assert_run_keeps_no_secret(settings, job.run_id)


# ------------------------------------------------------------------ the browser's side
def _notice_script() -> None:
    from trainer.jobs.active import active_jobs
    from trainer.settings import load_settings
    from ui.run_end_notice import announce_ended_runs

    settings = load_settings()
    announce_ended_runs(settings, active_jobs(settings))


def test_the_browser_toasts_a_run_end_once_and_keeps_the_status_in_the_tab_title(
    settings: StudioSettings,
) -> None:
    trainer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        folder = settings.jobs_dir / "run1"
        folder.mkdir(parents=True)
        write_job(folder, trainer.pid, "run1", time.time(), ["python"], folder / "c.yaml", name="L")
        write_progress(folder, {"phase": "training", "step": 3, "total_steps": 30})
        at = AppTest.from_function(_notice_script, default_timeout=30).run()
        assert not at.exception and len(at.toast) == 0
        at.run()
        assert len(at.toast) == 0  # still training: nothing to say
        write_progress(folder, {"phase": "finished", "step": 30, "total_steps": 30})
        trainer.kill()
        trainer.wait()
        at.run()
        assert [(t.value, t.icon) for t in at.toast] == [
            ("**L** finished", ":material/check_circle:")
        ]
        assert at.session_state["run_end_notice"].title == "✓ L finished — LoRA Studio"
        at.run()
        at.run()
        assert len(at.toast) == 0  # once, not on every rerun
        assert at.session_state["run_end_notice"].title == "✓ L finished — LoRA Studio"
    finally:
        trainer.kill()
        trainer.wait()
    assert os.environ.get("STUDIO_NOTIFY_URL") is None


def shown_text(markdown: str) -> str:
    """What the browser shows of ``ui.text.plain``'s markdown: no escapes, no code marks."""
    return re.sub(r"\\(.)", r"\1", markdown).replace("`", "")


def _settings_script() -> None:
    from ui.notify_settings import render_notify_settings

    render_notify_settings()


def test_the_home_settings_form_saves_the_url_masked_and_sends_a_test(
    settings: StudioSettings, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ui_support import texts

    from ui.notify_settings import REMOVE_KEY, SAVE_KEY, TEST_KEY, URL_KEY

    at = AppTest.from_function(_settings_script, default_timeout=30).run()
    assert not at.exception and "No notification URL is set" in texts(at)
    assert at.text_input(key=URL_KEY).proto.type == at.text_input(key=URL_KEY).proto.PASSWORD
    at.text_input(key=URL_KEY).input(f"nosuchservice://{URL_TOKEN}")
    at.button(key=SAVE_KEY).click().run()
    assert "apprise has no service called 'nosuchservice://'" in shown_text(at.error[0].value)
    assert URL_TOKEN not in at.error[0].value
    assert not settings.notify_file.exists()

    at.text_input(key=URL_KEY).input(receiver.url)
    at.button(key=SAVE_KEY).click().run()
    assert not at.exception
    port = receiver.server.server_address[1]
    assert f"Saved: messages go to `json://notify:***@127.0.0.1:{port}/hooks/***`" in texts(at)
    assert settings.notify_url_in_use() == receiver.url
    assert settings.notify_file.stat().st_mode & 0o777 == 0o600
    at.button(key=TEST_KEY).click().run()
    assert [m["title"] for m in receiver.messages] == ["Test — LoRA Studio"]
    assert "Test message sent" in texts(at)
    shown = texts(at) + "".join(str(w.value) for w in at.text_input) + at.session_state[URL_KEY]
    assert URL_TOKEN not in shown and URL_PASSWORD not in shown

    at.button(key=REMOVE_KEY).click().run()
    assert not settings.notify_file.exists() and "Removed" in texts(at)

    monkeypatch.setenv("STUDIO_NOTIFY_URL", receiver.url)  # the environment's: shown, fixed
    at = AppTest.from_function(_settings_script, default_timeout=30).run()
    assert "set by `STUDIO_NOTIFY_URL`" in texts(at) and not at.text_input
    assert [b.key for b in at.button] == [TEST_KEY]


def test_the_saved_url_is_shown_whole_with_only_its_secrets_masked() -> None:
    assert mask_url("json://127.0.0.1:9/x") == "json://127.0.0.1:9/x"
    assert mask_url("ntfys://my-topic") == "ntfys://my-topic"
    assert mask_url("mailto://me:hunter2@example.com") == "mailto://me:***@example.com"
    both = f"json://127.0.0.1:9/x, discord://1234567890/{URL_TOKEN}"
    assert mask_url(both) == "json://127.0.0.1:9/x, discord://***/***"
    assert mask_url(f"no scheme {URL_TOKEN}") == "***, ***, ***"


def test_a_url_without_a_service_prefix_says_so_in_plain_words() -> None:
    problem = url_problem("xyz") or ""
    assert problem.startswith("Not a notification URL: 'xyz' has no service prefix; use one of")
    assert "ntfy://topic" in problem and "json://host/path" in problem and "?://" not in problem
    hidden = url_problem(URL_TOKEN) or ""  # a pasted token, not a URL: never repeated
    assert "has no service prefix" in hidden and URL_TOKEN not in hidden
    missing = url_problem(f"discord://{URL_TOKEN[:10]}") or ""  # apprise's own reason, redacted
    assert "apprise knows discord://" in missing and "Webhook Token" in missing
    assert URL_TOKEN[:10] not in missing
    assert url_problem("json://127.0.0.1:9/x") is None


def test_a_refused_message_says_apprise_s_reason_and_leaves_its_logger_as_it_was(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from trainer.notify import send_test_notification

    apprise_log = logging.getLogger("apprise")
    before = (apprise_log.level, apprise_log.propagate, list(apprise_log.handlers))
    url = closed_port_url()
    port = url.split(":")[2].split("/")[0]
    with caplog.at_level(logging.WARNING):
        problem = send_test_notification(url)
    assert problem == f"could not connect to 127.0.0.1:{port}: connection refused"
    assert f"to 127.0.0.1:{port}: could not connect" in caplog.text
    assert URL_TOKEN not in caplog.text and "Payload" not in caplog.text  # apprise's debug lines
    assert (apprise_log.level, apprise_log.propagate, list(apprise_log.handlers)) == before


def test_the_form_keeps_a_url_it_cannot_use_and_shows_why_a_test_was_not_sent(
    settings: StudioSettings,
) -> None:
    from ui_support import texts

    from ui.notify_settings import SAVE_KEY, TEST_KEY, URL_KEY

    at = AppTest.from_function(_settings_script, default_timeout=30).run()
    at.text_input(key=URL_KEY).input("xyz")
    at.button(key=SAVE_KEY).click().run()
    assert not at.exception
    said = shown_text(at.error[0].value)
    assert "Not a notification URL: 'xyz' has no service prefix; use one of ntfy://topic" in said
    assert "?://" not in said
    assert at.text_input(key=URL_KEY).value == "xyz"  # still there to correct
    url = closed_port_url()
    port = url.split(":")[2].split("/")[0]
    at.text_input(key=URL_KEY).input(url)
    at.button(key=SAVE_KEY).click().run()
    assert f"Saved: messages go to `json://127.0.0.1:{port}/hooks/***`" in texts(at)
    assert at.text_input(key=URL_KEY).value == ""  # saved: the box keeps no copy
    at.button(key=TEST_KEY).click().run()
    assert [shown_text(e.value) for e in at.error] == [
        f"The test message was not sent: could not connect to 127.0.0.1:{port}: connection refused"
    ]
    assert URL_TOKEN not in texts(at)


def test_the_sidebar_of_any_page_announces_a_run_end(settings: StudioSettings) -> None:
    from ui_support import new_app, run_ok

    trainer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        folder = settings.jobs_dir / "run2"
        folder.mkdir(parents=True)
        write_job(folder, trainer.pid, "run2", time.time(), ["python"], folder / "c.yaml", name="S")
        write_progress(folder, {"phase": "training", "step": 3, "total_steps": 30})
        at = run_ok(new_app())
        assert len(at.toast) == 0 and "run2" in at.session_state["run_end_notice"].watching
        write_progress(folder, {"phase": "killed", "step": 4, "total_steps": 30})
        trainer.kill()
        trainer.wait()
        run_ok(at.switch_page("pages/presets.py"))
        assert [t.value for t in at.toast] == ["**S** stopped"]
    finally:
        trainer.kill()
        trainer.wait()
