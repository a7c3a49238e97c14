"""Compare page speed: the page with 500 runs in the store renders in < 2 s (warm, AppTest, two
runs picked: table, diff, curves), and a diff of two runs takes < 200 ms.

    .venv/bin/python benchmarks/compare.py [--runs 500] [--repeat 3] [--home DIR] [--server]

Runs are made by the tracking module (``create_run`` + ``MlflowTracker``: params, config YAML,
hparams, a launch-time prediction and a user tag, 50 loss/LR/s-per-step points each), like the
studio's launcher and the trainer make them; their speeds calibrate the page's predictions. ``--home`` keeps the store
between invocations (creating 500 runs takes a minute or two). Exit status 1 when a target is missed.

``--server``: the same store served by ``mlflow server`` on 127.0.0.1 (what a team store is), so
every read goes through ``MlflowClient`` over HTTP: the first read of all runs against the
incremental refresh of ``RunCache`` (new / running / rated runs only), side by side, both
directly and as compare page renders (first render, re-render after the cache's 30 s, after a
rating, while the periodic full read runs in the background, after a restart from the snapshot).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PAGE_S = 2.0
DIFF_S = 0.2


def fill(home: Path, count: int) -> None:
    from trainer.config.schema import TrainingConfig
    from trainer.settings import load_settings
    from trainer.tracking.layout import TAG_PREDICTED, TAG_PREDICTED_TOTAL
    from trainer.tracking.mlflow_tracker import MlflowTracker
    from trainer.tracking.new_run import create_run
    from trainer.tracking.records import list_all_runs

    settings = load_settings(home=home, tracking_uri_override=None)
    have = len(list_all_runs(settings.tracking_uri))
    for i in range(have, count):
        arch = ("sd15", "sdxl", "flux")[i % 3]
        cfg = TrainingConfig.model_validate(
            {
                "name": f"bench{i:03d}",
                "intent": ("style", "character", "object")[i % 3],
                "model": {"arch": arch, "name_or_path": f"demo:{arch}"},
                "network": {"linear": 4 * (1 + i % 4)},
                "train": {"lr": 1e-4 * (1 + i % 5), "steps": 50},
                "logging": {"log_system_metrics": False},
            }
        )
        predicted = {TAG_PREDICTED: "0.5", TAG_PREDICTED_TOTAL: "30"}
        run_id = create_run(settings, cfg, {**predicted, "team": "ab"[i % 2]})
        tracker = MlflowTracker(settings.tracking_uri, background=False)
        tracker.start(cfg, run_id=run_id)
        for step in range(50):
            loss = 1 / (1 + step) + 0.001 * i
            values = {"loss": loss, "loss_smoothed": loss, "lr": cfg.train.lr}
            tracker.log_metrics({**values, "s_per_step": 0.4 + 0.001 * i}, step)
        tracker.end("FINISHED")
        if i % 50 == 0:
            print(f"  {i}/{count} runs", flush=True)


@contextlib.contextmanager
def mlflow_server(home: Path) -> Iterator[str]:
    """``mlflow server`` for ``<home>/mlflow.db`` on 127.0.0.1; yields its URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--backend-store-uri", f"sqlite:///{home / 'mlflow.db'}", "--workers", "1"]
    cmd += ["--artifacts-destination", str(home / "served-artifacts")]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    log = home / "mlflow-server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=home, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/health", timeout=2):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.3)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def timed(call) -> tuple[float, object]:
    started = time.perf_counter()
    result = call()
    return time.perf_counter() - started, result


