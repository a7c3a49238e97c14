"""Credentials in a tracking URI (``postgresql://user:password@…``, ``http://user:password@…``,
``?token=…``) never reach a page, a message or a log, and a store that does not answer is reported
in seconds with the URI redacted (Home, Monitor, Compare in AppTest)."""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from test_security_text import shown_text

from trainer.redaction import describe_error, install_log_redaction, redact_text
from trainer.settings import load_settings
from trainer.tracking.reachability import forget_answers

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "s3cr3t-Pa55"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (
            "postgresql://bob:s3cr3t-Pa55@db.team:5432/mlflow",
            "postgresql://***@db.team:5432/mlflow",
        ),
        (
            "API request to http://alice:s3cr3t-Pa55@mlflow.team:5000/api/2.0/x failed",
            "API request to http://***@mlflow.team:5000/api/2.0/x failed",
        ),
        ("mysql+pymysql://bob:p@ss@word@db/mlflow", "mysql+pymysql://***@db/mlflow"),
        ("https://mlflow.team/?token=s3cr3t-Pa55&x=1", "https://mlflow.team/?token=***&x=1"),
        (
            "https://h/a?access_token=s3cr3t-Pa55#top and password=s3cr3t-Pa55 here",
            "https://h/a?access_token=***#top and password=*** here",
        ),
        (
            "s3://b/k?X-Amz-Signature=s3cr3t-Pa55&key=s3cr3t-Pa55",
            "s3://b/k?X-Amz-Signature=***&key=***",
        ),
    ],
)
def test_credentials_are_redacted_from_uris_and_messages(text: str, shown: str) -> None:
    assert redact_text(text) == shown
    assert redact_text(shown) == shown  # idempotent


@pytest.mark.parametrize(
    "text",
    [
        "sqlite:////home/me/studio/mlflow.db",
        "http://mlflow.team:5000/#/experiments/1?workflowType=machine_learning",
        "http://host/path?email=a@b.example",
        "train.lr=1e-4 keep_tokens=2 sort_key=3 step=10",
        "mlflow://no-credentials-here",
    ],
)
def test_text_without_credentials_is_left_alone(text: str) -> None:
    assert redact_text(text) == text


def test_an_error_is_described_by_its_innermost_cause_without_credentials() -> None:
    try:
        try:
            raise OSError("attempt to write a readonly database")
        except OSError as inner:
            raise RuntimeError(
                f"(autoflush)\nhttp://u:{PASSWORD}@host failed\n[SQL: INSERT ...]"
            ) from inner
    except RuntimeError as err:
        assert describe_error(err) == "OSError: attempt to write a readonly database"
    assert describe_error(ValueError(f"at http://u:{PASSWORD}@h:1\nmore")) == (
        "ValueError: at http://***@h:1"
    )


@pytest.fixture()
def redacting_logs() -> Iterator[None]:
    before = logging.getLogRecordFactory()
    install_log_redaction()
    install_log_redaction()  # idempotent: one wrapper
    try:
        yield
    finally:
        logging.setLogRecordFactory(before)


def test_log_records_are_redacted_message_arguments_and_traceback(redacting_logs, caplog) -> None:
    log = logging.getLogger("tests.security_uris")
    uri = f"postgresql://bob:{PASSWORD}@db:5432/mlflow"
    with caplog.at_level(logging.INFO, logger="tests.security_uris"):
        log.info("connecting to %s", uri)
        try:
            raise ConnectionError(f"could not reach {uri}?token={PASSWORD}")
        except ConnectionError:
            log.exception("the store failed (%d%% done)", 50)
    formatted = "\n".join(caplog.handler.format(r) for r in caplog.records)
    assert PASSWORD not in formatted
    assert "connecting to postgresql://***@db:5432/mlflow" in formatted
    assert "the store failed (50% done)" in formatted
    assert "ConnectionError: could not reach postgresql://***@db:5432/mlflow?token=***" in formatted
    assert "Traceback (most recent call last)" in formatted  # the traceback is kept, redacted


