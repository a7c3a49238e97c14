"""A newcomer's walk through Preflight on a CPU-only machine: unanswered questions are assumed
out loud (never shown as the person's answers), the "why" names the main choices in plain words
with every recommendation behind an expander, and small sizes never read "0 GB"."""

from __future__ import annotations

from pathlib import Path

import pytest
from ui_support import draft, new_app, open_page, texts

from ui.preflight import assumed_answers, size_text
from ui.preflight_why import KEY_PATHS, field_label, key_lines, step_of
from ui.state import DEFAULT_META


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("STUDIO_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path / "home"


def main_markdown(at) -> list[str]:
    """The markdown drawn outside every expander."""
    inside = {id(m) for exp in at.expander for m in exp.markdown}
    return [m.value for m in at.markdown if id(m) not in inside]


def why_expander(at):
    found = [e for e in at.expander if e.label.startswith("All ")]
    assert len(found) == 1, [e.label for e in at.expander]
    return found[0]


# --------------------------------------------------------------------------- 1: honest answers
def test_nothing_is_preselected_and_the_page_says_what_it_assumes() -> None:
    at = open_page("pages/preflight.py")
    assert at.radio(key="pf:what").value is None
    assert at.radio(key="pf:priority").value is None
    shown = texts(at)
    assert "Assuming **Other: something else** until you pick one." in shown
    assert "Assuming **Quality: longer training, more regularisation** until you pick" in shown


def test_confirming_unanswered_questions_stores_valid_values_marked_as_assumed() -> None:
    at = open_page("pages/preflight.py")
    at.button(key="pf:confirm").click().run()
    assert not at.exception
    meta = at.session_state["draft_meta"]
    # downstream readers (Home's demo button, the context, the wizard) get valid values
    assert meta["intent"]["what"] == "other" and meta["intent"]["priority"] == "quality"
    assert meta["intent"]["assumed"] == ["what", "priority"]
    assert draft(at)["intent"] == "other"
    shown = texts(at)
    assert "recommendations for other (assumed) on sd15, with priority quality (assumed)" in shown
    assert "You did not pick what you are training (assumed: other)" in shown
    reason = meta["recommendations"]["intent"]["reason"]
    assert "assumed" in reason and "what you said" not in reason


def test_picked_answers_are_reported_as_the_persons_and_come_back_next_session() -> None:
    at = open_page("pages/preflight.py")
    at.radio(key="pf:what").set_value("style").run()
    at.radio(key="pf:priority").set_value("speed").run()
    assert "Assuming" not in texts(at)
    at.button(key="pf:confirm").click().run()
    meta = at.session_state["draft_meta"]
    assert meta["intent"]["assumed"] == []
    assert meta["recommendations"]["intent"]["reason"] == "what you said you are training"
    shown = texts(at)
    assert "recommendations for style on sd15, with priority speed." in shown
    assert "(assumed)" not in shown
    fresh = new_app()
    fresh.run()
    fresh.switch_page("pages/preflight.py").run()
    assert fresh.radio(key="pf:what").value == "style"
    assert fresh.radio(key="pf:priority").value == "speed"


def test_an_assumed_priority_stays_unpicked_in_a_new_session() -> None:
    at = open_page("pages/preflight.py")
    at.radio(key="pf:what").set_value("person").run()
    at.button(key="pf:confirm").click().run()
    assert at.session_state["draft_meta"]["intent"]["assumed"] == ["priority"]
    fresh = new_app()
    fresh.run()
    fresh.switch_page("pages/preflight.py").run()
    assert fresh.radio(key="pf:what").value == "person"
    assert fresh.radio(key="pf:priority").value is None
    assert "Assuming **Quality" in texts(fresh)


def test_homes_demo_button_confirms_the_unanswered_questions_as_assumed() -> None:
    at = open_page("pages/home.py")
    at.button(key="home:demo").click().run()
    assert not at.exception, [e.value for e in at.exception]
    meta = at.session_state["draft_meta"]
    assert meta["intent"]["what"] == "other" and meta["intent"]["assumed"] == ["what", "priority"]
    assert "assumed" in meta["recommendations"]["intent"]["reason"]


def test_assumed_answers_before_and_after_confirming() -> None:
    fresh = {**DEFAULT_META, "intent": dict(DEFAULT_META["intent"])}
    assert assumed_answers(fresh) == ["what", "priority"]  # Home's demo button confirms these
    confirmed_before = {**fresh, "preflight_done": True}  # saved before answers were marked
    assert assumed_answers(confirmed_before) == []
    marked = {**confirmed_before, "intent": {**fresh["intent"], "assumed": ["priority"]}}
    assert assumed_answers(marked) == ["priority"]


# ------------------------------------------------------------------------------- 2: the "why"
def test_the_why_shows_the_main_choices_in_words_and_the_rest_behind_an_expander() -> None:
    at = open_page("pages/preflight.py")
    at.button(key="pf:confirm").click().run()
    recs = at.session_state["draft_meta"]["recommendations"]
    assert len(recs) > 20
    main = "\n".join(main_markdown(at))
    assert "**The main choices, and why**" in main
    assert "**Learning rate**:" in main and "**Images per step**:" in main
    bullets = [line for line in main.splitlines() if line.startswith("- ")]
    assert 0 < len(bullets) <= len(KEY_PATHS)
    assert "`train.lr`" not in main and "runtime.num_workers" not in main
    everything = why_expander(at)
    assert everything.label == f"All {len(recs)} recommended values, and why"
    listed = "\n".join(m.value for m in everything.markdown)
    for path in recs:
        assert f"(`{path}`)" in listed, path
    assert "**Optimizer & learning rate**" in listed  # grouped by wizard step


def test_field_labels_come_from_the_field_descriptions() -> None:
    assert field_label("train.lr") == "Learning rate"
    assert field_label("train.batch_size") == "Images per step"
    assert field_label("datasets.3.resolution") == "Training resolution(s) in pixels"
    # a description that opens with a long sentence: the path's readable name instead
    assert field_label("datasets.0.cache_latents_to_disk") == "Cache latents to disk"
    assert field_label("not_a.field") == "Field"
    assert step_of("train.lr") == "Optimizer & learning rate"
    assert step_of("not_a.field") == "Other"


def test_key_lines_keep_their_order_and_take_the_first_dataset() -> None:
    recs = {
        "train.lr": {"value": 1e-4, "reason": "why lr"},
        "datasets.1.resolution": {"value": [768], "reason": "second"},
        "datasets.0.resolution": {"value": [512], "reason": "first"},
        "runtime.num_workers": {"value": 2, "reason": "not a main choice"},
    }
    lines = key_lines(recs)
    assert [ln.path for ln in lines] == ["datasets.0.resolution", "train.lr"]
    assert lines[0].value == "512" and lines[1].value == "1.0e-04"


# ------------------------------------------------------------------------------- 3: small sizes
@pytest.mark.parametrize(
    ("gb", "shown"),
    [
        (0.3, "307.2 MB"),
        (0.4, "409.6 MB"),
        (20 / 2**20, "20.0 KB"),
        (1.0, "1 GB"),
        (15.6, "16 GB"),
    ],
)
def test_sizes_under_a_gigabyte_are_shown_in_smaller_units(gb: float, shown: str) -> None:
    assert size_text(gb) == shown


# --------------------------------------------- the cache's size in words (seed_formulas patch)
def test_the_cache_reason_shows_a_tiny_cache_in_kb_not_as_zero_gb() -> None:
    from advisor.profile import synthetic_profile
    from advisor.seed_formulas import caching_defaults

    cpu = synthetic_profile(None, ram_gb=16)
    tiny = caching_defaults(cpu, 20 / 2**20)  # the demo dataset's latents: about 20 KB
    assert not tiny.to_disk and tiny.reason.startswith("cache fits in RAM (20.0 KB of the ")
    assert "0.0 GB" not in tiny.reason
    assert "(307.2 MB of the " in caching_defaults(cpu, 0.3).reason
    big = caching_defaults(cpu, 40.0)
    assert big.to_disk and big.reason.startswith("cache too large for RAM (40.0 GB)")
