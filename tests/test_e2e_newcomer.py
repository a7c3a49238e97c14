"""End-to-end: a newcomer's first hour on the defaults (issue 15), in Debian's Chromium.

Home → Preflight (defaults accepted) → the wizard by Next through all 12 steps → Review → Launch
→ the finished run → only the learning rate changed, typed as a user types it → Launch → Compare:
two run labels, both learning rates in the diff, two loss curves, samples labelled per run. Every
"Open in MLflow" link on Monitor and Compare answers and shows its run, and no icon or label
renders as an empty box (this machine has no emoji font). Bad input on that path:
``test_e2e_bad_input.py``.

The figures a newcomer would feel (clicks and seconds to a first run and to a variant, page
switches) are printed and written to ``test-artifacts/e2e/newcomer_measures.json``.
"""

from __future__ import annotations

import json
import re
import statistics
import time
import urllib.request
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from playwright.sync_api import expect

pytest.register_assert_rewrite("e2e_support")
pytest_plugins = ["e2e_support"]  # the fixtures: chromium_browser, studio_server, studio_page

from e2e_support import (  # noqa: E402
    ARTIFACTS,
    Studio,
    choose,
    detector_sees_empty_boxes,
    icon_problems,
    main_area,
    measured_speed,
    report,
    scaled,
    scaled_ms,
    shot,
    wait_idle,
)
from test_e2e import PAGES, header_status, trainer_log, wait_for, wizard_heading  # noqa: E402

from trainer.files import write_json  # noqa: E402
from trainer.tracking.records import get_run_record  # noqa: E402

# A default demo run took ~1 min on a quiet 2-core machine, 5-7 min on a loaded one; the waits
# are for a quiet machine and stretched by scaled(). pytest-timeout's limit is stretched alike.
pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1200)]
RUN_FINISH_S = 300.0
LAUNCH_S = 90.0
MLFLOW_UI_S = 90.0
MEASURES = ARTIFACTS / "newcomer_measures.json"
SIDEBAR = '[data-testid="stSidebar"]'
H1 = {  # each sidebar page's title, to know when it has rendered
    "Home": "LoRA Studio",
    "Preflight": "Preflight",
    "Wizard": "Wizard",
    "Review & launch": "Review & launch",
    "Monitor": "Monitor",
    "Compare": "Compare runs",
    "Presets": "Presets",
    "Datasets": "Datasets",
    "LoRA utilities": "LoRA utilities",
}


# ------------------------------------------------------------------------------------ the tally
@dataclass
class Tally:
    """What a user does on one stretch of the path: clicks, fields typed in, seconds."""

    clicks: int = 0
    typed: int = 0
    started: float = field(default_factory=time.monotonic)

    def click(self, locator) -> None:
        self.clicks += 1
        locator.click()

    def type_into(self, box, text: str) -> None:
        """Select what the box holds, type ``text``, press Enter: one field typed."""
        self.typed += 1
        box.fill(text)
        box.press("Enter")

    def figures(self) -> dict[str, float]:
        took = round(time.monotonic() - self.started, 1)
        return {"clicks": self.clicks, "fields_typed": self.typed, "seconds": took}


def sidebar_link(page, title: str):
    return page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name=title).first


# ------------------------------------------------------------------------------------ MLflow
def http_get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=scaled(30)) as reply:
        return reply.status, reply.read()


def mlflow_run(base: str, run_id: str) -> dict:
    status, body = http_get(f"{base}/api/2.0/mlflow/runs/get?run_id={run_id}")
    assert status == 200, (status, body[:300])
    return json.loads(body)["run"]["info"]


def mlflow_links(page, scope) -> dict[str, str]:
    """Click "Open in MLflow UI" when its links are not there yet; {link text: href}."""
    links = scope.locator('a[href*="/#/"]')
    if not links.count():
        scope.get_by_role("button", name="Open in MLflow UI").click()
        wait_idle(page, timeout_ms=scaled_ms(MLFLOW_UI_S * 1000))
    errors = scope.get_by_text(re.compile(r"Could not start the MLflow UI"))
    assert not errors.count(), errors.all_inner_texts()
    links.first.wait_for(timeout=scaled_ms(MLFLOW_UI_S * 1000))
    # The text of a link button starts with its icon's ligature name ("open_in_new").
    return {
        a.inner_text().replace("open_in_new", "").strip(): a.get_attribute("href") or ""
        for a in links.all()
    }


