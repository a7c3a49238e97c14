"""The presets page cites only what the repository holds: every source a preset names is a section
of docs/sources.md, linked, and shown on the page; the reasons sit in an expander, not a wall."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from test_docs_sources import OUTSIDE, heading_anchors  # the citation checker's own rules

from ui.presets import SOURCES_DOC, comment_parts, link_citations, source_sections

ROOT = Path(__file__).resolve().parent.parent
BUILT_IN = sorted(p.stem for p in (ROOT / "presets").glob("*.yaml"))
LINK = re.compile(r"\]\(#([A-Za-z0-9_-]+)\)")


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("STUDIO_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path / "home"


def test_sections_use_the_anchors_the_citation_checker_uses() -> None:
    text = SOURCES_DOC.read_text(encoding="utf-8")
    sections = source_sections()
    assert set(sections) == heading_anchors(text)
    prior = sections["flux-prior"]
    assert prior.title == "Flux prior" and "ai-toolkit" in prior.body and "###" not in prior.body
    assert "Used by:" in prior.body and "Used by:" not in prior.for_readers  # developers' notes
    assert prior.for_readers.startswith(prior.body[:40])
    repeated = source_sections("## A\none\n## A\ntwo\n```\n# not a heading\n```\n")
    assert {k: v.body for k, v in repeated.items()} == {
        "a": "one",
        "a-1": "two\n```\n# not a heading\n```",
    }


def test_comment_parts_and_links() -> None:
    parts = comment_parts(
        "# Preset 'x': what it is\n# for.\n# Sources: docs/sources.md. Why:\n"
        "# - rank 4: small (docs/sources.md#step-arithmetic,\n#   docs/sources.md#warmup).\n"
        "# - lr 1e-3: fast.\n# Change the folder before training.\nname: x\n# not a comment\n"
    )
    assert parts.intro == "Preset 'x': what it is for."
    assert parts.sources == "Sources: docs/sources.md. Why:"
    assert parts.reasons == [
        "rank 4: small (docs/sources.md#step-arithmetic, docs/sources.md#warmup).",
        "lr 1e-3: fast.",
    ]
    assert parts.notes == "Change the folder before training."
    linked, cited = link_citations(parts.reasons[0] + " docs/sources.md#warmup", source_sections())
    assert (
        linked
        == "rank 4: small ([Step arithmetic](#step-arithmetic), [Warmup](#warmup)). [Warmup](#warmup)"
    )
    assert cited == ["step-arithmetic", "warmup"]


def test_every_built_in_preset_links_its_sources_and_shows_them(home: Path) -> None:
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=60)
    at.switch_page("pages/presets.py").run()
    cited_somewhere = set()
    for name in BUILT_IN:
        at.selectbox(key="pre:choice").set_value(f"{name} (built-in)").run()
        assert not at.exception, [e.value for e in at.exception]
        shown = [m.value for m in at.markdown] + [c.value for c in at.caption]
        text = "\n".join(shown)
        assert f'Preset "{name}"' in at.markdown[0].value  # what it is for, first and short
        assert len(at.markdown[0].value) < 600, name
        assert not re.search(r"docs/sources\.md#", text), name  # every citation became a link
        assert not any(outside in text for outside in OUTSIDE), name
        assert not re.search(r"\b(trainer|advisor|ui)/\w+\.py\b", text), name  # no code as source
        why = [e for e in at.expander if e.label.startswith("Why these values")]
        assert len(why) == 1, name
        anchors = [h.proto.anchor for h in why[0].subheader]
        links = LINK.findall(why[0].markdown[0].value)
        assert links and set(links) == set(anchors), name  # each link has its section below
        reasons = why[0].markdown[0].value.count("\n- ")
        assert why[0].label == f"Why these values ({reasons} reasons, {len(anchors)} sources)"
        cited_somewhere.update(anchors)
    assert {"flux-prior", "sd15-prior", "tiny-cpu-step", "step-arithmetic"} <= cited_somewhere
