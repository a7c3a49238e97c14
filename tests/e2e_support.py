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
- ``report(line)``: a figure for the log, printed and repeated in the run's summary.
- ``icon_problems(page, where)``: characters drawn as empty boxes (no font has them: emoji on a
  machine without an emoji font), Material icons whose font did not load, the Deploy button.
- ``speed_factor()``, ``scaled(seconds)``: how much slower this machine runs now than a quiet one
  (a small fixed CPU workload timed when first needed and again every 30 s; the slowest time of
  the session counts; clamped to 1..6), and a wait stretched by it. Every fixed wait for training
  or a launch goes through ``scaled``; so do the default page timeout and pytest-timeout's limit
  of e2e tests (at collection). The factor is printed at the end of the run and in timeouts;
  under pytest-xdist each worker measures its own, under the load of all the workers.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
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


# ------------------------------------------------------------------------- the machine's speed
# The median of SPEED_ROUNDS timings of ``_speed_workload`` on a quiet 2-core machine (load
# average under 1; 3 busy processes beside it made it ~5x slower). Waits are stretched by the
# ratio now / then, never shrunk (a fast machine keeps the margins the tests were written with).
SPEED_REFERENCE_S = 0.055
SPEED_ROUNDS = 5
SPEED_CLAMP = (1.0, 6.0)
SPEED_ENV = "STUDIO_E2E_SPEED_FACTOR"  # set to a number to skip the measurement


def _speed_workload() -> float:
    """Seconds for a fixed mix of small torch ops and Python, on one thread: what the tiny
    trainer, the Streamlit server and the test itself spend their time on."""
    import torch  # ~2 s when not imported yet: conftest has imported it already

    generator = torch.Generator().manual_seed(0)
    a = torch.randn(64, 64, generator=generator)
    w = torch.randn(64, 64, generator=generator)
    x = torch.randn(1, 4, 32, 32, generator=generator)
    conv = torch.nn.Conv2d(4, 16, 3, padding=1)
    start = time.perf_counter()
    with torch.no_grad():
        for _ in range(400):
            a = torch.tanh(a @ w)
            conv(x).relu().mean()
    sum(i * i for i in range(100_000))
    return time.perf_counter() - start


@dataclass(frozen=True)
class Speed:
    factor: float
    measured_s: float | None  # None when SPEED_ENV set the factor
    measurements: int = 1  # how many were taken this session (the slowest is used)

    def describe(self) -> str:
        if self.measured_s is None:
            return f"e2e speed factor {self.factor:.2f} (from ${SPEED_ENV})"
        return (
            f"e2e speed factor {self.factor:.2f} (workload {self.measured_s:.3f} s here at its "
            f"slowest of {self.measurements} measurement(s), {SPEED_REFERENCE_S:.3f} s on a quiet "
            f"machine; clamped to {SPEED_CLAMP[0]:g}..{SPEED_CLAMP[1]:g})"
        )


SPEED_REFRESH_S = 30.0  # the load changes during a session: measure again after this long
_speed_samples: list[float] = []  # workload seconds, one per measurement
_speed_measured_at = [float("-inf")]


def _time_workload() -> float:
    import torch  # the test process's threads, as conftest set them

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _speed_workload()  # warm-up: first calls pay for allocations and dispatch caches
        return statistics.median(_speed_workload() for _ in range(SPEED_ROUNDS))
    finally:
        torch.set_num_threads(threads)


def measured_speed() -> Speed:
    """The machine's speed, from the slowest measurement of this session: measured when first
    asked (about a second) and again when asked after ``SPEED_REFRESH_S`` (other work on a shared
    machine comes and goes: a stop/resume test timed out when the load rose after the start).
    ``$STUDIO_E2E_SPEED_FACTOR`` sets the factor instead."""
    low, high = SPEED_CLAMP
    forced = os.environ.get(SPEED_ENV)
    if forced:
        return Speed(min(max(float(forced), low), high), None, 0)
    if time.monotonic() - _speed_measured_at[0] > SPEED_REFRESH_S:
        _speed_samples.append(_time_workload())
        _speed_measured_at[0] = time.monotonic()
    slowest = max(_speed_samples)
    return Speed(min(max(slowest / SPEED_REFERENCE_S, low), high), slowest, len(_speed_samples))


