"""End-to-end: a teammate's hostile run name fetches nothing in a viewer's browser (issue 16,
item 5), in Debian's Chromium.

Runs named and noted ``![x](http://127.0.0.1:PORT/beacon.png) [link](http://127.0.0.1:PORT/link)
**bold** www.evil.tld`` (one failed, with that note as its failure) are in the studio's store; a
local HTTP server on PORT counts every request. Monitor and Compare must send it none, draw no
image, link or bold text from the name, and show the name as typed. (Every markdown field in
AppTest: tests/test_security_text.py.)
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

pytest.register_assert_rewrite("e2e_support")
pytest_plugins = ["e2e_support"]  # the fixtures: chromium_browser

from e2e_support import main_area, new_page, open_page, shot, start_studio, wait_idle  # noqa: E402

from trainer.config.schema import TrainingConfig  # noqa: E402
from trainer.settings import load_settings  # noqa: E402
from trainer.tracking.mlflow_tracker import MlflowTracker  # noqa: E402
from trainer.tracking.new_run import create_run  # noqa: E402
from trainer.tracking.ratings import set_note  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
PIXEL = bytes.fromhex(  # a 1×1 PNG: what a real beacon answers
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
    "0000000d49444154789c63000100000500010d0a2db40000000049454e44ae426082"
)


class Beacon:
    """A local HTTP server that counts the requests it gets (any path, any method)."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        beacon = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                beacon.requests.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(PIXEL)))
                self.end_headers()
                self.wfile.write(PIXEL)

            do_HEAD = do_POST = do_GET

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def beacon() -> Iterator[Beacon]:
    server = Beacon()
    try:
        yield server
    finally:
        server.close()


def hostile_name(port: int) -> str:
    return (
        f"![x](http://127.0.0.1:{port}/beacon.png) [link](http://127.0.0.1:{port}/link) "
        "**bold** www.evil.tld"
    )


def store_runs(home: Path, name: str) -> dict[str, str]:
    """A finished plain run, a finished and a failed run named and noted ``name`` (the failed
    one newest: the Monitor opens on it; Compare picks the two latest finished)."""
    home.mkdir(parents=True, exist_ok=True)
    settings = load_settings(home=home, tracking_uri_override=None)
    runs = {}
    for key, run_name, status in (
        ("plain", "plain_run", "FINISHED"),
        ("finished", name, "FINISHED"),
        ("failed", name, "FAILED"),
    ):
        cfg = TrainingConfig.model_validate(
            {
                "train": {"lr": 1e-4 if key == "plain" else 3e-4, "steps": 2},
                "logging": {"log_system_metrics": False, "run_name": run_name},
            }
        )
        run_id = create_run(settings, cfg)
        tracker = MlflowTracker(settings.tracking_uri, background=False)
        tracker.start(cfg, run_id=run_id)
        tracker.log_metrics({"loss": 0.5, "lr": 1e-4}, 0)
        tracker.end(status)
        if run_name == name:
            set_note(settings.tracking_uri, run_id, name)
        runs[key] = run_id
    return runs


DRAWN = """(port) => {
    // where an element sits: its nearest ancestors' test ids (an error message names the spot)
    const where = (el) => {
        const ids = [];
        for (let node = el; node && ids.length < 6; node = node.parentElement) {
            const id = node.getAttribute && node.getAttribute('data-testid');
            if (id) ids.push(id);
        }
        return el.outerHTML.slice(0, 120) + ' in ' + ids.join(' < ');
    };
    const fromName = (url) =>
        // a heading's own anchor ("#x-http-127-0-0-1-...") leads nowhere else
        !url.startsWith('#') && (url.includes(':' + port) || url.includes('evil'));
    return {
        images: [...document.querySelectorAll('img')]
            .filter(e => fromName(e.getAttribute('src') || '')).map(where),
        links: [...document.querySelectorAll('a')]
            .filter(e => fromName(e.getAttribute('href') || '')).map(where),
        bold: [...document.querySelectorAll('strong, b, em')]
            .filter(e => e.textContent.trim() === 'bold').map(where),
    };
}"""


def drawn_from(page, port: int) -> dict[str, list[str]]:
    """Images, links and bold text the page drew from the name, each with where it is."""
    return page.evaluate(DRAWN, port)


def test_a_beacon_in_a_run_name_is_never_fetched(
    chromium_browser: object, tmp_path: Path, beacon: Beacon
) -> None:
    name = hostile_name(beacon.port)
    home = tmp_path / "studio_home"
    store_runs(home, name)
    with start_studio(home) as studio:
        page = new_page(chromium_browser, studio.url)
        try:
            open_page(page, "Monitor")
            main = main_area(page)
            main.get_by_text("What went wrong").first.wait_for()
            page.wait_for_timeout(1000)  # time for an image to be requested, were there one
            monitor = main.inner_text()
            assert monitor.count(name) >= 2, monitor  # the heading and the failure note
            assert drawn_from(page, beacon.port) == {"images": [], "links": [], "bold": []}
            shot(page, "security_monitor_beacon")
            open_page(page, "Compare")
            main.get_by_text("Rate, note, reuse").first.wait_for()
            wait_idle(page)
            page.wait_for_timeout(1000)
            compare = main.inner_text()
            assert compare.count(name) >= 2, compare  # the diff's heading, the adapters', the tab
            assert page.get_by_role("tab", name=name).count() == 1
            assert drawn_from(page, beacon.port) == {"images": [], "links": [], "bold": []}
            shot(page, "security_compare_beacon")
            assert beacon.requests == [], f"the browser fetched {beacon.requests}"
            # the control: this browser does reach the beacon when a page draws the image
            page.set_content(f'<img src="http://127.0.0.1:{beacon.port}/control.png">')
            page.wait_for_load_state("load")
            assert beacon.requests == ["/control.png"]
        finally:
            page.context.close()