def check_run_link(page, href: str, run_id: str, name: str, picture: str) -> None:
    """The link answers 200, is MLflow's model-training view of this run (its REST API says the
    run of that id has that name, in that experiment), and the page in Chromium shows the name."""
    assert "workflowType=machine_learning" in href, href
    base = href.split("/#/", 1)[0]
    status, _ = http_get(href)  # the fragment stays in the browser: this is the UI's page
    assert status == 200, (href, status)
    info = mlflow_run(base, run_id)
    assert info["run_name"] == name, (info, name)
    assert f"/#/experiments/{info['experiment_id']}/runs/{run_id}?" in href, (href, info)
    browse(page, href, [name], picture)


def check_compare_link(page, href: str, runs: dict[str, str], picture: str) -> None:
    """The comparison link names exactly these runs (id → name) and shows both names."""
    assert "workflowType=machine_learning" in href, href
    base, _, fragment = href.partition("/#/")
    status, _ = http_get(href)
    assert status == 200, (href, status)
    query = parse_qs(urlsplit(fragment).query)
    assert json.loads(unquote(query["runs"][0])) == list(runs), href
    experiments = {mlflow_run(base, rid)["experiment_id"] for rid in runs}
    assert set(json.loads(unquote(query["experiments"][0]))) == experiments, href
    for run_id, name in runs.items():
        assert mlflow_run(base, run_id)["run_name"] == name
    browse(page, href, list(runs.values()), picture)


def browse(page, href: str, names: list[str], picture: str) -> None:
    """Open ``href`` in a new tab (as the link does) and wait until each name is shown."""
    tab = page.context.new_page()
    try:
        tab.goto(href, wait_until="domcontentloaded")
        for name in names:
            expect(tab.get_by_text(name, exact=True).first).to_be_visible(timeout=scaled_ms(60_000))
        shot(tab, picture)
    finally:
        tab.close()


# ----------------------------------------------------------------------------------- the monitor
@dataclass
class Watch:
    """What the monitor showed while a run went on: its status lines and Step metrics."""

    statuses: list[str] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)

    def look(self, page) -> None:
        main = main_area(page)
        status = header_status(page)
        metric = main.locator('[data-testid="stMetric"]', has_text="Step").first
        step = metric.inner_text().split("\n")[-1] if metric.count() else ""
        if status and (not self.statuses or self.statuses[-1] != status):
            self.statuses.append(status)
        if step and (not self.steps or self.steps[-1] != step):
            self.steps.append(step)


