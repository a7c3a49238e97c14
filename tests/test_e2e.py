"""End-to-end: the real studio (a Streamlit server on a fresh home) driven in Debian's Chromium.

A new user's whole path (preflight, the 12 wizard steps, review, launch, the live monitor, the
LoRA), stopping and resuming a run, and accessibility checks on every page. Screenshots of each
page go to ``test-artifacts/e2e/``.
"""

from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import expect

pytest.register_assert_rewrite("e2e_support")
pytest_plugins = ["e2e_support"]  # the fixtures: chromium_browser, studio_server, studio_page

from e2e_support import (  # noqa: E402
    Studio,
    choose,
    main_area,
    measured_speed,
    new_page,
    open_page,
    scaled,
    scaled_ms,
    set_number,
    shot,
    wait_idle,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]  # each test takes 30-90 s here
# Long enough that Stop lands mid-run when the trainer is fast (0.03 s/step on a quiet core).
STOP_RUN_STEPS = 300
# The tiny run takes ~25 s on a quiet machine; waits go through scaled() (the machine's speed).
TRAIN_TIMEOUT_S = 150.0


def wizard_heading(page) -> str:
    return main_area(page).get_by_role("heading", level=2).first.inner_text().strip()


def header_status(page) -> str:
    """The monitor's 'Status: … · Phase: …' line, as text."""
    line = main_area(page).locator("p", has_text="Status:").first
    return line.inner_text() if line.count() else ""


def wait_for(predicate, timeout_s: float, what: str, page=None, studio: Studio | None = None):
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            extra = f"\nmonitor: {header_status(page)!r}" if page is not None else ""
            extra += f"\nserver log:\n{studio.log_tail()}" if studio is not None else ""
            raise AssertionError(
                f"timed out after {timeout_s:.0f} s waiting for {what} "
                f"({measured_speed().describe()}){extra}"
            )
        time.sleep(0.5)


def trainer_log(studio: Studio, run_id: str) -> str:
    path = studio.home / "jobs" / run_id / "train.log"
    return path.read_text(errors="replace")[-3000:] if path.exists() else "(no trainer log)"


def preflight(page) -> None:
    open_page(page, "Preflight")
    main = main_area(page)
    main.get_by_role("heading", name="Preflight", level=1).wait_for()
    shot(page, "02-preflight")
    for choice in ("Person: a real person's likeness", "Speed: fast iterations", "Intermediate"):
        main.get_by_text(choice, exact=True).click()
        wait_idle(page)
        expect(main.get_by_role("radio", name=choice)).to_be_checked()
    expect(main.get_by_role("radio", name="SD1.5: light, 512 px, 6+ GB")).to_be_checked()
    expect(main.get_by_role("switch", name=re.compile("tiny demo model"))).to_be_checked()
    main.get_by_role("button", name="Confirm and fill the wizard").click()
    wait_idle(page)
    done = main.get_by_text(re.compile(r"settings filled with recommendations for person on sd15"))
    done.wait_for()
    shot(page, "03-preflight-confirmed")


