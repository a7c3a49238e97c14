"""The MLflow UI for the studio's store: a lean local server (started once, then reused) and links
to a run or a comparison in the machine-learning view."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from trainer.settings import StudioSettings

STATE_FILE = "mlflow_ui.json"
LOG_FILE = "mlflow_ui.log"
DEFAULT_PORT = 5055


def healthy(base: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/health", timeout=timeout) as reply:
            return reply.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


ML_VIEW = "workflowType=machine_learning"  # MLflow 3 otherwise may open its GenAI view


def run_url(base: str, experiment_id: str, run_id: str) -> str:
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}?{ML_VIEW}"


def compare_url(base: str, experiment_ids: list[str], run_ids: list[str]) -> str:
    runs = quote(json.dumps(run_ids))
    experiments = quote(json.dumps(sorted(set(experiment_ids))))
    return f"{base}/#/compare-runs?runs={runs}&experiments={experiments}&{ML_VIEW}"


def server_ui(tracking_uri: str) -> str | None:
    """The UI of an http(s) tracking server (a team's ``mlflow server``): its base URL without any
    ``user:password@`` part, so links never show credentials; None for any other store."""
    if not tracking_uri.startswith(("http://", "https://")):
        return None
    parts = urlsplit(tracking_uri)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"  # IPv6
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def _state(settings: StudioSettings) -> dict:
    try:
        return json.loads((settings.home / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def command(settings: StudioSettings, port: int) -> list[str]:
    """The ``mlflow server`` command line; a store URI holding a password is left out of it
    (any local user can read a command line) and goes in ``server_env`` instead."""
    mlflow = Path(sys.executable).with_name("mlflow")
    store = (
        []
        if _has_password(settings.tracking_uri)
        else ["--backend-store-uri", settings.tracking_uri]
    )
    return [
        str(mlflow) if mlflow.exists() else "mlflow",
        "server",
        "--workers",
        "1",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *store,
        "--default-artifact-root",
        settings.artifacts_dir.as_uri(),
    ]


def server_env(settings: StudioSettings) -> dict[str, str]:
    """The server's environment: ours, no job execution, and the store URI when ``command``
    left it out (``mlflow server`` reads ``MLFLOW_BACKEND_STORE_URI``)."""
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    if _has_password(settings.tracking_uri):
        env["MLFLOW_BACKEND_STORE_URI"] = settings.tracking_uri
    return env


def _has_password(uri: str) -> bool:
    try:
        return urlsplit(uri).password is not None
    except ValueError:
        return True  # unparsable: keep it off the command line to be safe


def _store_key(uri: str) -> str:
    """What the state file records of the store: a digest, never the URI (it may hold a
    password)."""
    return "sha256:" + hashlib.sha256(uri.encode()).hexdigest()


def _same_store(state: dict, uri: str) -> bool:
    return state.get("uri") in (uri, _store_key(uri))  # a plain URI: a state file from before


def running_server(settings: StudioSettings) -> str | None:
    """The base URL of the MLflow UI already showing the studio's store (a team server, or the
    one this studio started and that still answers), without starting anything."""
    remote = server_ui(settings.tracking_uri)
    if remote is not None:
        return remote
    state = _state(settings)
    url = state.get("url", "")
    return url if _same_store(state, settings.tracking_uri) and healthy(url, 0.5) else None


def ensure_server(
    settings: StudioSettings, port: int = DEFAULT_PORT, timeout: float = 90.0
) -> tuple[str, bool]:
    """The base URL of an MLflow UI showing the studio's store and whether it was started now.

    An http(s) tracking server (a team's) is its own UI: nothing is started. For a local store
    (or a database URI such as ``postgresql://...``) the server this studio started before is
    reused while it answers; otherwise a lean one (1 worker, no job execution) is started on the
    first free port from ``port`` and recorded in ``<home>/mlflow_ui.json``."""
    remote = server_ui(settings.tracking_uri)
    if remote is not None:
        return remote, False
    state = _state(settings)
    if _same_store(state, settings.tracking_uri) and healthy(state.get("url", "")):
        return state["url"], False
    while healthy(f"http://127.0.0.1:{port}"):  # someone else's server: leave it alone
        port += 1
    env = server_env(settings)
    settings.home.mkdir(parents=True, exist_ok=True)
    with open(settings.home / LOG_FILE, "ab") as log:
        process = subprocess.Popen(
            command(settings, port),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # outlives the Streamlit script run
        )
    url = f"http://127.0.0.1:{port}"
    store = _store_key(settings.tracking_uri)
    state = {"pid": process.pid, "url": url, "uri": store, "started": time.time()}
    (settings.home / STATE_FILE).write_text(json.dumps(state), encoding="utf-8")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if healthy(url):
            return url, True
        if process.poll() is not None:
            raise RuntimeError(f"mlflow server exited ({process.returncode}); see {LOG_FILE}")
        time.sleep(0.5)
    raise TimeoutError(f"mlflow server did not answer on {url} within {timeout:.0f} s")


def server_pid(settings: StudioSettings) -> int | None:
    return _state(settings).get("pid")
