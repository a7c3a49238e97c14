"""The newcomer's eighth walk: the header's status names the steps that hold its warnings and
opens them; a finding shows once per step, by the settings' labels; the busy-CPU warning does not
tell the person to close their browser; the Review table shows reasons without markdown escapes
and long values whole; the cache reason says what its GB are."""

from __future__ import annotations

from pathlib import Path

import pytest
from ui_support import go_to_step, open_page, texts, widget

from advisor.cpu_load import busy_cpu_caveat, is_browser
from advisor.profile import synthetic_profile
from advisor.seed_formulas import caching_defaults
from ui import advice
from ui.advice import Finding
from ui.context import StudioContext
from ui.summary import status_text
from ui.text import plain, unplain

BUSY_CPU = synthetic_profile(None, ram_gb=16.0, cores=2, disk="ssd", load=11.0)


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("STUDIO_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path / "home"


def context_of(*found: Finding) -> StudioContext:
    return StudioContext(
        hw=None,  # type: ignore[arg-type]  # the status reads the findings only
        validated=None,  # type: ignore[arg-type]
        findings=list(found),
        prediction=None,
        recommendations={},
        experience="beginner",
    )


# ------------------------------------------------------------------------ 1. the status names steps
def test_the_status_names_the_steps_that_hold_the_warning() -> None:
    busy = Finding("warning", "the CPU is busy", ["runtime.device", "train.steps"], rule="cpu_busy")
    value, note = status_text(context_of(busy))
    assert value == ":material/warning: 1 warning"
    assert note == "on steps 9 · Training core and 12 · Model-specific"
    assert "Review" not in note and "advisor column" not in note


def test_errors_and_warnings_on_several_steps_are_all_named_in_wizard_order() -> None:
    found = [
        Finding("warning", "w", ["train.steps"]),
        Finding("error", "e", ["runtime.persistent_workers"]),
        Finding("suggestion", "s", ["sample.prompts"]),  # optional: names no step
        Finding("error", "e2", ["train.optimizer"]),
    ]
    value, note = status_text(context_of(*found))
    assert value == ":material/error: 2 errors · :material/warning: 1 warning"
    assert (
        note == "on steps 6 · Memory & batch, 7 · Optimizer & learning rate and 9 · Training core"
    )


def test_a_warning_on_no_step_is_said_to_be_in_reviews_list() -> None:
    _, note = status_text(context_of(Finding("warning", "w", ["nowhere.at_all"])))
    assert note == "in Review's Validation list"


def test_the_header_opens_the_step_of_its_error_from_the_wizard_and_from_review() -> None:
    at = open_page("pages/wizard.py")
    go_to_step(at, "memory")
    widget(at, "cfg:runtime.persistent_workers").set_value(True).run()  # needs workers > 0
    go_to_step(at, "model")
    assert "on step 6 · Memory & batch" in texts(at)
    at.button(key="summary:open:memory").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.selectbox(key="wiz:step").value == "memory"
    go_to_step(at, "model")
    at.switch_page("pages/review.py").run()
    assert "see the advisor column or Review" not in texts(at)
    at.button(key="summary:open:memory").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.selectbox(key="wiz:step").value == "memory"  # the wizard, at that step


# --------------------------------------------------- 2. once per step, by the settings' labels
def test_the_busy_cpu_warning_shows_once_on_its_step_with_labels(monkeypatch) -> None:
    monkeypatch.setattr(advice, "detect_profile", lambda home=None: BUSY_CPU)
    at = open_page("pages/wizard.py")
    go_to_step(at, "advanced")  # the device's step: the machine's state is no setting's fault
    busy = "the cpu is busy (load 5.5 per core"
    said = [m.value for m in at.markdown if busy in m.value.lower() and "Warning" in m.value]
    assert len(said) == 1, said  # under Warnings
    assert "Setting: Device" in said[0] and "Training steps" not in said[0]
    assert "runtime.device" not in said[0]
    assert busy not in _predictions(at).lower()  # not again under Predictions
    go_to_step(at, "resolution")  # no busy finding here: the caveat stays beside the times
    assert busy in _predictions(at).lower()


def _predictions(at) -> str:
    """The advisor column's predictions: memory, times and disk, one line each."""
    return next(m.value for m in at.markdown if "Total time" in m.value)


# --------------------------------------------------------------- 3. the browser is not to close
@pytest.mark.parametrize(
    "name",
    ["chromium (58%)", "chrome", "chromium-browse", "firefox.exe", "Safari", "msedge.exe",
     "Google Chrome Helper (Renderer)", "Isolated Web Co", "Web Content"],
)  # fmt: skip
def test_browsers_are_known(name: str) -> None:
    assert is_browser(name)


@pytest.mark.parametrize("name", ["python3 (95%)", "ffmpeg", "blender", "chronyd"])
def test_other_programs_are_not_browsers(name: str) -> None:
    assert not is_browser(name)


def test_the_busy_caveat_does_not_name_the_browser_to_close() -> None:
    caveat = busy_cpu_caveat(2.0, ("chromium (58%)", "python3 (30%)"), "cpu")
    assert "chromium" not in caveat and "busiest: python3 (30%)" in caveat
    only_browser = busy_cpu_caveat(2.0, ("chromium (58%)",), "cpu")
    assert "busiest" not in only_browser and only_browser.startswith("the CPU is busy (load 2.0")


def test_busy_processes_leaves_browsers_and_the_studio_out(monkeypatch) -> None:
    import os

    import advisor.cpu_load as cpu_load

    class Proc:
        def __init__(self, pid: int, name: str, percent: float) -> None:
            self.pid, self.info, self.percent = pid, {"name": name}, percent

        def cpu_percent(self, interval):
            return self.percent

    procs = [
        Proc(1, "chromium", 90.0),
        Proc(os.getpid(), "python3", 80.0),
        Proc(3, "ffmpeg", 70.0),
        Proc(4, "firefox", 60.0),
    ]
    monkeypatch.setattr(cpu_load.psutil, "process_iter", lambda attrs=None: iter(procs))
    monkeypatch.setattr(cpu_load, "BUSY_SAMPLE_S", 0.0)
    assert cpu_load.busy_processes() == ("ffmpeg (70%)",)


# ------------------------------------------------------------- 4. Review's table: no escapes
@pytest.mark.parametrize(
    "text",
    ["cache fits in RAM (6.0 KB < 7.1 GB free)", "a\\b `x` *y* [z](w) |t| ~s~ $m$",
     "# heading\n- item\n1. one", "see https://x.org/a_b or a@b.com", ":material/home: :red[x]",
     "`http://x`", "&lt; my_lora_2 (v1.5)", "two  \nlines"],
)  # fmt: skip
def test_unplain_gives_back_what_plain_was_given(text: str) -> None:
    assert unplain(plain(text)) == text


def test_the_comparison_shows_the_cache_reason_unescaped(monkeypatch) -> None:
    monkeypatch.setattr(advice, "detect_profile", lambda home=None: BUSY_CPU)
    at = open_page("pages/review.py")
    table = next(d.value for d in at.dataframe if "Reason" in d.value.columns)
    reasons = list(table["Reason"])
    assert not [r for r in reasons if "\\" in r], reasons
    assert any(r.startswith("cache fits in RAM (") for r in reasons)


def test_the_comparison_gives_its_columns_widths_and_puts_the_path_last() -> None:
    at = open_page("pages/review.py")
    [frame] = [d for d in at.dataframe if "Reason" in d.value.columns]
    config = frame.proto.columns
    assert '"Yours"' in config and '"width": 180' in config
    assert list(frame.proto.column_order) == [
        "Setting",
        "Yours",
        "Recommended",
        "Status",
        "Reason",
        "Path",
    ]


# ------------------------------------------------- the cache reason: not the free RAM, its share
def test_the_cache_reason_says_the_gb_are_what_a_cache_may_use() -> None:
    machine = synthetic_profile(None, ram_gb=24.0)
    reason = caching_defaults(machine, 6 / 2**20).reason
    allowed = (machine.ram_available_gb - 8.0) * 0.7
    assert reason == f"cache fits in RAM (6.0 KB of the {allowed:.1f} GB a cache may use)"
    assert "free" not in reason
