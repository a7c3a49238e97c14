"""User-provided text is shown as text, never as markdown (issue 16, item 5), in AppTest.

A run named (and noted) ``![x](http://127.0.0.1:9/beacon.png) [link](http://evil) **bold**`` must
make no page draw an image, a link or bold text: every markdown-rendering field of every element
Monitor and Compare send to the browser is rendered here with a CommonMark renderer, plus GitHub's
literal autolinks (a URL left in the text is a link there), and must show the name literally.
``ui.text.plain`` and ``ui.text.code`` are checked the same way on hostile strings. The browser
side (a beacon server that must get no request): tests/test_e2e_security.py.
"""

from __future__ import annotations

import html
import re
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from markdown_it import MarkdownIt
from streamlit.testing.v1 import AppTest
from ui_support import all_nodes, open_page

from trainer.config.schema import TrainingConfig
from trainer.settings import load_settings
from trainer.tracking.mlflow_tracker import MlflowTracker
from trainer.tracking.new_run import create_run
from trainer.tracking.ratings import set_note
from ui.jobs import MONITOR_RUN_KEY
from ui.text import code, plain, plain_line

BEACON = "![x](http://127.0.0.1:9/beacon.png) [link](http://evil) **bold**"
COMMONMARK = MarkdownIt("commonmark")
# Fields Streamlit renders as markdown: bodies of markdown/caption/alerts/headings, labels and
# help of widgets, expanders, tabs and metrics, progress texts, image captions, radio options.
MARKDOWN_FIELDS = {"body", "label", "help", "text", "caption", "captions"}
PLAIN_ELEMENTS = {"code", "text", "json"}  # their "body" is shown as it is
_CODE = re.compile(r"<code>.*?</code>", re.DOTALL)
_TAGS = re.compile(r"<[^>]+>")
_GFM_AUTOLINK = re.compile(r"https?://|www\.|[-.\w+]@[-\w]+\.[-\w]", re.IGNORECASE)


# ------------------------------------------------------------------------------- the checks
def rendered(source: str) -> str:
    return COMMONMARK.render(source)


def shown_text(source: str) -> str:
    """What a reader sees of ``source`` rendered: the text without tags, entities decoded."""
    return html.unescape(_TAGS.sub("", rendered(source))).strip()


def markup_problems(source: str, *, page: bool = False) -> list[str]:
    """What ``source`` would draw besides text: images, links, emphasis, HTML, headings, lists,
    and URLs outside code spans (GitHub-flavoured markdown, which Streamlit uses, links them).
    ``page``: a page's own string around the text, whose bold and lists are the page's: only
    the beacon's emphasis ("bold") counts."""
    out = rendered(source)
    tags = ("<img", "<a ") if page else ("<img", "<a ", "<strong", "<em", "<h1", "<ul", "<ol")
    found = [tag for tag in tags if tag in out]
    found += ["emphasised beacon"] * bool(re.search(r"<(strong|em)>[^<]*\bbold\b", out))
    found += ["raw html"] * ("<script" in out or "<div" in out)
    outside_code = html.unescape(_TAGS.sub("", _CODE.sub("", out)))
    found += [f"autolink {m.group(0)!r}" for m in _GFM_AUTOLINK.finditer(outside_code)]
    if re.search(r"(?<!\\):[\w+-]+:", source) or ":material/" in source:
        found.append("a Streamlit shortcode")
    return found


@pytest.mark.parametrize(
    "text",
    [
        BEACON,
        string.punctuation,
        "# heading\n- item\n1. item\n> quote\n===\n<img src=x onerror=alert(1)>",
        "my_lora_2 (v1.5): step 0 / 30, lr 1e-4; it's 100% fine?",
        "_x_ __init__ *a* ~~s~~ $x^2$ | a | b |",
        "&lt;b&gt; &#58; a & b",
        ":smile: :red[red] :material/home: Error: boom at 12:30",
        "mail a@evil.tld, www.evil.tld, https://evil.tld/x.png",
        "ends in a backslash \\",
        "a `tick` and ``two``",
    ],
)
def test_plain_shows_hostile_text_literally_and_draws_nothing(text: str) -> None:
    for source in (plain(text), plain_line(text)):
        assert markup_problems(source) == [], source
    expected = " ".join(text.split())
    assert " ".join(shown_text(plain(text)).split()) == expected
    assert " ".join(shown_text(plain_line(text)).split()) == expected


def test_the_checks_catch_the_raw_beacon() -> None:
    """The checks below can fail: unescaped, the beacon is an image, a link and bold."""
    problems = markup_problems(BEACON)
    assert "<img" in problems and "<a " in problems and "<strong" in problems
    assert markup_problems("see https://evil.tld") == ["autolink 'https://'"]