def speed_factor() -> float:
    return measured_speed().factor


def scaled(seconds: float) -> float:
    """``seconds`` of a quiet machine, stretched by how slow this one is now (``speed_factor``)."""
    return seconds * speed_factor()


def scaled_ms(milliseconds: float) -> float:
    return scaled(milliseconds / 1000) * 1000


@pytest.hookimpl(trylast=True)  # after -m / -k deselection: unselected e2e tests cost nothing
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """pytest-timeout's limit of every e2e test stretched like its waits (its own marker's
    value, else ``--timeout`` / the ini's); 0 (no limit) stays 0."""
    e2e = [item for item in items if item.get_closest_marker("e2e")]
    if not e2e or not config.pluginmanager.hasplugin("timeout"):
        return
    default = float(config.getoption("timeout", None) or config.getini("timeout") or 0)
    for item in e2e:
        marker = item.get_closest_marker("timeout")
        limit = float(marker.args[0]) if marker and marker.args else default
        if limit > 0:
            item.add_marker(pytest.mark.timeout(round(scaled(limit))), append=False)


_reported: list[str] = []
WORKER_SUMMARY_KEY = "e2e_summary"  # the lines a pytest-xdist worker hands to the controller


def report(line: str) -> None:
    """A figure for the log: printed now (seen with ``-s``) and again in the run's summary."""
    print(line)
    _reported.append(line)


def summary_lines() -> list[str]:
    """The figures ``report`` collected and, when anything asked for it, the speed factor."""
    lines = list(_reported)
    if _speed_samples or os.environ.get(SPEED_ENV):  # when a test (or collection) asked for it
        lines.append(measured_speed().describe())
    return lines


def pytest_terminal_summary(terminalreporter) -> None:
    lines = summary_lines()
    if lines:
        terminalreporter.section("e2e figures")
        for line in lines:
            terminalreporter.write_line(line)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """A pytest-xdist worker prints no summary: hand the lines to the controller, which prints
    them (``tests/conftest.py``), each worker's speed factor measured under the run's load."""
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput[WORKER_SUMMARY_KEY] = summary_lines()


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


def _stop_mlflow_ui(home: Path) -> None:
    """The MLflow UI the studio started on demand has its own session: end it with the studio
    (its pid is in the home's state file; a pid that is no longer an mlflow process is left)."""
    from ui.mlflow_ui import STATE_FILE

    try:
        pid = int(json.loads((home / STATE_FILE).read_text(encoding="utf-8"))["pid"])
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError, KeyError, TypeError):
        return
    if b"mlflow" in command:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)


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
        start_timeout = scaled(START_TIMEOUT_S)
        deadline = time.monotonic() + start_timeout
        while not _healthy(url):
            if process.poll() is not None:
                raise AssertionError(
                    f"streamlit exited with {process.returncode}:\n{studio.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"streamlit not healthy after {start_timeout:.0f} s "
                    f"({measured_speed().describe()}):\n{studio.log_tail()}"
                )
            time.sleep(0.25)
        yield studio
    finally:
        stop_process_group(process)
        _stop_trainers(home)
        _stop_mlflow_ui(home)


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
    context.set_default_timeout(scaled_ms(RUN_TIMEOUT_MS))
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