def bench_server(home: Path, runs: int, repeat: int) -> int:
    """First read vs incremental refresh against ``mlflow server`` (see the module docstring)."""
    from streamlit.testing.v1 import AppTest

    from trainer.tracking.ratings import set_rating
    from trainer.tracking.records import list_all_runs
    from trainer.tracking.run_cache import RunCache

    with mlflow_server(home) as url:
        os.environ["MLFLOW_TRACKING_URI"] = url
        print(f"mlflow server {url} on {home / 'mlflow.db'}")
        full_s, records = timed(lambda: list_all_runs(url))
        assert len(records) == runs, len(records)
        cache = RunCache(url)
        first_s, _ = timed(cache.runs)
        first = cache.last
        incremental = []
        for _ in range(repeat):
            incremental.append(timed(cache.runs)[0])
        quiet = cache.last
        set_rating(url, records[3].run_id, 4)
        rated_s, after = timed(cache.runs)
        rated = cache.last
        assert {r.run_id: r for r in after}[records[3].run_id].rating == 4
        print(f"read all {runs} runs (list_all_runs, MlflowClient): {full_s:.2f} s")
        print(f"RunCache first read: {first_s:.2f} s ({first.queries} query, {first.fetched} runs)")
        print(
            f"RunCache refresh, nothing changed: {statistics.median(incremental) * 1000:.0f} ms"
            f" ({quiet.queries} queries, {quiet.fetched} runs)"
        )
        print(
            f"RunCache refresh after a rating: {rated_s * 1000:.0f} ms"
            f" ({rated.queries} queries, {rated.fetched} run)"
        )

        at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=180)
        at.run()
        page_first_s, _ = timed(lambda: at.switch_page("pages/compare.py").run())
        assert not at.exception, [e.value for e in at.exception]
        assert len(at.dataframe[0].value) == runs
        picked = [records[0].run_id, records[1].run_id]
        at.multiselect(key="cmp:picked").set_value(picked).run()
        warm, reread, after_rating = [], [], []
        for i in range(repeat):
            warm.append(timed(at.run)[0])
            at.session_state["cmp:version"] = 1000 + i  # the 30 s cache expired: refresh
            reread.append(timed(at.run)[0])
            set_rating(url, records[5 + i].run_id, 1 + i)
            at.session_state["cmp:version"] = 2000 + i  # what "Save rating and note" does
            after_rating.append(timed(at.run)[0])
            assert not at.exception, [e.value for e in at.exception]
        table = at.dataframe[0].value
        assert len(table) == runs
        from ui.compare_store import run_cache

        page_cache = run_cache(url)
        page_cache.full_every_s = 0  # the periodic full read is due: read in the background
        at.session_state["cmp:version"] = 3000
        due_s, _ = timed(at.run)
        page_cache.full_every_s = 3600
        page_cache.wait(120)
        background = page_cache.last_full
        assert background.mode == "full (background)", background
        page_s = max(statistics.median(x) for x in (warm, reread, after_rating))
        print(f"compare page, first render (reads all {runs} runs): {page_first_s:.2f} s")
        print(f"compare page, 2 picked, warm:                   {statistics.median(warm):.2f} s")
        print(f"compare page, store refreshed (incremental):    {statistics.median(reread):.2f} s")
        print(
            f"compare page, after a rating (1 run re-read):   "
            f"{statistics.median(after_rating):.2f} s (target < {PAGE_S} s)"
        )
        print(
            f"compare page, periodic full read due:         {due_s:.2f} s (the read itself:"
            f" {background.seconds:.2f} s in the background, {background.fetched} runs)"
        )
        from ui.compare_store import load_runs

        run_cache.clear()  # a restarted studio: only the snapshot on disk is left
        load_runs.clear()
        again = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=180)
        again.run()
        restart_s, _ = timed(lambda: again.switch_page("pages/compare.py").run())
        assert not again.exception and len(again.dataframe[0].value) == runs
        restarted = run_cache(url)
        mode = restarted.last.mode
        restarted.wait(120)
        print(f"compare page, restarted studio (snapshot):     {restart_s:.2f} s ({mode})")
        return 0 if max(page_s, due_s, restart_s) < PAGE_S else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--home", help="studio home to keep the store in (default: a temp dir)")
    parser.add_argument("--server", action="store_true", help="read through mlflow server")
    args = parser.parse_args()
    home = Path(args.home or tempfile.mkdtemp(prefix="compare-bench-")).resolve()
    home.mkdir(parents=True, exist_ok=True)
    os.environ["STUDIO_HOME"] = str(home)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    started = time.perf_counter()
    fill(home, args.runs)
    print(f"store: {home} ({args.runs} runs, filled in {time.perf_counter() - started:.0f} s)")
    if args.server:
        return bench_server(home, args.runs, args.repeat)

    from streamlit.testing.v1 import AppTest

    from trainer.settings import load_settings
    from trainer.tracking.records import list_all_runs
    from ui.compare import diff_rows

    records = list_all_runs(load_settings().tracking_uri)
    picked = [records[0].run_id, records[1].run_id]
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=120)
    at.run()
    at.switch_page("pages/compare.py").run()
    at.multiselect(key="cmp:picked").set_value(picked).run()  # warm: imports, caches
    assert not at.exception, [e.value for e in at.exception]
    assert len(at.dataframe[0].value) == args.runs
    page = []
    for _ in range(args.repeat):
        st0 = time.perf_counter()
        at.run()
        page.append(time.perf_counter() - st0)
    cold = []  # the runs cache expired: the store is read again
    for i in range(args.repeat):
        at.session_state["cmp:version"] = 1000 + i  # a new cache key: the store is read again
        st0 = time.perf_counter()
        at.run()
        cold.append(time.perf_counter() - st0)
    diffs = []
    for _ in range(args.repeat * 3):
        st0 = time.perf_counter()
        diff_rows(records[0], records[1])
        diffs.append(time.perf_counter() - st0)
    at.switch_page("pages/wizard.py").run()  # the advisor column reads the same runs
    assert any("Based on your past runs" in m.value for m in at.markdown)
    wizard = []
    for _ in range(args.repeat):
        st0 = time.perf_counter()
        at.run()
        wizard.append(time.perf_counter() - st0)
    assert any("Based on your past runs" in m.value for m in at.markdown)  # still the wizard
    wizard_s = statistics.median(wizard)
    page_s, cold_s, diff_s = statistics.median(page), statistics.median(cold), min(diffs)
    print(f"compare page, {args.runs} runs, 2 picked, warm: {page_s:.2f} s (target < {PAGE_S} s)")
    print(f"compare page, store re-read:             {cold_s:.2f} s (target < {PAGE_S} s)")
    print(
        f"diff of two runs: {diff_s * 1000:.0f} ms (median {statistics.median(diffs) * 1000:.0f})"
        f" (target < {DIFF_S * 1000:.0f} ms)"
    )
    print(f"wizard page with the history hint, {args.runs} runs: {wizard_s:.2f} s (target < 1 s)")
    return 0 if max(page_s, cold_s) < PAGE_S and diff_s < DIFF_S and wizard_s < 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
