"""End-to-end helpers: a real studio server on a fresh home, Debian's Chromium, and page helpers.

Use from a test module (``tests/`` is on ``sys.path`` like ``ui_support``)::

    pytest.register_assert_rewrite("e2e_support")  # before the import: no "already imported"
    pytest_plugins = ["e2e_support"]  # registers the fixtures below
    from e2e_support import open_page, shot, wait_idle  # the helpers

- ``chromium_browser`` (session): Playwright's sync API driving ``/usr/bin/chromium`` headless.
  Named so it does not clash with pytest-playwright's ``browser``, which would download a browser.
- ``studio_server`` (function): ``python -m streamlit run streamlit_app.py`` on 127.0.0.1 and a free
  port, with an empty studio home whose demo models and dataset are symlinks into the session's
  ``demo_home`` (nothing is rebuilt). Yields a ``Studio`` (url, home, log). ``start_studio(home)``
  is the same as a context manager, for servers shared by several tests.
- ``studio_page`` (function): a new browser context and page on ``studio_server``'s url.
- ``wait_idle(page)``: wait until Streamlit has finished running the script.
- ``open_page(page, title)``: click the sidebar link of a page and wait for it to render.
- ``shot(page, name)``: a full-page screenshot in ``test-artifacts/e2e/<name>.png``.
- ``set_number(page, label, value)``, ``choose(page, label, option)``: fill a number input / pick
  a select box option by their labels, then wait for the rerun.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from jobs_support import stop_process_group

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts" / "e2e"
CHROMIUM = Path(os.environ.get("STUDIO_E2E_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
START_TIMEOUT_S = 90.0  # a loaded 2-core machine took 3-10 s for a first render; imports more
RUN_TIMEOUT_MS = 60_000  # one script run (a page render) at most
VIEWPORT = {"width": 1400, "height": 1000}
SHOT_MAX_HEIGHT = 8000


# ------------------------------------------------------------------------------------ the server
@dataclass
class Studio:
    url: str
    home: Path
    log: Path
    process: subprocess.Popen

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def link_demo(home: Path, demo_home: Path) -> None:
    """Make ``home`` see ``demo_home``'s built demo models and dataset (symlinks, no copies)."""
    from trainer.demo.tiny import _demo_target, _valid_demo_names, demo_is_built

    for what in _valid_demo_names():
        source = _demo_target(demo_home, what)
        if not demo_is_built(demo_home, what):
            continue
        target = _demo_target(home, what)
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            target.symlink_to(source, target_is_directory=True)