def wait_until_finished(page, studio: Studio, run_id: str, steps: int, watch: Watch) -> float:
    """Seconds from now until the monitor shows the run finished (trainer gone, no Stop), then
    that the finished state is clean; ``watch`` notes what the monitor showed meanwhile."""
    main, start = main_area(page), time.monotonic()

    def finished() -> bool:
        watch.look(page)
        return (
            "finished" in header_status(page)
            and main.get_by_text("Your LoRA").count() > 0
            and not main.get_by_role("button", name=re.compile("Stop$")).count()
        )

    try:
        wait_for(finished, scaled(RUN_FINISH_S), "the run to finish", page, studio)
    except AssertionError as err:
        raise AssertionError(f"{err}\ntrainer log:\n{trainer_log(studio, run_id)}") from None
    took = time.monotonic() - start
    wait_idle(page)
    # The finished state is clean: no Stop anywhere, no 'running' label, the whole run counted.
    status = header_status(page)
    assert "running" not in status and re.search(r"Phase:\W*(\w+\W+)?Finished", status), status
    sidebar = page.locator(SIDEBAR)
    wait_for(
        lambda: sidebar.get_by_text("No run is training now.").count() > 0,
        scaled(15),
        "the sidebar to say that no run is training",
        page,
    )
    wait_for(  # the sidebar's last tick may show its Stop for a moment: it must go
        lambda: not page.get_by_role("button", name=re.compile("Stop$")).count(),
        scaled(10),
        "every Stop button to go",
        page,
    )
    assert watch.steps and watch.steps[-1].replace(" ", "") == f"{steps}/{steps}", watch.steps
    picker = main.get_by_role("combobox", name="Run")
    wait_for(  # the run picker's label follows the status too
        lambda: " · finished · " in picker.input_value(),
        scaled(10),
        "the run picker to say finished",
        page,
    )
    parts = ("Your LoRA", "Trainer log (last 40 lines)", "Reuse this run")

    def counted() -> dict[str, int]:
        return {part: main.get_by_text(part, exact=True).count() for part in parts}

    def listed() -> list[str]:  # the LoRA files' paths and download names, as shown
        text = main.inner_text()
        files = text[text.index("Your LoRA") :].split("In MLflow")[0] if "Your LoRA" in text else ""
        return re.findall(r"\S+\.safetensors", files)

    def clean() -> bool:
        files = listed()
        return set(counted().values()) == {1} and bool(files) and len(files) == len(set(files))

    try:  # the finished monitor once, with nothing left over from its live refreshes
        wait_for(clean, scaled(10), "one of each part, each LoRA file once", page)
    except AssertionError as err:
        shot(page, f"newcomer-bug-monitor-leftovers-{run_id[:8]}")
        raise AssertionError(f"{err}\nparts shown: {counted()}; files: {listed()}") from None
    assert not [s for s in watch.steps if "?" in s], f"a step count without total: {watch.steps}"
    return took


def launch_ready(page):
    """The review page's Launch button, enabled: no error locks it."""
    main = main_area(page)
    main.get_by_role("heading", name="Validation").wait_for()
    locked = main.get_by_text(re.compile(r"Launch is locked"))
    assert not locked.count(), main.locator(".st-key-rv_launch_top").inner_text()
    launch = main.get_by_role("button", name="Launch training")
    expect(launch).to_be_enabled()
    return launch


def launched_run(page, studio: Studio, known: set[str]):
    """After Launch: the monitor is open on the new run; its record."""
    from trainer.tracking.records import list_runs

    page.wait_for_url(re.compile(r"/monitor"), timeout=scaled_ms(LAUNCH_S * 1000))
    wait_idle(page, timeout_ms=scaled_ms(LAUNCH_S * 1000))
    runs = [r for r in list_runs(f"sqlite:///{studio.home / 'mlflow.db'}") if r.run_id not in known]
    assert len(runs) == 1, runs
    return runs[0]


# ------------------------------------------------------------------------------- page switches
RENDERED_JS = """
(title) => {
  const app = document.querySelector('[data-testid="stApp"]');
  const h1 = document.querySelector('[data-testid="stMain"] h1');
  return !!app && app.getAttribute('data-test-script-state') === 'notRunning'
    && !!h1 && h1.innerText.trim().startsWith(title);
}
"""


def page_switch_seconds(page, title: str) -> float:
    """From the click on the sidebar link to the new page rendered (its title shown, the script
    done), as a user sees it."""
    link = sidebar_link(page, title)
    start = time.perf_counter()
    link.click()
    page.wait_for_function(RENDERED_JS, arg=H1[title], polling=50)
    took = time.perf_counter() - start
    wait_idle(page)
    return took


# ------------------------------------------------------------------------------------ compare
def pick_runs(page, tally: Tally, names: list[str]) -> list[str]:
    """Pick the runs of ``names`` the compare page has not picked already (it may pick the latest
    ones on a first visit); the names picked in the end, in order (the first is the baseline)."""
    main = main_area(page)
    picker = main.locator('[data-testid="stMultiSelect"]').filter(has_text="Runs to compare")
    chips = picker.locator("[data-tag]")  # one per picked run, its label as aria-label

    def picked() -> list[str]:
        return [(c.get_attribute("aria-label") or "").split(" · ")[0] for c in chips.all()]

    for name in names:
        if name in picked():
            continue
        tally.click(picker.locator("input"))
        tally.click(page.get_by_role("option", name=re.compile(rf"^{re.escape(name)} · ")).first)
        page.keyboard.press("Escape")
        wait_idle(page)
    return picked()