def test_a_new_user_trains_the_demo_lora_from_preflight_to_the_finished_monitor(
    studio_page, studio_server: Studio
) -> None:
    from trainer.tracking.records import list_runs, metric_history

    page, main = studio_page, main_area(studio_page)
    main.get_by_role("heading", name="LoRA Studio", level=1).wait_for()
    shot(page, "01-home")
    preflight(page)

    # ---- the wizard: every one of the 12 steps, by the Next button
    main.get_by_role("link", name="Open the wizard").click()
    page.wait_for_url("**/wizard")
    wait_idle(page)
    seen = []
    for number in range(1, 13):
        heading = wizard_heading(page)
        seen.append(heading)
        broken = main.get_by_text(re.compile(r"could not show"))
        assert not broken.count(), f"{heading}: {broken.all_inner_texts()}"
        expect(main.get_by_text(f"Step {number} of 12", exact=True)).to_be_visible()
        if heading == "Model":
            assert main.get_by_role("textbox", name="Base model").input_value() == "demo:sd15"
            expect(main.get_by_role("radio", name="Demo model (tiny, CPU)")).to_be_checked()
        elif heading == "Dataset":
            expect(
                main.get_by_role("switch", name="Use the generated demo dataset")
            ).to_be_checked()
            assert (
                main.get_by_role("textbox", name="Dataset folder").input_value() == "demo:dataset"
            )
            analysis = main.locator('[data-testid="stMetric"]', has_text="Images")
            assert analysis.first.inner_text().split()[-1] == "12"  # the demo's 12 images
        elif heading == "Resolution & augmentation":
            assert main.get_by_role("textbox", name="Resolution").input_value() == "64"
        elif heading == "Training core":
            set_number(page, "Training steps", 8)
        elif heading == "Sampling":  # the prompts table (2 recommended prompts) is shown
            expect(main.locator('[data-testid="stDataFrame"]').first).to_be_visible()
            set_number(page, "Sample every", 4)
            set_number(page, "Sample steps", 4)
        elif heading == "Save & logging":
            set_number(page, "Save every", 8)
            main.get_by_text(re.compile(r"^More settings \(\d+ advanced\)$")).click()
            set_number(page, "Log every", 1)
        shot(page, f"04-wizard-{number:02d}-{re.sub(r'[^a-z]+', '-', heading.lower())}")
        if number < 12:
            main.get_by_role("button", name=re.compile("→$")).click()
            wait_idle(page)
            assert wizard_heading(page) != heading, f"Next did not leave step {heading}"
    assert seen == [
        "Model",
        "Quantization",
        "Target network",
        "Dataset",
        "Resolution & augmentation",
        "Memory & batch",
        "Optimizer & learning rate",
        "Regularization",
        "Training core",
        "Sampling",
        "Save & logging",
        "Model-specific",
    ]
    summary = main.locator('[data-testid="stHorizontalBlock"]').first.inner_text()
    assert "64 px" in summary and "\n8\n" in f"\n{summary}\n", summary

    # ---- review: no problems, then launch
    main.get_by_role("button", name="Review and launch").click()
    page.wait_for_url("**/review")
    wait_idle(page)
    main.get_by_role("heading", name="Validation").wait_for()  # warnings may show (a busy CPU)
    assert not main.get_by_text(re.compile(r"Launch is locked")).count()
    launch = main.get_by_role("button", name="Launch training")
    expect(launch).to_be_enabled()
    shot(page, "05-review")
    launch.click()
    page.wait_for_url(re.compile(r"/monitor"), timeout=scaled_ms(90_000))
    wait_idle(page, timeout_ms=scaled_ms(90_000))
    runs = list_runs(f"sqlite:///{studio_server.home / 'mlflow.db'}")
    assert len(runs) == 1
    run_id = runs[0].run_id

    # ---- the monitor, live: a loss chart and a sample appear while the run goes on
    chart = main.locator('[data-testid="stVegaLiteChart"]').locator("canvas, svg")
    sample = main.locator('[data-testid="stImage"] img')

    def seen_live() -> bool:  # both drawn (visible, not just present), the monitor re-renders
        return bool(chart.count() and sample.count()) and (
            chart.first.is_visible() and sample.first.is_visible()
        )

    wait_for(seen_live, scaled(TRAIN_TIMEOUT_S), "the loss chart and a sample", page, studio_server)
    alt = sample.first.get_attribute("alt") or ""
    assert re.match(r"Step \d+: \S", alt), alt  # samples say what they show
    shot(page, "06-monitor-training")

    # ---- the run finishes; its LoRA is listed
    def finished() -> bool:  # and the trainer has exited (no Stop button any more)
        return (
            "finished" in header_status(page)
            and main.get_by_text("Your LoRA").count() > 0
            and main.get_by_role("button", name=re.compile("Stop$")).count() == 0
        )

    try:
        wait_for(finished, scaled(TRAIN_TIMEOUT_S), "the run to finish", page, studio_server)
    except AssertionError as err:
        raise AssertionError(f"{err}\ntrainer log:\n{trainer_log(studio_server, run_id)}") from None
    wait_idle(page)
    status = header_status(page)
    # The status icon is a Material ligature: its text is the icon's name ("check_circle").
    assert re.search(r"Status:\W*(\w+\W+)?finished", status) and "Phase:" in status, status
    step = main.locator('[data-testid="stMetric"]', has_text="Step").first.inner_text()
    assert step.split("\n")[-1].replace(" ", "") == "8/8", step
    files = re.findall(r"\S+\.safetensors", main.inner_text())
    assert files, main.inner_text()
    assert all(name.endswith(".safetensors") for name in files)
    assert any(name.endswith("my_lora.safetensors") for name in files), files
    assert main.get_by_role("button", name="Download").count() >= 1
    assert main.get_by_text(re.compile(r"Samples at step 8")).count() == 1
    shot(page, "07-monitor-finished")

    # ---- MLflow holds exactly this one finished run with its loss curve
    uri = f"sqlite:///{studio_server.home / 'mlflow.db'}"
    runs = list_runs(uri)
    assert [(r.run_id, r.status) for r in runs] == [(run_id, "FINISHED")]
    loss = metric_history(uri, run_id, ["loss"])["loss"]
    assert [point[0] for point in loss] == list(range(1, 9)), loss  # log every step: 1..8
    assert all(value > 0 for _, value, _ in loss)

    # ---- the run is on the compare page too
    open_page(page, "Compare")
    expect(main.get_by_text("my_lora").first).to_be_attached()  # a cell of the runs table
    assert not page.locator('[data-testid="stException"]').count()
    shot(page, "08-compare-one-run")


