"""Compare page speed: the page with 500 runs in the store renders in < 2 s (warm, AppTest, two
runs picked: table, diff, curves), and a diff of two runs takes < 200 ms.

    .venv/bin/python benchmarks/compare.py [--runs 500] [--repeat 3] [--home DIR]

Runs are made by the tracking module (``create_run`` + ``MlflowTracker``: params, config YAML,
hparams, a launch-time prediction and a user tag, 50 loss/LR/s-per-step points each), like the
studio's launcher and the trainer make them; their speeds calibrate the page's predictions. ``--home`` keeps the store
between invocations (creating 500 runs takes a minute or two). Exit status 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PAGE_S = 2.0
DIFF_S = 0.2


def fill(home: Path, count: int) -> None:
    from trainer import tracking
    from trainer.config import TrainingConfig
    from trainer.settings import load_settings

    settings = load_settings(home=home, tracking_uri_override=None)
    have = len(tracking.list_all_runs(settings.tracking_uri))
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
        predicted = {tracking.TAG_PREDICTED: "0.5", tracking.TAG_PREDICTED_TOTAL: "30"}
        run_id = tracking.create_run(settings, cfg, {**predicted, "team": "ab"[i % 2]})
        tracker = tracking.MlflowTracker(settings.tracking_uri, background=False)
        tracker.start(cfg, run_id=run_id)
        for step in range(50):
            loss = 1 / (1 + step) + 0.001 * i
            values = {"loss": loss, "loss_smoothed": loss, "lr": cfg.train.lr}
            tracker.log_metrics({**values, "s_per_step": 0.4 + 0.001 * i}, step)
        tracker.end("FINISHED")
        if i % 50 == 0:
            print(f"  {i}/{count} runs", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--home", help="studio home to keep the store in (default: a temp dir)")
    args = parser.parse_args()
    home = Path(args.home or tempfile.mkdtemp(prefix="compare-bench-")).resolve()
    home.mkdir(parents=True, exist_ok=True)
    os.environ["STUDIO_HOME"] = str(home)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    started = time.perf_counter()
    fill(home, args.runs)
    print(f"store: {home} ({args.runs} runs, filled in {time.perf_counter() - started:.0f} s)")

    from streamlit.testing.v1 import AppTest

    from trainer import tracking
    from trainer.settings import load_settings
    from ui.compare import diff_rows

    records = tracking.list_all_runs(load_settings().tracking_uri)
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