def diff_rows(page) -> list[list[str]]:
    """The config diff's rows (setting, one value per run, what it does) and its header."""
    tables = main_area(page).locator('[data-testid="stTable"]')
    rows = []
    for table in tables.all():
        for row in table.locator("tr").all():
            cells = [c.strip() for c in row.locator("th, td").all_inner_texts()]
            rows.append([c for c in cells if c])
    return rows


def chart_legend(chart, title: str) -> list[str]:
    """The values of a Vega-Lite chart's legend, from the SVG's accessible description."""
    pattern = re.compile(rf"^Symbol legend titled '{title}' .* with \d+ values: (.*)$")
    for label in chart.locator("[aria-label]").all():
        found = pattern.match(label.get_attribute("aria-label") or "")
        if found:
            return [v.strip() for v in found.group(1).split(",")]
    return []


def traced_runs(chart) -> set[str]:
    """The runs of the chart's line marks ("step: 1; loss: …; run: my_lora; metric: loss")."""
    labels = [a.get_attribute("aria-label") or "" for a in chart.locator("[aria-label]").all()]
    return {m.group(1) for a in labels if (m := re.search(r"; run: ([^;]+);", a))}


def write_measures(measures: dict) -> None:
    MEASURES.parent.mkdir(parents=True, exist_ok=True)
    write_json(MEASURES, measures)
    report(f"newcomer measures ({MEASURES.name}): {json.dumps(measures)}")


# ------------------------------------------------------------------------------------ the path
def test_a_newcomer_trains_and_compares_two_runs_on_the_defaults(
    studio_page, studio_server: Studio
) -> None:
    measures: dict = {}
    try:  # the figures are written even when the path breaks half-way
        walk_the_path(studio_page, studio_server, measures)
    finally:
        speed = measured_speed()  # the slowest measurement of the session, the path's included
        measures["speed"] = {"factor": round(speed.factor, 2), "workload_s": speed.measured_s}
        write_measures(measures)