def monitor_step(page) -> tuple[int, int]:
    """(step, total) from the monitor's Step metric; (0, 0) before the first step."""
    metric = main_area(page).locator('[data-testid="stMetric"]', has_text="Step").first
    if not metric.count():
        return 0, 0
    found = re.search(r"(\d+)\s*/\s*(\d+)", metric.inner_text())
    return (int(found.group(1)), int(found.group(2))) if found else (0, 0)


def test_a_stopped_run_resumes_from_its_checkpoint(studio_page, studio_server: Studio) -> None:
    from trainer.tracking.records import list_runs, metric_history

    page, main = studio_page, main_area(studio_page)
    preflight(page)
    # A longer run, set up on the review page's editable summary.
    open_page(page, "Review & launch")
    main.get_by_text(re.compile(r"^Training core — ")).click()
    set_number(page, "Training steps", STOP_RUN_STEPS)
    main.get_by_text(re.compile(r"^Sampling — ")).click()
    set_number(page, "Sample every", 0)
    main.get_by_text(re.compile(r"^Save & logging — ")).click()
    set_number(page, "Save every", 50)
    wait_idle(page)
    assert not main.get_by_text(re.compile(r"Launch is locked")).count()
    main.get_by_role("button", name="Launch training").click()
    page.wait_for_url(re.compile(r"/monitor"), timeout=scaled_ms(90_000))
    wait_idle(page, timeout_ms=scaled_ms(90_000))
    uri = f"sqlite:///{studio_server.home / 'mlflow.db'}"
    (run,) = list_runs(uri)

    def training() -> bool:
        step, total = monitor_step(page)
        return total == STOP_RUN_STEPS and step >= 3

    wait_for(training, scaled(TRAIN_TIMEOUT_S), "training to reach step 3", page, studio_server)
    main.get_by_role("button", name=re.compile("Stop$")).click()
    wait_idle(page)
    shot(page, "08-monitor-stopping")

    statuses: list[str] = []

    def stopped() -> bool:
        statuses.append(header_status(page))
        return (
            "stopped" in statuses[-1]
            and main.get_by_role("button", name=re.compile("Resume$")).count() > 0
        )

    try:
        wait_for(stopped, scaled(TRAIN_TIMEOUT_S), "the run to stop", page, studio_server)
    except AssertionError as err:
        raise AssertionError(
            f"{err}\ntrainer log:\n{trainer_log(studio_server, run.run_id)}"
        ) from None
    wait_idle(page)
    assert not [s for s in statuses if "resuming" in s], statuses  # nothing was resumed yet
    stopped_at, total = monitor_step(page)
    assert 3 <= stopped_at < total == STOP_RUN_STEPS, (stopped_at, total)
    checkpoints = main.get_by_text(re.compile(r"^Checkpoints: .*Resume continues from the newest"))
    assert checkpoints.count() == 1
    assert [r.status for r in list_runs(uri)] == ["KILLED"]
    picker = main.get_by_role("combobox", name="Run").input_value()
    assert "stopped" in picker and run.run_id[:8] in picker, picker  # the label follows the status
    shot(page, "09-monitor-stopped")

    resume = main.get_by_role("button", name=re.compile("Resume$"))
    expect(resume).to_be_enabled()
    resume.click()
    wait_idle(page)
    picker = main.get_by_role("combobox", name="Run")
    wait_for(  # the label follows the status after Resume too (it kept 'stopped' while training)
        lambda: " · stopped · " not in picker.input_value(),
        scaled(15),
        "the run picker to stop saying 'stopped'",
        page,
    )
    first_seen: list[int] = []

    def continued() -> bool:
        step, _ = monitor_step(page)
        if "running" in header_status(page) and step:
            first_seen.append(step)
        return (
            "finished" in header_status(page)
            and not main.get_by_role("button", name=re.compile("Stop$")).count()
        )

    try:
        wait_for(
            continued, scaled(TRAIN_TIMEOUT_S), "the resumed run to finish", page, studio_server
        )
    except AssertionError as err:
        raise AssertionError(
            f"{err}\ntrainer log:\n{trainer_log(studio_server, run.run_id)}"
        ) from None
    wait_idle(page)
    shot(page, "10-monitor-resumed-finished")
    # A fast machine may finish the remaining steps between two monitor refreshes, so the
    # running steps may go unseen; any that were seen continue after the stop.
    assert all(step >= stopped_at for step in first_seen), (stopped_at, first_seen)
    assert monitor_step(page) == (STOP_RUN_STEPS, STOP_RUN_STEPS)
    assert [r.status for r in list_runs(uri)] == ["FINISHED"]
    picker = main.get_by_role("combobox", name="Run").input_value()
    assert "finished" in picker, picker
    # One MLflow run, one loss curve: the resumed part continues after the checkpoint's step,
    # it does not start again at step 1.
    steps = [point[0] for point in metric_history(uri, run.run_id, ["loss"])["loss"]]
    assert len(steps) == len(set(steps)) and steps[-1] == STOP_RUN_STEPS, steps
    log = (studio_server.home / "jobs" / run.run_id / "train.log").read_text(errors="replace")
    assert f"Stopped by SIGTERM at step {stopped_at};" in log, log[-2000:]
    assert (
        log.index("Stopped by SIGTERM")
        < log.index("resuming run")
        < log.index(f"Finished {STOP_RUN_STEPS} steps")
    )


