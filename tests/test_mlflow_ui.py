"""The MLflow UI links and server reuse (starting a real server is measured, not tested: ~25 s)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from urllib.parse import unquote

import pytest

from trainer.settings import load_settings
from ui import mlflow_ui


class Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()
        self.wfile.write(b"OK")

    def log_message(self, *args) -> None:
        pass


@pytest.fixture()
def fake_server():
    server = HTTPServer(("127.0.0.1", 0), Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_links_open_the_run_and_the_comparison() -> None:
    base = "http://127.0.0.1:5055"
    ml_view = "workflowType=machine_learning"  # not MLflow 3's GenAI view
    assert mlflow_ui.run_url(base, "3", "abc") == f"{base}/#/experiments/3/runs/abc?{ml_view}"
    url = mlflow_ui.compare_url(base, ["3", "1", "3"], ["a", "b"])
    assert url.startswith(f"{base}/#/compare-runs?runs=")
    assert '["a", "b"]' in unquote(url) and 'experiments=["1", "3"]' in unquote(url)
    assert url.endswith(f"&{ml_view}")


def test_a_running_server_for_the_same_store_is_reused(tmp_path: Path, fake_server: str) -> None:
    settings = load_settings(home=tmp_path, tracking_uri_override=None)
    state = {"pid": 1, "url": fake_server, "uri": settings.tracking_uri}
    (tmp_path / mlflow_ui.STATE_FILE).write_text(json.dumps(state))
    assert mlflow_ui.ensure_server(settings, timeout=1) == (fake_server, False)


def test_a_server_for_another_store_is_not_reused(tmp_path: Path, fake_server: str, monkeypatch):
    settings = load_settings(home=tmp_path, tracking_uri_override=None)
    state = {"pid": 1, "url": fake_server, "uri": "sqlite:////elsewhere/mlflow.db"}
    (tmp_path / mlflow_ui.STATE_FILE).write_text(json.dumps(state))
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
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert cmd[1:3] == ["server", "--workers"] and settings.tracking_uri in cmd
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"


def test_a_remote_tracking_server_is_its_own_ui(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path, tracking_uri_override="http://mlflow.team:5000/")
    assert mlflow_ui.ensure_server(settings) == ("http://mlflow.team:5000", False)


def test_a_server_link_never_shows_credentials(tmp_path: Path) -> None:
    uri = "https://alice:s3cret@mlflow.team.example:8443/mlflow/"
    settings = load_settings(home=tmp_path, tracking_uri_override=uri)
    assert mlflow_ui.ensure_server(settings) == ("https://mlflow.team.example:8443/mlflow", False)
    assert mlflow_ui.server_ui("http://[::1]:5000") == "http://[::1]:5000"
    assert mlflow_ui.server_ui("sqlite:////x/mlflow.db") is None


def test_a_database_uri_gets_a_local_ui_on_that_database(tmp_path: Path, monkeypatch) -> None:
    db = "postgresql+psycopg2://mlflow@db.team:5432/mlflow"
    settings = load_settings(home=tmp_path, tracking_uri_override=db)
    started = []

    class Exited:
        pid, returncode = 4242, 1

        def __init__(self, cmd, **kwargs) -> None:
            started.append(cmd)

        def poll(self) -> int:
            return 1

    monkeypatch.setattr(mlflow_ui.subprocess, "Popen", Exited)
    with pytest.raises(RuntimeError, match="exited"):
        mlflow_ui.ensure_server(settings, timeout=1)
    cmd = started[0]
    assert cmd[cmd.index("--backend-store-uri") + 1] == db
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"


def test_a_running_server_is_found_without_starting_one(tmp_path: Path, fake_server: str) -> None:
    settings = load_settings(home=tmp_path, tracking_uri_override=None)
    assert mlflow_ui.running_server(settings) is None  # nothing recorded: nothing found
    state = {"pid": 1, "url": fake_server, "uri": settings.tracking_uri}
    (tmp_path / mlflow_ui.STATE_FILE).write_text(json.dumps(state))
    assert mlflow_ui.running_server(settings) == fake_server
    state["url"] = "http://127.0.0.1:9"  # recorded but gone
    (tmp_path / mlflow_ui.STATE_FILE).write_text(json.dumps(state))
    assert mlflow_ui.running_server(settings) is None
