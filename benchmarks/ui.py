"""Studio UI speed: cold start to healthy (< 3 s) and time to render each page, warm (< 1 s).

    .venv/bin/python benchmarks/ui.py [--repeat 5] [--no-server]

"Warm" is AppTest re-running a page in a process that has run it once (imports done, caches
filled), on an empty studio home; each wizard step is timed separately, since each renders
different widgets. The cold start is `streamlit run` from launch until /_stcore/health answers.
Exit status 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

COLD_START_S = 3.0
PAGE_S = 1.0
PAGES = ("pages/home.py", "pages/preflight.py", "pages/wizard.py", "pages/review.py")
EXTRA_PAGES = ("pages/monitor.py",)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cold_start(home: Path) -> float:
    port = _free_port()
    cmd = [sys.executable, "-m", "streamlit", "run", str(ROOT / "streamlit_app.py")]
    cmd += ["--server.headless", "true", "--server.port", str(port)]
    cmd += ["--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"]
    env = {**os.environ, "STUDIO_HOME": str(home)}
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while time.perf_counter() - start < 60:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1):
                    return time.perf_counter() - start
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("the studio did not become healthy within 60 s")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def page_times(repeat: int) -> dict[str, float]:
    from streamlit.testing.v1 import AppTest

    from trainer.config.fields import WIZARD_STEPS

    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=60)
    at.run()
    found: dict[str, float] = {}
    pages = [*PAGES, *(p for p in EXTRA_PAGES if (ROOT / p).exists())]
    for page in pages:
        at.switch_page(page).run()  # the cold run: imports, caches
        found[page] = _median(at, repeat)
        if page == "pages/wizard.py":
            at.toggle(key="wiz:expert").set_value(True).run()
            for step in WIZARD_STEPS:
                at.selectbox(key="wiz:step").set_value(step).run()
                found[f"  wizard step {step} (expert on)"] = _median(at, repeat)
    return found


def _median(at, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        at.run()
        times.append(time.perf_counter() - start)
        if at.exception:
            raise RuntimeError(at.exception[0].value)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-server", action="store_true", help="skip the cold start")
    args = parser.parse_args()
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["STUDIO_HOME"] = str(Path(tmp) / "home")
        if not args.no_server:
            seconds = cold_start(Path(tmp) / "home")
            ok &= seconds < COLD_START_S
            mark = "ok" if seconds < COLD_START_S else "SLOW"
            print(f"cold start to healthy: {seconds:.2f} s (target < {COLD_START_S} s) {mark}")
        for page, seconds in page_times(args.repeat).items():
            ok &= seconds < PAGE_S
            mark = "ok" if seconds < PAGE_S else "SLOW"
            print(f"{page:45s} {seconds * 1000:7.0f} ms (target < {PAGE_S * 1000:.0f} ms) {mark}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