# ---------------------------------------------------------------------- pages against a dead store
def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture()
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never says a word (a hung server)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


def page_text(at: AppTest) -> str:
    """Everything the page sent to the browser, as protobuf text (every element, any kind)."""
    found: list[str] = []

    def walk(node) -> None:
        proto = getattr(node, "proto", None)
        if proto is not None:
            found.append(str(proto))
        for child in getattr(node, "children", {}).values():
            walk(child)

    walk(at._tree)
    return "\n".join(found)


def shown_errors(at: AppTest) -> str:
    """The errors as a reader sees them (their markdown rendered: the store's words are escaped)."""
    return " ".join(shown_text(e.value) for e in at.error)


def studio(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, uri: str, page: str) -> AppTest:
    monkeypatch.setenv("STUDIO_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("STUDIO_HOST", raising=False)
    forget_answers()
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=60)
    if page != "home":
        at.switch_page(f"pages/{page}.py")
    return at


@pytest.mark.parametrize("page", ["home", "monitor", "compare"])
@pytest.mark.parametrize("scheme", ["postgresql", "http"])
def test_a_refused_store_is_reported_with_the_password_redacted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, page: str, scheme: str
) -> None:
    port = _closed_port()
    uri = f"{scheme}://bob:{PASSWORD}@127.0.0.1:{port}" + ("/mlflow" if scheme != "http" else "")
    at = studio(tmp_path, monkeypatch, uri, page).run()
    assert not at.exception
    text = page_text(at)
    assert "does not answer" in text  # the walk sees the page's elements
    assert PASSWORD not in text and "bob:" not in text
    errors = shown_errors(at)
    assert f"The tracking store at {scheme}://***@127.0.0.1:{port}" in errors
    assert f"does not answer (connection refused at 127.0.0.1:{port})" in errors
    assert "unset MLFLOW_TRACKING_URI" in errors
    if page == "home":
        assert f"{scheme}://***@127.0.0.1:{port}" in " ".join(m.value for m in at.markdown)


def test_a_hung_postgresql_store_is_reported_within_seconds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, silent_port: int
) -> None:
    uri = f"postgresql://bob:{PASSWORD}@127.0.0.1:{silent_port}/mlflow"
    at = studio(tmp_path, monkeypatch, uri, "monitor")
    started = time.monotonic()
    at.run()
    took = time.monotonic() - started
    assert not at.exception
    errors = shown_errors(at)
    assert (
        f"postgresql://***@127.0.0.1:{silent_port}/mlflow does not answer (timed out after 5 s)"
        in (errors)
    )
    assert PASSWORD not in page_text(at)
    assert took < 15, f"the monitor took {took:.0f} s to say the store does not answer"


def test_the_local_mlflow_ui_keeps_a_password_off_its_command_line_and_state_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ui import mlflow_ui

    uri = f"postgresql://bob:{PASSWORD}@db.team:5432/mlflow"
    settings = load_settings(home=tmp_path, tracking_uri_override=uri)
    started = []

    class Exited:
        pid, returncode = 4242, 1

        def __init__(self, cmd, **kwargs) -> None:
            started.append((cmd, kwargs["env"]))

        def poll(self) -> int:
            return 1

    monkeypatch.setattr(mlflow_ui.subprocess, "Popen", Exited)
    with pytest.raises(RuntimeError, match="exited"):
        mlflow_ui.ensure_server(settings, timeout=1)
    cmd, env = started[0]
    assert PASSWORD not in " ".join(cmd) and "--backend-store-uri" not in cmd
    assert env["MLFLOW_BACKEND_STORE_URI"] == uri  # mlflow server reads it from there
    state = (tmp_path / mlflow_ui.STATE_FILE).read_text()
    assert PASSWORD not in state
    # the same store is recognised again from the state file (its digest)
    assert mlflow_ui._same_store(json.loads(state), uri)
    assert not mlflow_ui._same_store(json.loads(state), uri.replace("db.team", "db.other"))
