"""The studio's pages render in Streamlit's AppTest."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture()
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("STUDIO_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("STUDIO_HOST", raising=False)
    return AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=60)


def test_home_shows_the_studio_status(app: AppTest, tmp_path: Path) -> None:
    app.run()
    assert not app.exception
    text = " ".join(m.value for m in app.markdown)
    assert str(tmp_path / "home") in text
    assert f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}" in text
    assert text.count("not built yet") == 4
    assert app.button(key="build_demo")


def test_every_run_of_the_router_ends_by_freezing_what_it_imported(
    app: AppTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server's garbage collections skip the modules the pages imported
    (trainer.startup_gc.freeze_new_imports): the router calls it at the end of every run."""
    import trainer.startup_gc

    calls: list[int] = []
    monkeypatch.setattr(trainer.startup_gc, "freeze_new_imports", lambda: calls.append(1))
    app.run()
    assert calls == [1]
    app.run()
    assert calls == [1, 1]


@pytest.mark.slow
def test_home_builds_the_demo_models(app: AppTest, tmp_path: Path) -> None:
    app.run()
    app.button(key="build_demo").click().run()
    assert not app.exception
    text = " ".join(m.value for m in app.markdown)
    assert text.count("ready") == 4
    assert (tmp_path / "home" / "models" / "demo" / "sd15" / "model_index.json").exists()


def test_home_warns_when_served_publicly(app: AppTest, monkeypatch: pytest.MonkeyPatch) -> None:
    """The warning reads the address Streamlit serves on, not STUDIO_HOST (issue 16, item 7)."""
    from streamlit import config

    monkeypatch.setenv("STUDIO_HOST", "0.0.0.0")  # what `make run` would pass on, not the server
    app.run()
    assert not app.warning  # served on 127.0.0.1 (.streamlit/config.toml)
    served = config.get_option("server.address")
    config.set_option("server.address", "0.0.0.0")
    try:
        app.run()
    finally:
        config.set_option("server.address", served)
    assert any("0.0.0.0" in w.value for w in app.warning)


def test_settings_default_to_loopback_and_absolute_sqlite(monkeypatch, tmp_path) -> None:
    from trainer.settings import load_settings

    monkeypatch.delenv("STUDIO_HOST", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("STUDIO_HOME", raising=False)
    settings = load_settings()
    assert settings.host == "127.0.0.1"
    assert settings.home == tmp_path / "studio_home"
    assert settings.tracking_uri == f"sqlite:///{tmp_path / 'studio_home' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert load_settings().tracking_uri == "http://127.0.0.1:5000"
    assert not load_settings().uses_local_store


def test_the_router_makes_the_studio_fail_fast_on_a_down_tracking_server(
    app: AppTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    from trainer.settings import STUDIO_HTTP_DEFAULTS

    for key in [*STUDIO_HTTP_DEFAULTS, "STUDIO_SET_MLFLOW_HTTP"]:
        monkeypatch.delenv(key, raising=False)
    app.run()
    assert {k: os.environ.get(k) for k in STUDIO_HTTP_DEFAULTS} == STUDIO_HTTP_DEFAULTS