def test_a_fresh_server_opened_at_a_page_url_runs_the_router(
    chromium_browser, studio_server: Studio
) -> None:
    """The first visit of a new server goes straight to /wizard (a bookmark): Streamlit's old
    pages-directory mode would run pages/wizard.py alone (see ui/navigation.py)."""
    page = new_page(chromium_browser, f"{studio_server.url}/wizard")
    try:
        main_area(page).get_by_role("heading", name="Wizard", level=1).wait_for()
        nav = page.locator('[data-testid="stSidebarNav"]')
        assert nav.get_by_role("link", name="Review & launch").count() == 1  # the router's titles
        assert page.locator(".st-key-hardware_summary").count() == 1  # the router's sidebar
        assert page.locator(".st-key-summary_header").count() == 1  # the page itself, once
        assert page.url.endswith("/wizard")
    finally:
        page.context.close()


# ----------------------------------------------------------------------------------- accessibility
CONTROLS = (
    "button|link|textbox|searchbox|spinbutton|combobox|listbox|checkbox|switch|radio|radiogroup|"
    "slider|tab|menuitem|option"
)
CONTROL_LINE = re.compile(rf'^\s*- ({CONTROLS})\b(?:\s+"((?:[^"\\]|\\.)*)")?')
PAGES = (
    "Home",
    "Preflight",
    "Wizard",
    "Review & launch",
    "Monitor",
    "Compare",
    "Presets",
    "Datasets",
    "LoRA utilities",
)


def unnamed_controls(page) -> list[str]:
    """Controls without an accessible name, by the browser's accessibility tree (Playwright's
    ARIA snapshot computes names as screen readers do: label, aria-label, content...)."""
    bad = []
    for line in page.locator("body").aria_snapshot().splitlines():
        found = CONTROL_LINE.match(line)
        if found and not (found.group(2) or "").strip():
            bad.append(line.strip())
    return bad


def expand_all(page) -> None:
    """Open every collapsed expander in the main area, so the controls inside are checked too."""
    closed = main_area(page).locator('[data-testid="stExpander"] details:not([open]) > summary')
    for _ in range(80):
        if not closed.count():
            break
        closed.first.click()
        page.wait_for_timeout(30)
    wait_idle(page)