@pytest.mark.parametrize("text", ["a`b", "`x`", "``", "a ``` b", " spaced ", BEACON, "/p/a th"])
def test_code_spans_hold_any_text(text: str) -> None:
    source = code(text)
    assert markup_problems(source) == []
    assert rendered(source).count("<code>") == 1
    assert html.unescape(_TAGS.sub("", rendered(source))).strip("\n") == text


def test_plain_keeps_readable_names_readable() -> None:
    """Only what means something is escaped: names and messages stay legible in the source."""
    assert plain("my_lora_2 (v1.5)") == "my_lora_2 (v1.5)"
    assert plain("Step 0 / 30 · saving: file 1 of 2") == "Step 0 / 30 · saving: file 1 of 2"
    assert plain("line one\nline two") == "line one  \nline two"
    assert plain_line("line one\nline two") == "line one line two"
    assert plain(None) == ""


# ----------------------------------------------------------------------- the pages, AppTest
def markdown_strings(at: AppTest) -> Iterator[tuple[str, str]]:
    """``(element type, text)`` for every markdown-rendering string the page sends."""
    for node in all_nodes(at):
        proto = getattr(node, "proto", None)
        kind = str(getattr(node, "type", ""))
        if proto is None or kind in PLAIN_ELEMENTS:
            continue
        if kind == "table":  # st.table reads its headers and cells as markdown too
            frame = node.value
            cells = [str(v) for v in frame.to_numpy().ravel() if isinstance(v, str)]
            yield from ((kind, text) for text in [*map(str, frame.columns), *cells])
            continue
        fields = MARKDOWN_FIELDS | ({"options"} if kind == "radio" else set())
        yield from ((kind, text) for text in _strings(proto, fields))


def _strings(message: Any, fields: set[str]) -> Iterator[str]:
    for field, value in message.ListFields():
        if field.type == field.TYPE_MESSAGE:
            for item in [value] if hasattr(value, "ListFields") else value:  # one, or repeated
                yield from _strings(item, fields)
        elif field.type == field.TYPE_STRING and field.name in fields:
            yield from [value] if isinstance(value, str) else value


def beacon_strings(at: AppTest) -> list[tuple[str, str]]:
    return [(kind, text) for kind, text in markdown_strings(at) if "beacon" in text]


def assert_all_safe(found: list[tuple[str, str]]) -> None:
    for kind, text in found:
        assert markup_problems(text, page=True) == [], (kind, text)
        assert BEACON in " ".join(shown_text(text).split()), (kind, text)


@pytest.fixture()
def beacon_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A failed and a finished run named and noted BEACON, and a finished run named plainly
    (the latest two finished runs are what Compare picks on a first visit)."""
    home = tmp_path / "home"
    monkeypatch.setenv("STUDIO_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    home.mkdir(parents=True)
    settings = load_settings(home=home, tracking_uri_override=None)
    runs = {}
    for key, name, status in (
        ("failed", BEACON, "FAILED"),
        ("plain", "plain_run", "FINISHED"),
        ("beacon", BEACON, "FINISHED"),
    ):
        cfg = TrainingConfig.model_validate(
            {
                "train": {"lr": 1e-4 if key == "plain" else 3e-4, "steps": 2},
                "logging": {"log_system_metrics": False, "run_name": name},
            }
        )
        run_id = create_run(settings, cfg)
        tracker = MlflowTracker(settings.tracking_uri, background=False)
        tracker.start(cfg, run_id=run_id)
        tracker.log_metrics({"loss": 0.5, "lr": 1e-4}, 0)
        tracker.end(status)
        if name == BEACON:
            set_note(settings.tracking_uri, run_id, BEACON)
        runs[key] = run_id
    return runs


def test_monitor_shows_a_hostile_run_name_and_failure_note_as_text(
    beacon_runs: dict[str, str],
) -> None:
    at = open_page("pages/home.py")
    at.session_state[MONITOR_RUN_KEY] = beacon_runs["failed"]
    at.switch_page("pages/monitor.py").run()
    assert not at.exception, [e.value for e in at.exception]
    found = beacon_strings(at)
    kinds = {kind for kind, _ in found}
    assert {"subheader", "error"} <= kinds, found  # the run's name, and its failure note
    assert_all_safe(found)


def test_compare_shows_hostile_run_names_as_text(beacon_runs: dict[str, str]) -> None:
    at = open_page("pages/compare.py")
    assert at.multiselect(key="cmp:picked").value == [beacon_runs["plain"], beacon_runs["beacon"]]
    found = beacon_strings(at)
    # the diff's heading, its table (a column header, the run name's row), the adapters'
    # heading, the tab's label
    assert len(found) >= 5, found
    assert {"tab", "table", "markdown"} <= {kind for kind, _ in found}, found
    assert_all_safe(found)
    notes = [t.value for t in at.text_area if t.value == BEACON]
    assert notes, "the note is edited as it is, in a text area (plain text)"