def studio_env(home: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STUDIO_", "STREAMLIT_"))}
    # The default store: sqlite:///<home>/mlflow.db, as a new user gets it (a local store).
    env.pop("MLFLOW_TRACKING_URI", None)
    env |= {
        "STUDIO_HOME": str(home),
        "STUDIO_PORT": str(port),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
    }
    return env


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _stop_trainers(home: Path) -> None:
    """Trainer subprocesses have their own session: end any still alive in this home."""
    from trainer.jobs.folder import job_alive
    from trainer.tracking.job_file import read_job

    for job_file in (home / "jobs").glob("*/job.json"):
        job = read_job(job_file.parent)
        if job is not None and job.pid > 0 and job_alive(job):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(job.pid, signal.SIGKILL)


@contextlib.contextmanager
def start_studio(
    home: Path, demo_home: Path | None = None, extra_env: dict[str, str] | None = None
) -> Iterator[Studio]:
    """Serve the studio on ``home`` until the block ends (the whole process group is ended).
    ``extra_env`` goes on top of the offline test environment (e.g. a fake Hub's endpoint)."""
    home.mkdir(parents=True, exist_ok=True)
    if demo_home is not None:
        link_demo(home, demo_home)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = home.parent / f"streamlit-{port}.log"
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        "streamlit_app.py",
        "--server.address",
        "127.0.0.1",
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--server.fileWatcherType",
        "none",
        "--server.runOnSave",
        "false",
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=studio_env(home, port) | (extra_env or {}),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    studio = Studio(url=url, home=home, log=log, process=process)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _healthy(url):
            if process.poll() is not None:
                raise AssertionError(
                    f"streamlit exited with {process.returncode}:\n{studio.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"streamlit not healthy after {START_TIMEOUT_S:.0f} s:\n{studio.log_tail()}"
                )
            time.sleep(0.25)
        yield studio
    finally:
        stop_process_group(process)
        _stop_trainers(home)


@pytest.fixture()
def studio_server(demo_home: Path, tmp_path: Path) -> Iterator[Studio]:
    """A studio server on a fresh, empty home (demo models linked in) for one test."""
    with start_studio(tmp_path / "studio_home", demo_home) as studio:
        yield studio


# ----------------------------------------------------------------------------------- the browser
@pytest.fixture(scope="session")
def chromium_browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: run `make browser`")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


def new_page(browser: object, url: str | None = None):
    """A page in a new context (fresh session), generous timeouts; opened at ``url`` if given."""
    context = browser.new_context(viewport=VIEWPORT, reduced_motion="reduce")  # type: ignore[attr-defined]
    context.set_default_timeout(RUN_TIMEOUT_MS)
    page = context.new_page()
    if url:
        page.goto(url, wait_until="domcontentloaded")
        wait_idle(page)
    return page


@pytest.fixture()
def studio_page(chromium_browser: object, studio_server: Studio) -> Iterator[object]:
    page = new_page(chromium_browser, studio_server.url)
    try:
        yield page
    finally:
        page.context.close()


# -------------------------------------------------------------------------------------- helpers
def script_state(page) -> str:
    """Streamlit's script state on the app root: initial, running, notRunning, rerunRequested..."""
    return page.locator('[data-testid="stApp"]').get_attribute("data-test-script-state") or ""


def wait_idle(page, timeout_ms: float = RUN_TIMEOUT_MS, settle_ms: int = 250) -> None:
    """Wait until the app is connected and no script run is in progress or requested.

    A run can start a moment after a click, so the app must look idle twice ``settle_ms`` apart.
    (A live fragment, e.g. the monitor's 2 s refresh, runs briefly; idle moments between its
    ticks count.)
    """
    app = page.locator('[data-testid="stApp"]')
    app.wait_for(state="attached", timeout=timeout_ms)
    deadline = time.monotonic() + timeout_ms / 1000
    quiet = 0
    while quiet < 2:
        if time.monotonic() > deadline:
            raise AssertionError(
                f"the studio is still busy after {timeout_ms / 1000:.0f} s "
                f"(script state {script_state(page)!r})"
            )
        page.wait_for_timeout(settle_ms)
        idle = script_state(page) == "notRunning" and (
            app.get_attribute("data-test-connection-state") == "CONNECTED"
        )
        quiet = quiet + 1 if idle else 0


def open_page(page, title: str) -> None:
    """Click the page's link in the sidebar navigation and wait for the new page to render."""
    link = page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name=title).first
    href = link.get_attribute("href") or ""
    link.click()
    if href:
        page.wait_for_url(href)
    wait_idle(page)


def shot(page, name: str) -> Path:
    """Save a full-page screenshot as ``test-artifacts/e2e/<name>.png``."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    # Streamlit scrolls inside its main container, not the document: grow the viewport to the
    # content's height for the picture, then put it back.
    size = page.viewport_size or VIEWPORT
    height = page.evaluate(
        """() => Math.max(...['stMain', 'stSidebarContent'].map(id => {
            const el = document.querySelector(`[data-testid="${id}"]`);
            return el ? el.scrollHeight : 0;
        }))"""
    )
    tall = min(max(int(height or 0), size["height"]), SHOT_MAX_HEIGHT)
    if tall > size["height"]:
        page.set_viewport_size({"width": size["width"], "height": tall})
        page.wait_for_timeout(300)
    try:
        page.screenshot(path=str(path), full_page=True)
    finally:
        if tall > size["height"]:
            page.set_viewport_size(size)
    return path


def clear_artifacts() -> None:
    shutil.rmtree(ARTIFACTS, ignore_errors=True)


def main_area(page):
    return page.locator('[data-testid="stMain"]')


def set_number(page, label: str, value: float, scope=None) -> None:
    """Type a number into the input labelled ``label``, commit it with Enter, wait for the rerun.
    The wizard's number fields are text boxes (``ui.number_text`` says why)."""
    box = (scope or main_area(page)).get_by_role("textbox", name=label, exact=True)
    box.fill(str(value))
    box.press("Enter")
    wait_idle(page)
    shown = box.input_value()
    assert float(shown) == float(value), f"{label}: shows {shown!r}, typed {value!r}"


def choose(page, label: str, option, scope=None) -> None:
    """Open the select box labelled ``label`` and click ``option`` (its text, or a pattern)."""
    box = (scope or main_area(page)).get_by_role("combobox", name=label, exact=True)
    box.click()
    options = page.get_by_role("option")
    try:
        options.first.wait_for(timeout=2_000)
    except Exception:  # a click on an already focused select box can leave it closed
        box.press("ArrowDown")
    exact = isinstance(option, str)
    page.get_by_role("option", name=option, exact=exact if exact else None).first.click()
    wait_idle(page)