def accessibility_problems(page, where: str) -> list[str]:
    expand_all(page)
    problems = [f"{where}: unnamed {line}" for line in unnamed_controls(page)]
    missing_alt = page.locator("img:not([alt])").count()
    if missing_alt:
        problems.append(f"{where}: {missing_alt} image(s) without alt text")
    broken = main_area(page).get_by_text(re.compile(r"could not show|Traceback"))
    problems += [f"{where}: {text}" for text in broken.all_inner_texts()]
    problems += [f"{where}: exception" for _ in page.locator('[data-testid="stException"]').all()]
    return problems


def focused(page) -> tuple[str, bool]:
    """What has the keyboard focus (tag, role, name), and whether it had it before."""
    return tuple(
        page.evaluate(
            """() => { const e = document.activeElement;
            window.__visited = window.__visited || new WeakSet();
            const again = !e || window.__visited.has(e);
            if (e) window.__visited.add(e);
            const label = e && e.labels && e.labels.length ? e.labels[0].innerText : '';
            const name = e ? (e.getAttribute('aria-label') || label || e.innerText || '') : '';
            return [e ? `${e.tagName} ${e.getAttribute('role') || ''} ${name}`.slice(0, 80) : '',
                    again]; }"""
        )
    )


def test_every_page_labels_its_controls_works_by_keyboard_and_says_status_in_words(
    studio_page, studio_server: Studio
) -> None:
    page, main = studio_page, main_area(studio_page)
    problems: list[str] = []
    for title in PAGES:
        open_page(page, title)
        problems += accessibility_problems(page, title)
        shot(page, f"a11y-{re.sub(r'[^a-z]+', '-', title.lower()).strip('-')}")
        if title == "Preflight":  # hardware checks: a word beside each icon, not a colour
            rows = main.locator("p", has_text=re.compile(r"\b(Not detected|Detected) · "))
            assert rows.count() == 4, rows.all_inner_texts()

    # The wizard with expert settings on: every field of all 12 steps is checked.
    open_page(page, "Wizard")
    expert = main.get_by_role("switch", name="Show expert settings")
    expert.focus()
    page.keyboard.press("Space")  # a switch works with the keyboard
    wait_idle(page)
    expect(expert).to_be_checked()
    for number in range(1, 13):
        heading = wizard_heading(page)
        problems += accessibility_problems(page, f"Wizard step {number} ({heading})")
        if number < 12:
            nxt = main.get_by_role("button", name=re.compile("→$"))
            nxt.focus()
            page.keyboard.press("Enter")  # buttons work with Enter
            wait_idle(page)
            assert wizard_heading(page) != heading, f"Enter on Next did not leave {heading}"
    assert not problems, "\n".join(problems)

    # Tab walks through the step's widgets in order, and reaches the Next button.
    choose(page, "Wizard step", re.compile(r"^1 · Model"))
    main.get_by_role("heading", name="Wizard", level=1).click()  # the start of the Tab order
    nxt = main.get_by_role("button", name=re.compile("→$"))
    visited: list[str] = []
    for _ in range(120):
        page.keyboard.press("Tab")
        stop, again = focused(page)
        assert not again, f"Tab came back to {stop!r} before the Next button: {visited}"
        visited.append(stop)
        if nxt.evaluate("e => e === document.activeElement"):
            break
    else:
        raise AssertionError(f"Tab never reached the Next button; visited: {visited}")
    joined = "\n".join(visited)
    for expected in ("INPUT combobox Wizard step", "INPUT  Base model", "Demo model (tiny, CPU)"):
        assert expected in joined, (expected, visited)
    page.keyboard.press("Space")  # Space activates the focused button too
    wait_idle(page)
    assert wizard_heading(page) == "Quantization"

    # A problem is said in words (not only a red border): unreadable input is explained.
    choose(page, "Wizard step", re.compile(r"^5 · Resolution"))
    resolution = main.get_by_role("textbox", name="Resolution")
    resolution.fill("big")
    resolution.press("Enter")
    wait_idle(page)
    assert main.get_by_text(re.compile(r"Not accepted:.*'big' is not a whole number")).count()
    shot(page, "a11y-wizard-error-in-words")
    resolution.fill("512")
    resolution.press("Enter")
    wait_idle(page)
    assert not main.get_by_text("Not accepted:").count()