def walk_the_path(page, studio: Studio, measures: dict) -> None:
    main = main_area(page)
    journey_start = time.monotonic()
    problems: list[str] = []  # empty boxes and unrendered icons, page by page

    # ---- Home: the demo is ready (the session's demo, linked in); start here
    main.get_by_role("heading", name="LoRA Studio", level=1).wait_for()
    home_text = main.inner_text()
    for name in ("sd15", "sdxl", "flux", "dataset"):
        assert re.search(rf"{name}:\W*(\w+\W+)?ready", home_text), home_text
    assert not main.get_by_role("button", name="Build demo models and dataset").count()
    shot(page, "newcomer-01-home")
    assert detector_sees_empty_boxes(page)
    problems += icon_problems(page, "Home")
    first = Tally()
    first.click(main.get_by_role("button", name=re.compile(r"^Preflight")))
    page.wait_for_url("**/preflight")
    wait_idle(page)

    # ---- Preflight: the defaults, as they are (the tiny demo model on SD1.5)
    expect(main.get_by_role("radio", name="SD1.5: light, 512 px, 6+ GB")).to_be_checked()
    expect(main.get_by_role("switch", name=re.compile("tiny demo model"))).to_be_checked()
    problems += icon_problems(page, "Preflight")
    first.click(main.get_by_role("button", name="Confirm and fill the wizard"))
    wait_idle(page)
    main.get_by_text(re.compile(r"settings filled with recommendations for")).wait_for()
    shot(page, "newcomer-02-preflight-confirmed")
    first.click(main.get_by_role("link", name="Open the wizard"))
    page.wait_for_url("**/wizard")
    wait_idle(page)

    # ---- the wizard: Next through every step, nothing changed; the defaults are noted
    seen: list[str] = []
    defaults: dict[str, str] = {}
    for number in range(1, 13):
        heading = wizard_heading(page)
        seen.append(heading)
        expect(main.get_by_text(f"Step {number} of 12", exact=True)).to_be_visible()
        broken = main.get_by_text(re.compile(r"could not show|Not accepted"))
        assert not broken.count(), f"{heading}: {broken.all_inner_texts()}"
        if heading == "Model":
            assert main.get_by_role("textbox", name="Base model").input_value() == "demo:sd15"
        elif heading == "Dataset":
            folder = main.get_by_role("textbox", name="Dataset folder").input_value()
            assert folder == "demo:dataset", folder
        elif heading == "Optimizer & learning rate":
            defaults["lr"] = main.get_by_role("textbox", name="Learning rate").input_value()
        elif heading == "Training core":
            defaults["steps"] = main.get_by_role("textbox", name="Training steps").input_value()
        shot(page, f"newcomer-03-wizard-{number:02d}")
        if number == 1:
            problems += icon_problems(page, "Wizard")
        if number < 12:
            first.click(main.get_by_role("button", name=re.compile("→$")))
            wait_idle(page)
    assert len(set(seen)) == 12, seen
    lr_1, steps = float(defaults["lr"]), int(defaults["steps"])
    lr_2 = lr_1 / 2  # the variant's
    first.click(main.get_by_role("button", name="Review and launch →"))  # the last step's action
    page.wait_for_url("**/review")
    wait_idle(page)

    # ---- Review: nothing to fix on the defaults (a warning, e.g. of a busy CPU, may show); Launch
    launch = launch_ready(page)
    shot(page, "newcomer-04-review")
    problems += icon_problems(page, "Review & launch")
    first.click(launch)
    run_1 = launched_run(page, studio, set())
    measures["home_to_first_launch"] = first.figures()
    report(f"Home → first run launched (defaults): {measures['home_to_first_launch']}")

    # ---- Monitor: the run finishes; its MLflow link works
    measures["defaults"] = {"train.steps": steps, "train.lr": lr_1, "variant train.lr": lr_2}
    watch = Watch()
    run_1_s = wait_until_finished(page, studio, run_1.run_id, steps, watch)
    measures["first_run_launch_to_finished_s"] = round(run_1_s, 1)
    measures["monitor_status_lines_run_1"] = watch.statuses
    shot(page, "newcomer-05-monitor-finished")
    problems += icon_problems(page, "Monitor (finished)")
    expect(main.get_by_role("heading", name=run_1.name, level=3)).to_be_visible()
    started = time.monotonic()
    links = mlflow_links(page, main)
    measures["mlflow_ui_first_open_s"] = round(time.monotonic() - started, 1)
    assert list(links) == [run_1.name], links
    check_run_link(page, links[run_1.name], run_1.run_id, run_1.name, "newcomer-06-mlflow-run-1")

    # ---- the variant: only the learning rate changed, typed in its text field
    variant = Tally()
    variant.click(sidebar_link(page, "Wizard"))
    page.wait_for_url("**/wizard")
    wait_idle(page)
    if wizard_heading(page) != "Optimizer & learning rate":
        variant.clicks += 2  # open the step picker, pick the step
        choose(page, "Wizard step", re.compile(r"^7 · "))
    assert wizard_heading(page) == "Optimizer & learning rate"
    lr_box = main.get_by_role("textbox", name="Learning rate", exact=True)
    variant.type_into(lr_box, f"{lr_2:g}")
    wait_idle(page)
    assert float(lr_box.input_value()) == lr_2, lr_box.input_value()
    assert not main.get_by_text("Not accepted").count()
    shot(page, "newcomer-07-wizard-learning-rate")
    variant.click(sidebar_link(page, "Review & launch"))
    page.wait_for_url("**/review")
    wait_idle(page)
    variant.click(launch_ready(page))
    run_2 = launched_run(page, studio, {run_1.run_id})
    measures["finished_to_variant_launch"] = variant.figures()
    report(f"finished run → variant launched: {measures['finished_to_variant_launch']}")
    assert run_2.name != run_1.name, "two runs of the defaults share a name"

    run_2_s = wait_until_finished(page, studio, run_2.run_id, steps, Watch())
    measures["variant_run_launch_to_finished_s"] = round(run_2_s, 1)
    uri = f"sqlite:///{studio.home / 'mlflow.db'}"
    for run, lr in ((run_1, lr_1), (run_2, lr_2)):  # what the trainer ran with
        assert float(get_run_record(uri, run.run_id).params["train.lr"]) == lr
    expect(main.get_by_role("heading", name=run_2.name, level=3)).to_be_visible()
    links = mlflow_links(page, main)  # the studio's MLflow UI, reused
    assert list(links) == [run_2.name], links
    check_run_link(page, links[run_2.name], run_2.run_id, run_2.name, "newcomer-08-mlflow-run-2")

    # ---- Compare both: two labels, both learning rates, two curves, samples per run
    to_compare = Tally()
    to_compare.click(sidebar_link(page, "Compare"))
    page.wait_for_url("**/compare")
    wait_idle(page)
    assert pick_runs(page, to_compare, [run_1.name, run_2.name]) == [run_1.name, run_2.name]
    measures["finished_variant_to_comparison"] = to_compare.figures()
    main.get_by_role("heading", name="What changed").wait_for()
    label_1, label_2 = run_1.name, run_2.name  # distinct names: the labels are the names
    expect(main.get_by_text(f"{label_1} → {label_2}", exact=True)).to_be_visible()
    rows = diff_rows(page)
    header = next(r for r in rows if r and r[0] == "setting")
    assert header[1:3] == [label_1, label_2], header
    lr_row = next((r for r in rows if r and r[0] == "train.lr"), None)
    assert lr_row and float(lr_row[1]) == lr_1 and float(lr_row[2]) == lr_2, rows
    changed = {r[0] for r in rows if r and r[0] != "setting"}
    assert changed <= {"train.lr", "name", "logging.run_name"}, changed  # nothing else moved
    charts = main.locator('[data-testid="stVegaLiteChart"]')
    loss_chart = charts.filter(has=page.locator('[aria-label*="Loss"]')).first
    loss_chart.locator("svg").first.wait_for()
    assert chart_legend(loss_chart, "run") == [label_1, label_2]
    assert traced_runs(loss_chart) == {label_1, label_2}
    for label in (label_1, label_2):  # the slider's two images and the side-by-side columns
        side = main.locator(f'img[alt="{label}"]')
        side.wait_for()
        page.wait_for_function(
            "img => img.complete && img.naturalWidth > 0", arg=side.element_handle()
        )
    expect(main.get_by_text(f"◀ {label_1} | {label_2} ▶", exact=False)).to_be_visible()
    text = main.inner_text()
    columns = text[text.index("\nSamples\n") : text.index("Slider comparison")].splitlines()
    assert label_1 in columns and label_2 in columns, columns  # each run's column is headed
    shot(page, "newcomer-09-compare")
    problems += icon_problems(page, "Compare")
    links = mlflow_links(page, main)
    assert set(links) == {label_1, label_2, "Compare in MLflow"}, links
    check_run_link(page, links[label_1], run_1.run_id, run_1.name, "newcomer-10-mlflow-cmp-1")
    check_run_link(page, links[label_2], run_2.run_id, run_2.name, "newcomer-11-mlflow-cmp-2")
    check_compare_link(
        page,
        links["Compare in MLflow"],
        {run_1.run_id: run_1.name, run_2.run_id: run_2.name},
        "newcomer-12-mlflow-compare",
    )

    # ---- page switches in Chromium, every sidebar page (and its glyphs)
    switches: dict[str, float] = {}
    for title in (*PAGES[1:], "Home"):  # from Compare: every page once, the last one Home
        switches[title] = round(page_switch_seconds(page, title), 2)
        if title in ("Presets", "Datasets", "LoRA utilities"):
            problems += icon_problems(page, title)
    measures["page_switch_s"] = {
        "median": round(statistics.median(switches.values()), 2),
        **switches,
    }
    report(f"page switches in Chromium: {measures['page_switch_s']}")
    measures["journey_total_s"] = round(time.monotonic() - journey_start, 1)
    assert not problems, "\n".join(problems)
