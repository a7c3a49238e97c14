"""Online by default, offline on request: the decision, the trainer's environment, the Hub probe
(against a local HTTP server) and the Hub line on the preflight page."""

from __future__ import annotations

import http.server
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from huggingface_hub import constants as hf_constants
from ui_support import open_page, texts

from trainer.arch.hub_status import OFFLINE, REACHABLE, UNREACHABLE, hub_status, probe_hub
from trainer.jobs.launch import trainer_env
from trainer.settings import hub_offline, load_settings

ROOT = Path(__file__).resolve().parent.parent
OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "STUDIO_OFFLINE")


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Neither STUDIO_OFFLINE nor HF_HUB_OFFLINE (the tests' default is offline), no proxy."""
    for name in (*OFFLINE_VARS, "http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("STUDIO_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture
def hub_server() -> Iterator[tuple[str, list[str]]]:
    """A local stand-in for the Hub: its URL and the requests it received."""
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:
            seen.append(f"HEAD {self.path}")
            self.send_response(200)
            self.end_headers()

        do_GET = do_HEAD

        def log_message(self, *args: object) -> None:  # keep pytest's output clean
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ------------------------------------------------------------------------------ the decision
@pytest.mark.usefixtures("online")
def test_online_unless_studio_offline_or_the_users_hf_hub_offline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert hub_offline() is False
    assert load_settings().offline is False
    monkeypatch.setenv("STUDIO_OFFLINE", "1")
    assert load_settings().offline is True and hub_offline() is True
    monkeypatch.delenv("STUDIO_OFFLINE")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the user's own choice is honoured
    assert hub_offline() is True
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert hub_offline() is False
    assert hub_offline(load_settings(offline=True)) is True


@pytest.mark.usefixtures("online")
def test_trainer_env_is_offline_only_when_the_studio_is(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env = trainer_env(load_settings(home=tmp_path), "run1")
    assert "HF_HUB_OFFLINE" not in env and "TRANSFORMERS_OFFLINE" not in env
    env = trainer_env(load_settings(home=tmp_path, offline=True), "run1")
    assert env["HF_HUB_OFFLINE"] == "1" and env["TRANSFORMERS_OFFLINE"] == "1"
    monkeypatch.setenv("STUDIO_OFFLINE", "1")
    env = trainer_env(load_settings(home=tmp_path), "run1")
    assert env["HF_HUB_OFFLINE"] == "1" and env["TRANSFORMERS_OFFLINE"] == "1"


def test_make_run_no_longer_forces_offline_but_tests_stay_offline() -> None:
    makefile = (ROOT / "Makefile").read_text()
    run_recipe = makefile.split("\nrun:", 1)[1].split("\n\n", 1)[0]
    assert "OFFLINE" not in run_recipe
    assert not any(
        line.startswith("export") and "OFFLINE" in line for line in makefile.splitlines()
    )
    test_recipe = makefile.split("\ntest:", 1)[1].split("\n\n", 1)[0]
    assert "$(OFFLINE)" in test_recipe and "OFFLINE   := HF_HUB_OFFLINE=1" in makefile


# --------------------------------------------------------------------------- the Hub probe
@pytest.mark.usefixtures("online")
def test_a_hub_that_answers_is_reachable(hub_server: tuple[str, list[str]]) -> None:
    url, seen = hub_server
    status = hub_status(endpoint=url)
    assert status.state == REACHABLE and "200" in status.detail
    assert seen == ["HEAD /"]
    assert status.cache_dir == Path(hf_constants.HF_HUB_CACHE)
    assert status.cache_free_gb is not None and status.cache_free_gb > 0


@pytest.mark.usefixtures("online")
def test_a_closed_port_is_unreachable_quickly() -> None:
    started = time.monotonic()
    status = hub_status(endpoint=f"http://127.0.0.1:{closed_port()}", timeout=1.0)
    assert status.state == UNREACHABLE and "no answer" in status.detail
    assert time.monotonic() - started < 1.5


def test_a_silent_server_does_not_hang_the_probe() -> None:
    with socket.socket() as listener:  # accepts connections (backlog), never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        started = time.monotonic()
        reachable, detail = probe_hub(f"http://127.0.0.1:{listener.getsockname()[1]}", 0.5)
        assert not reachable and time.monotonic() - started < 1.5, detail


@pytest.mark.usefixtures("online")
def test_offline_reports_without_any_request(
    monkeypatch: pytest.MonkeyPatch, hub_server: tuple[str, list[str]]
) -> None:
    url, seen = hub_server
    monkeypatch.setenv("STUDIO_OFFLINE", "1")
    status = hub_status(endpoint=url)
    assert status.state == OFFLINE and "STUDIO_OFFLINE / HF_HUB_OFFLINE" in status.detail
    monkeypatch.delenv("STUDIO_OFFLINE")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub_status(endpoint=url).state == OFFLINE
    assert seen == []


# ------------------------------------------------------------------------ the preflight page
@pytest.mark.usefixtures("online")
def test_preflight_shows_the_hub_and_its_cache(
    monkeypatch: pytest.MonkeyPatch, hub_server: tuple[str, list[str]]
) -> None:
    from ui.preflight import cached_hub_status

    url, seen = hub_server
    monkeypatch.setattr(hf_constants, "ENDPOINT", url)
    cached_hub_status.clear()
    at = open_page("pages/preflight.py")
    shown = texts(at)
    assert "**Hugging Face Hub**" in shown and "Reachable" in shown and url in shown
    assert "**Model cache**" in shown and str(hf_constants.HF_HUB_CACHE) in shown
    at.radio(key="pf:what").set_value("style").run()  # a rerun asks the cache, not the Hub
    assert len(seen) == 1

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # restored after the test: the app sets it to 1
    monkeypatch.setenv("STUDIO_OFFLINE", "1")
    at = open_page("pages/preflight.py")
    shown = texts(at)
    assert "Offline" in shown and "offline (STUDIO_OFFLINE / HF_HUB_OFFLINE)" in shown
    assert len(seen) == 1


@pytest.mark.usefixtures("online")
def test_preflight_says_what_an_unreachable_hub_means(monkeypatch: pytest.MonkeyPatch) -> None:
    from ui.preflight import cached_hub_status

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    monkeypatch.setattr(hf_constants, "ENDPOINT", closed)
    cached_hub_status.clear()
    at = open_page("pages/preflight.py")
    assert "Unreachable" in texts(at)
    assert any("STUDIO_OFFLINE=1" in c.value for c in at.caption)
