"""The router runs for every page, and the Streamlit internals its workaround relies on exist.

``ui/navigation.py`` explains the problem: with a ``pages/`` folder beside the main script,
Streamlit 1.67 starts each process in its old "pages directory" mode and runs the page a URL names
without the router. If a Streamlit upgrade changes what is checked here, the workaround must be
looked at again (and may be dropped if the old mode is gone).
"""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from streamlit.commands import navigation as st_navigation
from streamlit.runtime.pages_manager import PagesManager
from streamlit.runtime.scriptrunner import script_runner
from streamlit.testing.v1 import AppTest
from ui_support import keys

import ui.navigation
from ui.navigation import ROUTER

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted(p.name for p in (ROOT / "pages").glob("*.py"))


@pytest.fixture()
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("STUDIO_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return AppTest.from_file(str(ROUTER), default_timeout=60)


def test_a_pages_folder_still_starts_streamlit_in_the_old_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pages").mkdir()
    main = tmp_path / "app.py"
    main.write_text("")
    monkeypatch.setattr(PagesManager, "uses_pages_directory", None)
    PagesManager(str(main), setup_watcher=False)
    assert PagesManager.uses_pages_directory is True  # decided once, for the whole process
    source = inspect.getsource(script_runner.ScriptRunner)
    assert "PagesManager.uses_pages_directory" in source  # what picks the old mode per run
    switch_off = "PagesManager.uses_pages_directory = False"
    assert switch_off in inspect.getsource(st_navigation)  # as the workaround does


def test_without_the_workaround_a_page_runs_without_the_router(
    app: AppTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The problem itself (AppTest starts every run in the old mode): if this fails, Streamlit
    no longer needs the workaround."""
    monkeypatch.setattr(ui.navigation, "leave_legacy_pages_mode", lambda: None)
    app.run()
    app.switch_page("pages/wizard.py").run()
    assert not app.exception, [e.value for e in app.exception]
    assert [t.value for t in app.title] == ["Wizard"]
    assert "hardware_summary" not in keys(app)  # the router's sidebar is missing


@pytest.mark.parametrize("page", PAGES)
def test_every_page_runs_through_the_router(app: AppTest, page: str) -> None:
    assert "leave_legacy_pages_mode()" in (ROOT / "pages" / page).read_text()
    app.run()
    app.switch_page(f"pages/{page}").run()
    assert not app.exception, [e.value for e in app.exception]
    assert "hardware_summary" in keys(app)  # the router's sidebar
    assert len(app.title) == 1  # the page ran once


def test_importing_ui_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib
    import os

    import ui

    before = dict(os.environ)
    monkeypatch.setattr(PagesManager, "uses_pages_directory", True)
    importlib.reload(ui)
    assert dict(os.environ) == before
    assert PagesManager.uses_pages_directory is True