def wait_idle(page, timeout_ms: float | None = None, settle_ms: int = 250) -> None:
    """Wait until the app is connected and no script run is in progress or requested.

    A run can start a moment after a click, so the app must look idle twice ``settle_ms`` apart.
    (A live fragment, e.g. the monitor's 2 s refresh, runs briefly; idle moments between its
    ticks count.)
    """
    timeout_ms = scaled_ms(RUN_TIMEOUT_MS) if timeout_ms is None else timeout_ms
    app = page.locator('[data-testid="stApp"]')
    app.wait_for(state="attached", timeout=timeout_ms)
    deadline = time.monotonic() + timeout_ms / 1000
    quiet = 0
    while quiet < 2:
        if time.monotonic() > deadline:
            raise AssertionError(
                f"the studio is still busy after {timeout_ms / 1000:.0f} s "
                f"(script state {script_state(page)!r}; {measured_speed().describe()})"
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


# ---------------------------------------------------------------------------- glyphs and icons
# Every non-ASCII character of the page's text drawn on a canvas in its element's font: one that
# comes out as the font's missing glyph (or as nothing) is an empty box for the user.
EMPTY_BOXES_JS = r"""
(scope) => {
  const canvas = document.createElement('canvas');
  canvas.width = 64; canvas.height = 64;
  const ctx = canvas.getContext('2d', {willReadFrequently: true});
  const draw = (text, font) => {
    ctx.clearRect(0, 0, 64, 64); ctx.font = font; ctx.fillStyle = '#000';
    ctx.textBaseline = 'middle'; ctx.fillText(text, 8, 32);
    return ctx.getImageData(0, 0, 64, 64).data.join(',');
  };
  const seen = new Map();
  for (const el of document.querySelectorAll(scope)) {
    if (el.closest('[data-testid="stIconMaterial"]')) continue;  // ligatures: checked apart
    const style = getComputedStyle(el);
    const font = `${style.fontWeight} 32px ${style.fontFamily}`;
    for (const ch of el.innerText || '') {
      if (ch.codePointAt(0) < 0x80 || /\s/u.test(ch)) continue;
      seen.set(ch + '|' + font, [ch, font, el.tagName]);
    }
  }
  const bad = new Set();
  for (const [ch, font, tag] of seen.values()) {
    const shown = draw(ch, font);
    if (shown === draw('\u{10FFFD}', font) || shown === draw('', font)) {
      bad.add(`${ch} (U+${ch.codePointAt(0).toString(16).toUpperCase()}) in <${tag}>`);
    }
  }
  return [...bad];
}
"""
TEXT_SCOPE = "h1, h2, h3, h4, h5, h6, button, a, label, p, li, span, [role=tab], [role=option]"
# A Material icon is a ligature: its name as text, drawn as one glyph when the icon font is in.
# Unrendered, "check_circle" shows as a word many times wider than the icon.
UNRENDERED_ICONS_JS = """
() => [...document.querySelectorAll('[data-testid="stIconMaterial"]')].flatMap(icon => {
  const width = icon.getBoundingClientRect().width;
  const size = parseFloat(getComputedStyle(icon).fontSize);
  const name = icon.innerText.trim();
  return name && width > 0 && width > 1.6 * size ? [`${name} (${width.toFixed(0)} px wide)`] : [];
})
"""


def detector_sees_empty_boxes(page) -> bool:
    """The glyph check finds a character no font here has (a private-use one), put in the page
    for a moment: on this machine an empty box is told from a drawn glyph."""
    page.evaluate(
        """() => { const p = document.createElement('p'); p.id = 'glyph-probe';
        p.textContent = 'probe \\uE000'; document.body.appendChild(p); }"""
    )
    try:
        return any("U+E000" in box for box in page.evaluate(EMPTY_BOXES_JS, "#glyph-probe"))
    finally:
        page.evaluate("() => document.getElementById('glyph-probe').remove()")


def icon_problems(page, where: str) -> list[str]:
    """Empty-box glyphs and unrendered Material icons on the page, and Streamlit's Deploy button
    (the toolbar is minimal: a local studio is not an app to publish)."""
    wait_idle(page)
    problems = [f"{where}: empty box for {c}" for c in page.evaluate(EMPTY_BOXES_JS, TEXT_SCOPE)]
    problems += [f"{where}: icon not drawn: {i}" for i in page.evaluate(UNRENDERED_ICONS_JS)]
    if page.locator('[data-testid="stAppDeployButton"]').count():
        problems.append(f"{where}: Streamlit's Deploy button is shown")
    return problems
